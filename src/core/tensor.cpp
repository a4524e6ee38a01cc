#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace qshard {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  for (int64_t d : shape) QS_ASSERT(d >= 0, "negative dimension in ", shape_str(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  size_t bytes = t.nbytes();
  size_t padded = (bytes + 63) / 64 * 64;
  if (padded == 0) padded = 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) fail("out of host memory allocating ", padded, " bytes for a ", shape_str(t.shape_), " tensor");
  std::memset(p, 0, padded);
  t.data_ = p;
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner,
                    Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  t.device_ = device;
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  QS_ASSERT(shape_numel(shape) == numel(), "reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  QS_ASSERT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows ", begin, "..",
            end, " of ", shape_str(shape_));
  Tensor t = *this;
  const size_t row_bytes = shape_[0] ? nbytes() / size_t(shape_[0]) : 0;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + size_t(begin) * row_bytes;
  return t;
}

Tensor Tensor::to_f32() const {
  QS_ASSERT(device_ == Device::Host, "to_f32 on a device tensor");
  Tensor out = Tensor::zeros(DType::F32, shape_);
  convert_to_f32(dtype_, data_, out.data<float>(), size_t(numel()));
  return out;
}

}  // namespace qshard
