// "Dynamic Heuristic AWQ" rounding (algorithms.md §5, anhnda/FPRAG awq_dh_xl.py): a
// Kneedle knee on the sorted |mean| of the (scaled) input marks outlier channels; then
// per output row, codes are flipped to their other grid neighbour, cheapest first, to
// cancel the row's error on the mean input Σ_j (W − Ŵ)_rj μ_j, with at most a given
// share of the row's columns flipped and outlier channels never flipped.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/awq.h"

namespace qshard {

// Outlier mask (1 = outlier) from FPRAG's knee: sort |μ| descending, take the first half,
// normalise, knee = the point farthest below the chord, moved right by
// ⌊tolerance·len⌋; outliers are channels strictly above the value at the knee.
std::vector<uint8_t> kneedle_outliers(const std::vector<float>& mean_abs, double tolerance);

struct FlipStats {
  int64_t flips = 0;
  int64_t max_row_flips = 0;
};

// q: quantized W (host F32 [out, in] in the same coordinates as `mean`, the signed mean of
// the input). max_flip_percent: per row, at most ⌊max_flip_percent/100 · in⌋ flips.
FlipStats heuristic_flip(QuantizedLinear& q, const Tensor& w, const std::vector<float>& mean,
                         const std::vector<uint8_t>& outlier, double max_flip_percent,
                         const ExportNumerics& numerics);

}  // namespace qshard
