// Argument checks every Backend runs before an op, so that a wrong tensor is an error
// naming the op and the argument on every device alike. Internal to kernels/.
#pragma once

#include "core/error.h"
#include "core/tensor.h"

namespace qshard::backend_checks {

// A dense tensor of `dtype` and rank `ndim` on `device`, or an error naming the op.
inline void expect(const Tensor& t, Device device, DType dtype, int ndim, const char* op, const char* arg) {
  QS_ASSERT(t.defined() && t.device() == device, op, ": ", arg, " is not a ",
            device == Device::Host ? "cpu" : "cuda", "-backend tensor");
  QS_ASSERT(t.dtype() == dtype, op, ": ", arg, " is ", dtype_name(t.dtype()), ", expected ",
            dtype_name(dtype));
  QS_ASSERT(t.ndim() == ndim, op, ": ", arg, " ", shape_str(t.shape()), " should have rank ",
            ndim);
}

// Partial overlap would let a kernel read what it already overwrote.
inline bool overlaps(const Tensor& a, const Tensor& b) {
  const auto* a0 = static_cast<const char*>(a.raw());
  const auto* b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes() && a.nbytes() && b.nbytes();
}

}  // namespace qshard::backend_checks
