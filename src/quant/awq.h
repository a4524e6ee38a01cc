// The AWQ family's math on host tensors (algorithms.md §2–§5): activation-aware channel
// scales, scale folding, range (clip) searches and quantization with per-group clamp
// ranges, all scored with the Gram matrix H = Σ xxᵀ of the linear's input so that a
// search sees every calibration token. The per-layer orchestration (which linears share
// a scale, block-output losses, MPI reductions) is in pipeline/awq_layer.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/quantized.h"
#include "quant/scheme.h"

namespace qshard {

// How the export stores what a search produces, so that searches score exactly the
// weights an engine computes with.
struct ExportNumerics {
  DType scale_dtype = DType::F32;   // Int step sizes: F16 in GPTQ/AWQ containers, the model
                                    // dtype in compressed-tensors, F32 in HDF5
  DType weight_dtype = DType::F32;  // fake-quant: dequantized weights stored in the model dtype
  DType norm_dtype = DType::F32;    // folded RMSNorm weights: stored in the source dtype
};

// x as it reads back after a round trip through dtype (F32, F16, BF16).
float round_to_dtype(float x, DType dtype);

// AWQ scales s_j = max(x̄_j^α, 1e−4) / sqrt(max s · min s), non-finite entries set to 1
// (llm-awq auto_scale.py / AutoAWQ without duo scaling).
std::vector<float> awq_scales(const std::vector<double>& x_mean, double alpha);

// SmoothQuant s_j = max(a_j^α / m_j^(1−α), 1e−5); a = max|X_j|, m = max over the balance
// linears of max|W_j| (clamped ≥ 1e−5).
std::vector<float> smoothquant_scales(const std::vector<double>& act_max,
                                      const std::vector<float>& weight_max, double alpha);

// Folding a scale into an RMSNorm weight γ stored in `dtype`: γ' = round(γ/s). Returns the
// effective scale γ/γ' per channel (s where γ' = 0), the one the balance linears must be
// multiplied by so that the network function is unchanged exactly.
std::vector<float> fold_into_norm(std::vector<float>& gamma, const std::vector<float>& s,
                                  DType dtype);

// In-place helpers on host F32 [out, in] weights.
void scale_columns(Tensor& w, const std::vector<float>& s);      // W[:, j] *= s_j
void unscale_columns(Tensor& w, const std::vector<float>& s);    // W[:, j] /= s_j
void unscale_last_rows(Tensor& w, const std::vector<float>& s);  // W[out−n+r, :] /= s_r
// diag(1/s) H diag(1/s): the Gram matrix of the inputs X/s.
Tensor scale_hessian(const Tensor& h, const std::vector<float>& s);
// Per input column: max_r |W_rj| (SmoothQuant's weight statistic).
std::vector<float> column_absmax(const Tensor& w);

// Per (row, group) clamp range the group's parameters are fitted on: the group's values
// are clamped to [lo, hi] before Scheme::fit (AWQ's apply_clip). Empty = observed range.
struct GroupRanges {
  std::vector<float> lo, hi;  // [out · n_groups]
  bool empty() const { return lo.empty(); }
};

// Parameters of one group fitted on clamp(x, lo, hi), Int steps rounded to the export's
// scale dtype. `tmp` holds n floats.
GroupParams fit_ranged(const Scheme& scheme, const float* x, int64_t n, float lo, float hi,
                       float tensor_scale, const ExportNumerics& numerics, float* tmp);

// δ = x − (the value an engine computes with) for one group whose parameters are fitted
// on clamp(x, lo, hi); returns those parameters. tmp and delta hold n floats.
GroupParams group_residual(const Scheme& scheme, const float* x, int64_t n, float lo, float hi,
                           float tensor_scale, const ExportNumerics& numerics, float* tmp,
                           float* delta);

// The grid one group's codes can take, sorted by the value an engine computes with
// (codes that do not round-trip through quantize are left out; equal values merged):
// what rounding refinements move codes along.
struct GroupGrid {
  std::vector<float> vals;       // ascending
  std::vector<uint8_t> code_at;  // a code for each value
  std::vector<int> rank_of;      // [2^bits]: index into vals, −1 if not on the grid
  void build(const Scheme& scheme, const GroupParams& p, float tensor_scale, DType weight_dtype);
};
// Group parameters of (row, group) as stored in q (symmetric Int: the fixed zero point).
GroupParams group_params(const QuantizedLinear& q, int64_t row, int64_t group);

// Quantizes host F32 [out, in] with `ranges` (may be null: observed ranges).
QuantizedLinear quantize_ranged(const Tensor& w, const Scheme& scheme, const GroupRanges* ranges,
                                const ExportNumerics& numerics, const std::string& name);
// The weights an engine computes with: dequantized, rounded to numerics.weight_dtype.
Tensor dequantize_exported(const QuantizedLinear& q, const ExportNumerics& numerics);

// Ŵ = Q(W·diag(s))·diag(s)⁻¹ in original coordinates: the weight AWQ's scale search
// scores for one candidate scale (ranges: clamp ranges on the scaled weight, may be null).
Tensor awq_fake_quant(const Tensor& w, const std::vector<float>& s, const Scheme& scheme,
                      const GroupRanges* ranges, const ExportNumerics& numerics, const std::string& name);

// The grid point the search keeps: the first minimum (strict <, so ties keep the smaller
// α, as AutoAWQ's `if loss < best_error`).
int awq_best_grid_point(const std::vector<double>& loss);

// tr(ΔW H ΔWᵀ) with ΔW = w − w_hat (host F32 [out, in], H [in, in]); double accumulation.
double output_error(const Tensor& w, const Tensor& w_hat, const Tensor& h);

// AWQ auto-clip (algorithms.md §2.6): per (row, group), max value m·c with
// c = 1 − i/n_grid, i < max_shrink·n_grid, minimizing the group's output error over the
// calibration tokens δ H_gg δᵀ (the block-diagonal part of tr(ΔW H ΔWᵀ); AWQ samples 512
// tokens, this uses them all). Clamp ranges are symmetric [−m·c, m·c] as AWQ's are.
GroupRanges awq_clip_search(const Tensor& w, const Tensor& h, const Scheme& scheme,
                            const ExportNumerics& numerics, int n_grid = 20, float max_shrink = 0.5f);

}  // namespace qshard
