// RoPE angle tables, computed the way transformers computes them (fp32 inv_freq, fp32
// position × inv_freq), so our logits track a PyTorch forward to float rounding.
#pragma once

#include <vector>

#include "core/tensor.h"
#include "model/model_spec.h"

namespace qshard {

// Inverse frequencies [head_dim / 2] after rope_scaling.
std::vector<float> rope_inv_freq(const ModelSpec& spec);

struct RopeTables {
  Tensor cos;  // host F32 [positions, head_dim / 2]
  Tensor sin;
};
RopeTables make_rope_tables(const ModelSpec& spec, int64_t positions);

}  // namespace qshard
