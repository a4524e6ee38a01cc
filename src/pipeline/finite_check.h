// Weights are checked for NaN and Inf as each layer is loaded for quantization: a damaged
// or diverged checkpoint otherwise surfaces hours later as a failed Cholesky or a NaN
// perplexity, far from its cause.
#pragma once

#include <string>

#include "core/tensor.h"

namespace qshard {

// InputError naming the tensor, NaN or Inf, and the first bad index ([row, column] for
// matrices). Host tensors of any float dtype; other dtypes pass.
void check_finite(const Tensor& t, const std::string& name);

// check_finite on every tensor of `source` whose name starts with `prefix`
// (e.g. "model.layers.3.").
void check_finite_prefix(const TensorSource& source, const std::string& prefix);

}  // namespace qshard
