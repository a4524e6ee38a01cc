// Argument checks every Backend runs before an op, so that a wrong tensor is an error
// naming the op and the argument on every device alike. Internal to kernels/.
#pragma once

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/backend.h"

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

// attention's q, k, v, out: F32 rank-2 on `device`, shapes that agree with `s`, out
// not overlapping an input.
inline void check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s,
                            const Tensor& out, Device device) {
  for (auto [t, arg] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}})
    expect(*t, device, DType::F32, 2, "attention", arg);
  QS_ASSERT(s.batch >= 0 && s.seqlen >= 0 && s.n_heads > 0 && s.n_kv_heads > 0 &&
                s.head_dim > 0 && s.n_heads % s.n_kv_heads == 0,
            "attention: bad shape batch ", s.batch, " seqlen ", s.seqlen, " n_heads ", s.n_heads,
            " n_kv_heads ", s.n_kv_heads, " head_dim ", s.head_dim);
  const Shape q_shape{s.batch * s.seqlen, s.n_heads * s.head_dim};
  const Shape kv_shape{s.batch * s.seqlen, s.n_kv_heads * s.head_dim};
  QS_ASSERT(q.shape() == q_shape && out.shape() == q_shape && k.shape() == kv_shape &&
                v.shape() == kv_shape,
            "attention: q ", shape_str(q.shape()), " k ", shape_str(k.shape()), " v ",
            shape_str(v.shape()), " out ", shape_str(out.shape()), " for q ", shape_str(q_shape),
            " and k/v ", shape_str(kv_shape));
  QS_ASSERT(!overlaps(out, q) && !overlaps(out, k) && !overlaps(out, v),
            "attention: out overlaps an input");
}

}  // namespace qshard::backend_checks
