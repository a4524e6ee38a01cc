// Mixture-of-experts routing: which tokens each expert of a layer sees, with what weight.
// As transformers' Mixtral / Qwen-MoE routers: softmax over the router logits in fp32,
// the top k probabilities per token (ties to the lower expert index), renormalized to sum
// to 1 when the family says so (Mixtral always, Qwen-MoE with norm_topk_prob).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace qshard {

struct Routing {
  std::vector<std::vector<int64_t>> rows;  // per expert: the tokens routed to it, ascending
  std::vector<std::vector<float>> weights;  // per expert: those tokens' routing weights
};

// logits: host F32 [tokens, experts].
Routing route_tokens(const Tensor& logits, int64_t top_k, bool renormalize);

// Host F32 [rows.size(), d]: the rows of x (host F32 [T, d]) at `rows`.
Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& rows);
// Host F32 [T, d], zero except row rows[i] = y[i]: an expert's rows at their token positions,
// so statistics that are summed per calibration window see the windows as they are.
Tensor scatter_rows(const Tensor& y, const std::vector<int64_t>& rows, int64_t T);

}  // namespace qshard
