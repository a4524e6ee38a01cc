// Mixed precision to a bits-per-weight budget (--target-bpw B, docs/mixed-precision.md).
// A first calibration pass over the unquantized model collects each decoder layer's
// Hessians H = Σ xxᵀ (inputs of q/k/v, o, gate/up, down) and, for every quantized Linear
// and every candidate format, the output error tr((W − Q)H(W − Q)ᵀ) of an RTN quantization
// to that format. Output errors of different modules do not hurt the model alike, so each
// module's are scaled by its gain: the model's KL divergence per unit of its output error,
// measured with only that module quantized on a few calibration windows. A multiple-choice
// knapsack (dynamic programming over the budget) then picks the formats with the least
// summed predicted KLD within the budget. The plan becomes exact
// per-module recipe rules, so the normal pipeline and every export see it as they see a
// --recipe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "dist/communicator.h"
#include "model/decoder.h"
#include "pipeline/calibration.h"
#include "pipeline/recipe.h"
#include "quant/format.h"

namespace qshard {

// --bpw-formats: "int3:g64,int4:g64,int4:g32,int8:g128" (NAME[:gGROUP][:sym|:asym], group
// g-1 per channel; no group: the family's default; no sym/asym: `symmetric`).
std::vector<QuantFormat> parse_bpw_formats(const std::string& list, bool symmetric);
// int3 g64, int4 g64, int4 g32, int8 g128; for GGUF (`ggml`): q3_k, q4_k, q5_k, q6_k, q8_0
// (rows a 256-block does not divide take llama.cpp's 32-block fallbacks).
std::vector<QuantFormat> default_bpw_formats(bool symmetric, bool ggml = false);

// Stored bits per weight of `f` on a matrix of `in_features` columns: the codes plus, per
// group, a 16-bit scale and (asymmetric INT only) a `bits`-bit zero point, as GPTQ packs
// qzeros; MX: an 8-bit E8M0 exponent per block; NVFP4: an E4M3 scale per 16; llama.cpp
// types: their block bytes (Q4_K 4.5, Q3_K 3.4375, ...).
double bits_per_weight(const QuantFormat& f, int64_t in_features);

struct PlannedModule {
  std::string module;  // "model.layers.3.mlp.down_proj"
  int64_t out = 0, in = 0;
  std::vector<double> bits;    // per candidate format
  // Per candidate: tr(ΔW H ΔWᵀ) of RTN on the calibration inputs, times the module's gain
  // when measured (measure_and_choose).
  std::vector<double> errors;
  int choice = 0;              // index into the candidates
  // Per candidate, the format this module is stored in where it is not the candidate
  // itself: llama.cpp's 32-block fallback for a K-quant whose 256-block does not divide
  // the row (Q4_K -> Q5_0, ...), with that format's bits. Empty: the candidates as listed.
  std::vector<QuantFormat> stored;
};

struct BpwPlan {
  double target = 0;
  std::vector<QuantFormat> formats;  // the candidates
  std::vector<PlannedModule> modules;
  bool kld_scaled = false;  // errors are predicted KLDs (gain-scaled), not output errors

  // Candidate j as module m stores it (its GGUF fallback, if any), and m's chosen one.
  const QuantFormat& format_of(const PlannedModule& m, size_t j) const;
  const QuantFormat& chosen(const PlannedModule& m) const { return format_of(m, size_t(m.choice)); }
  double bits() const;             // mean over every planned weight
  double min_bits() const;         // every module at its cheapest candidate
  double predicted_error() const;  // Σ chosen errors
  // The candidate holding the most weights (quantization_config's base format).
  const QuantFormat& main_format() const;
  // Exact rules, last, so that the plan decides each planned module's format; modules the
  // recipe leaves unquantized are not planned and stay so.
  void apply(Recipe& recipe) const;
  nlohmann::json to_json() const;
  void print_table(std::FILE* out) const;
};

// The Linears `recipe` quantizes, in pipeline order, with their shapes and candidates'
// bits (a K-quant on a row its 256-block does not divide counts as the 32-block type
// llama.cpp falls back to). InputError when a candidate's group does not divide a
// module's in_features, or when even the cheapest candidates exceed `target`.
BpwPlan plan_modules(const ModelSpec& spec, const Recipe& recipe, const std::vector<QuantFormat>& formats,
                     double target);

// Collective: fills every module's errors (the calibration pass above, windows split
// over ranks, Hessians summed as the pipeline sums them, modules' errors computed on one
// rank each and summed), then choose_formats. Same plan on every rank and rank count.
// gain_windows > 0: each module's errors are scaled by its gain, the model's KL
// divergence per unit of that module's output error, measured with only that module
// quantized (to the candidate nearest the budget) on the first gain_windows calibration
// windows; the errors are then predicted KLDs. 0: the output errors as they are.
void measure_and_choose(BpwPlan& plan, CausalLM& lm, const TensorSource& source, const CalibrationSet& calib,
                        int64_t batch_tokens, int64_t gain_windows, Communicator& comm);

// The knapsack: deterministic (ties go to the earlier format in the list).
void choose_formats(BpwPlan& plan);

}  // namespace qshard
