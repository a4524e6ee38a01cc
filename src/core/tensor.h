// A Tensor is a typed, shaped view of memory plus a handle that keeps that memory
// alive: heap storage, an mmap'd safetensors shard, or (later) a device buffer.
// Views share storage; copying a Tensor never copies data.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace qshard {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[4096, 11008]"
int64_t shape_numel(const Shape& s);

enum class Device : uint8_t { Host, Cuda };

class Tensor {
 public:
  Tensor() = default;

  // Fresh zero-filled host storage, 64-byte aligned.
  static Tensor zeros(DType dtype, Shape shape);
  // Non-owning view; `owner` keeps `data` alive (may be null for caller-managed memory).
  static Tensor view(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner,
                     Device device = Device::Host);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T>
  T* data() {
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the leading dimension, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // A host fp32 copy (any numeric dtype in).
  Tensor to_f32() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
  Device device_ = Device::Host;
};

// Read access to named weights, e.g. a checkpoint's tensors. io/ implements it over
// safetensors; model/ reads through it and so never depends on a file format.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // Throws InputError naming the tensor and where it was looked for if missing.
  virtual Tensor get(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;
  // `name`'s bytes will not be read again soon (they were copied): a mapped file drops
  // its pages from this process's resident set, and would read them again from the file.
  virtual void release(const std::string& /*name*/) const {}
};

}  // namespace qshard
