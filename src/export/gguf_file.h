// A GGUF v3 file (formats.md E.1, read against ggml's gguf.cpp and gguf-py): key/value
// metadata, then tensor infos, then the tensors' data, each aligned to 32 bytes. The
// metadata and tensor infos are built in memory; a tensor's bytes are either held in
// memory too or left in a file (GgufExtent, e.g. a GgufSpool's), so that writing a 40 GB
// model does not take 40 GB of memory. write() writes it all once, so a file under its
// final name is always whole. Internal to src/export.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qshard::exporting {

// ggml_type values (ggml.h) of the types qshard writes.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_NL = 20, IQ4_XS = 23, BF16 = 30,
};
const char* ggml_type_name(GgmlType t);
// Bytes of one row of `n` elements (n a multiple of the type's block size).
uint64_t ggml_row_bytes(GgmlType t, int64_t n);
// Bytes of a tensor: rows of shape.back() elements (dimensions checked by the caller).
uint64_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t>& shape);

// Where a tensor's bytes lie when they are not held in memory.
struct GgufExtent {
  std::string path;     // the file holding them (read when GgufFile::write runs)
  uint64_t offset = 0;  // where they start in it
  // Empty, or one entry per index of the first dimension: slice i of the written tensor
  // is stored slice order[i] (llama.cpp's q/k rope permutation, applied while copying).
  std::vector<int64_t> order;
};

// Bytes appended to a scratch file as they arrive, so a writer keeps only positions in
// memory. The file is created on the first append (truncating one a killed run left) and
// stays until remove(): another process may read it after close().
class GgufSpool {
 public:
  explicit GgufSpool(std::string path) : path_(std::move(path)) {}
  ~GgufSpool();  // closes; the file stays
  GgufSpool(const GgufSpool&) = delete;
  GgufSpool& operator=(const GgufSpool&) = delete;

  uint64_t append(const void* data, uint64_t bytes);  // the offset they start at
  void read(uint64_t offset, void* out, uint64_t bytes) const;
  void close();
  void remove();  // closes and unlinks it (one a killed run left too)
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Copies `bytes` bytes at `offset` of the open file `from` to the current position of
// `to`: copy_file_range (in the kernel; a reflink where the filesystem can), else, where
// the kernel or filesystem refuses it or `kernel_copy` is false (tests), pread/write in
// chunks of a few MiB. `from_path`/`to_path` name the files in errors.
void copy_file_bytes(int from, uint64_t offset, int to, uint64_t bytes, const std::string& from_path,
                     const std::string& to_path, bool kernel_copy = true);

class GgufFile {
 public:
  void set_string(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);

  // shape in PyTorch order ([out, in]); GGUF stores ne = reversed. `data` is the tensor's
  // bytes in the type's layout, rows of ggml_row_bytes(type, shape.back()).
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                  std::vector<uint8_t> data);
  // The same with the bytes left in a file (the same layout, in `from.order` if given):
  // the file written is byte for byte the one the in-memory tensor gives.
  void add_tensor_at(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                     GgufExtent from);
  // A tensor made of equal parts left in files, concatenated in order (llama.cpp's stacked
  // experts: one part per expert); each part's `order` permutes that part's own slices.
  void add_tensor_at(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                     std::vector<GgufExtent> parts);
  // Writes the whole file to `path` (via a temporary name, fsynced, renamed). kernel_copy:
  // see copy_file_bytes.
  void write(const std::string& path, bool kernel_copy = true) const;

 private:
  struct Info {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    uint64_t bytes = 0;
    std::vector<uint8_t> data;        // in memory, or
    std::vector<GgufExtent> parts;   // in files (equal parts, concatenated)
  };
  uint64_t check_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type) const;
  void write_data(int fd, const std::string& tmp, bool kernel_copy) const;
  std::string kv_;  // the encoded key/value pairs
  uint64_t n_kv_ = 0;
  std::vector<Info> tensors_;
};

}  // namespace qshard::exporting
