// Joint fit of per-group quantization ranges and rounding against the layer-output
// reconstruction objective ℓ = tr(ΔW H ΔWᵀ) (algorithms.md §4.3), for a weight already
// multiplied by its AWQ channel scale (W·diag(s), H of the input X/s). The per-layer
// driver (pipeline/awq_layer.cpp) chooses the scale exponent with these inner fits at
// every grid point; docs/awq-joint.md describes the method and its measurements.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "quant/awq.h"

namespace qshard {

struct JointOptions {
  // Range candidates: each end of a group's observed range [min, max] shrunk by
  // c = 1, 1 − step, …, ≥ min_shrink (MX/NVFP4/symmetric Int: one factor on max|w|).
  float range_step = 0.05f;
  float min_shrink = 0.5f;
  int range_sweeps = 2;     // J2: coordinate-descent sweeps over groups with the full H
  int rounding_sweeps = 4;  // coordinate descent over codes with the full H (0: RTN codes)
  // The fits use H + λ·mean(diag H)·I (GPTQ's dampening), λ = damp + damp_per_dim ·
  // in_features / tokens: with few calibration tokens H is rank-deficient and an exact
  // descent on it fits the calibration set's noise (docs/awq-joint.md measures both terms).
  float damp = 0.1f;
  float damp_per_dim = 0.5f;
};

// λ for a linear with `in_features` inputs fitted on `tokens` calibration tokens (all ranks).
float joint_damp(const JointOptions& options, int64_t in_features, double tokens);

// H + damp·mean(diag H)·I (a copy; h itself when damp is 0).
Tensor damped_hessian(const Tensor& h, float damp);

// J1: per (row, group) ranges minimizing the group's own error δ H_gg δᵀ (cross-group
// terms ignored) over symmetric shrink factors of the observed range.
GroupRanges joint_block_ranges(const Tensor& w, const Tensor& h, const Scheme& scheme,
                               const ExportNumerics& numerics, const JointOptions& options);

struct JointResult {
  QuantizedLinear q;
  GroupRanges ranges;
  double loss_start = 0;   // ℓ with the ranges passed in and nearest rounding
  double loss_ranges = 0;  // after range coordinate descent (J2)
  double loss_final = 0;   // after rounding coordinate descent
};

// J2 + rounding descent from `start` (null: observed ranges). Every step is an exact
// descent step on ℓ (monotone), so loss_final ≤ loss_ranges ≤ loss_start.
JointResult joint_refine(const Tensor& w, const Tensor& h, const Scheme& scheme,
                         const ExportNumerics& numerics, const GroupRanges* start,
                         const JointOptions& options, const std::string& name);

// Rounding coordinate descent alone on a quantized linear (its group parameters fixed):
// moves single codes to the neighbouring grid value while ℓ decreases. Returns ℓ after.
double refine_rounding(QuantizedLinear& q, const Tensor& w, const Tensor& h,
                       const ExportNumerics& numerics, int sweeps);

}  // namespace qshard
