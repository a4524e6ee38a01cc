// A thin RAII layer over the HDF5 C API: files, groups, n-d datasets of a few plain
// element types, and string/int/float attributes. Every HDF5 call is checked; a failure
// throws with the statement, file:line, the object it was about and HDF5's own error
// stack, and HDF5's automatic stderr printing is silenced around each call.
//
// Serial use of the (MPI-parallel) library: the default sec2 driver, no MPI needed.
// hdf5.h stays out of this header so users of qshard_io do not need its include paths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace qshard {

// Element types of datasets (stored little-endian in the file).
enum class H5Type : uint8_t { U8, U16, I32, I64, F32, F64 };
size_t h5_type_size(H5Type t);
const char* h5_type_name(H5Type t);  // "u8", "u16", ...

// One open HDF5 object id; closes it when the last copy goes away.
class H5Handle {
 public:
  H5Handle() = default;
  // Takes ownership of `id` (a hid_t), released with `close` (H5Fclose, H5Gclose, ...).
  H5Handle(int64_t id, int (*close)(int64_t));
  int64_t id() const { return h_ ? h_->id : -1; }
  bool valid() const { return h_ != nullptr; }
  void reset() { h_.reset(); }
  // Closes now and reports a failure (the destructor closes quietly).
  void close_checked(const std::string& what);

 private:
  struct Id {
    Id(int64_t i, int (*c)(int64_t)) : id(i), close(c) {}
    Id(const Id&) = delete;
    Id& operator=(const Id&) = delete;
    ~Id();
    int64_t id;
    int (*close)(int64_t);
  };
  std::shared_ptr<Id> h_;
};

// Parallel (MPI-IO) access to one file by every rank of a job, made by dist/hdf5_mpio.h:
// the file access list (H5Pset_fapl_mpio) and a collective transfer list. With it every
// structural call (create_group, write_dataset's create, set_attr, close) is collective:
// every rank makes it, in the same order, with the same arguments.
struct H5Parallel {
  H5Handle fapl;  // H5P_FILE_ACCESS with the MPI-IO driver
  H5Handle dxpl;  // H5P_DATASET_XFER, H5FD_MPIO_COLLECTIVE
};

struct H5DatasetInfo {
  H5Type type = H5Type::U8;
  Shape shape;  // {} for a scalar dataset
  int64_t numel() const { return shape_numel(shape); }
};

// A group (the file's root is one). Copies share the open group. Names of children are
// single path components ("model.layers.0.mlp.up_proj"); '/' in a name is refused.
class H5Group {
 public:
  H5Group() = default;
  const std::string& path() const { return path_; }  // "/", "/dense", ...
  const std::string& file() const { return file_; }

  H5Group create_group(const std::string& name);
  H5Group open_group(const std::string& name) const;
  bool has(const std::string& name) const;       // a link of that name exists
  bool is_group(const std::string& name) const;  // ... and it is a group
  std::vector<std::string> children() const;     // link names, in name order

  // shape {} writes a scalar. `data` holds numel · h5_type_size(type) bytes. In a
  // parallel file, one rank passes the data and the others nullptr (they still take
  // part in the collective create and write, selecting nothing).
  void write_dataset(const std::string& name, H5Type type, const Shape& shape, const void* data);
  H5DatasetInfo dataset_info(const std::string& name) const;
  // Reads the whole dataset converted to `type`; out_bytes must be numel · size(type).
  void read_dataset(const std::string& name, H5Type type, void* out, size_t out_bytes) const;

  // Attributes of this group (object ".") or of a child object (a dataset or group).
  void set_attr(const std::string& attr, const std::string& value, const std::string& object = ".");
  void set_attr(const std::string& attr, const char* value, const std::string& object = ".") {
    set_attr(attr, std::string(value), object);
  }
  void set_attr(const std::string& attr, int64_t value, const std::string& object = ".");
  void set_attr(const std::string& attr, double value, const std::string& object = ".");
  bool has_attr(const std::string& attr, const std::string& object = ".") const;
  std::string attr_string(const std::string& attr, const std::string& object = ".") const;
  int64_t attr_int(const std::string& attr, const std::string& object = ".") const;
  double attr_double(const std::string& attr, const std::string& object = ".") const;

 private:
  friend class H5File;
  H5Group(H5Handle h, std::string file, std::string path, std::shared_ptr<const H5Parallel> par)
      : h_(std::move(h)), file_(std::move(file)), path_(std::move(path)), par_(std::move(par)) {}
  std::string child_path(const std::string& name) const;
  std::string where(const std::string& object) const;  // "file.h5:/group/name"
  H5Handle h_;
  std::string file_, path_;
  std::shared_ptr<const H5Parallel> par_;
};

class H5File {
 public:
  H5File() = default;
  ~H5File();
  H5File(H5File&&) noexcept = default;
  H5File& operator=(H5File&&) noexcept = default;

  // Creates (truncating) a file for writing; with `parallel`, collectively by every rank.
  static H5File create(const std::string& path, std::shared_ptr<const H5Parallel> parallel = nullptr);
  // Opens an existing file read-only; InputError naming the file if it is not HDF5.
  static H5File open_read(const std::string& path);

  const std::string& path() const { return path_; }
  H5Group root() const;
  // Flushes and closes, checked (data may only reach the disk here). Every group
  // obtained from this file must have been released first.
  void close();

 private:
  H5Handle h_;
  std::string path_;
  std::shared_ptr<const H5Parallel> par_;
};

}  // namespace qshard
