// Round-to-nearest: every group fitted on its own weights, optionally with an MSE
// search over clip (shrink) factors as in GPTQ's quant.py (norm 2.4, grid 100).
#pragma once

#include "core/tensor.h"
#include "quant/quantized.h"
#include "quant/scheme.h"

namespace qshard {

struct ClipSearch {
  bool enabled = false;
  float max_shrink = 0.8f;  // try shrink factors 1, 1 − 1/grid, ..., 1 − max_shrink
  int grid = 100;
  float norm = 2.4f;        // error exponent
};

// weight: host F32 [out, in]. `name` is used in error messages.
QuantizedLinear rtn_quantize(const Tensor& weight, const Scheme& scheme, const ClipSearch& clip,
                             const std::string& name);

// The group parameters RTN would choose for one group (shared with GPTQ's per-group fit).
GroupParams fit_group(const Scheme& scheme, const float* x, int64_t n, int64_t stride,
                      float tensor_scale, const ClipSearch& clip);

}  // namespace qshard
