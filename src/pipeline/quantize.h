// The sequential calibration pipeline: layer by layer, linear group by linear group in
// true-sequential order (qkv → o → gate/up → down), each group's Hessian collected from
// the already-quantized earlier groups, and the quantized layer's outputs fed to the
// next layer. Calibration windows are split over ranks; Hessians are summed over ranks.
#pragma once

#include <optional>
#include <string>

#include "dist/communicator.h"
#include "export/exporter.h"
#include "model/decoder.h"
#include "pipeline/awq_layer.h"
#include "pipeline/calibration.h"
#include "pipeline/checkpoint.h"
#include "pipeline/recipe.h"
#include "pipeline/report.h"
#include "quant/gptq.h"

namespace qshard {

// MoE: how an expert is quantized that fewer than QuantizeOptions::expert_min_tokens
// calibration tokens (over all ranks) are routed to (docs/results.md, "Starved experts"):
// RTN (warned); GPTQ on a Hessian of every token of the layer run through that expert
// (llm-compressor's calibrate-all-experts); or GPTQ on its few routed tokens (damped; an
// expert no token reaches gets RTN).
enum class StarvedExperts { Rtn, AllTokens, Routed };
StarvedExperts parse_starved_experts(const std::string& name);  // rtn | all-tokens | routed
const char* starved_experts_name(StarvedExperts s);

struct QuantizeOptions {
  std::string method = "gptq";  // see parse_method (pipeline/awq_layer.h)
  GptqOptions gptq;
  ScalingOptions scaling;       // the AWQ family and SmoothQuant
  ExportNumerics numerics;      // how the export stores scales and weights (norm dtype: from the source)
  std::optional<bool> propagate_fp;  // AWQ family: next layer sees FP outputs (default per method)
  ClipSearch clip;  // RTN's clip search (GPTQ uses gptq.clip)
  bool true_sequential = true;
  // True-sequential by re-running the layer from its input for each group, as before
  // staged_layer.h: the same bytes, slower; kept for the side-by-side bench.
  bool sequential_rerun = false;
  // Attention outputs / down_proj inputs kept between stages up to this many bytes
  // (per rank; beyond it they are recomputed): 8 × 512 tokens of a 70B layer take 0.5 GB.
  uint64_t sequential_cache_bytes = uint64_t(4) << 30;
  bool quantize_lm_head = false;
  // MoE: experts under expert_min_tokens routed calibration tokens are "starved".
  int64_t expert_min_tokens = 16;
  StarvedExperts moe_starved = StarvedExperts::Rtn;
  int64_t batch_tokens = 2048;        // calibration tokens per forward
  int64_t lm_head_chunk_rows = 8192;  // lm_head rows quantized at a time
  // Resume state (checkpoint.h): finished segments are replayed, new ones committed.
  RunCheckpoint* checkpoint = nullptr;
};

// What can be refused from shapes and options alone: --quantize-lm-head on a tied
// lm_head; a quantized matrix (per `recipe`) whose in_features the group size does not
// divide (the message suggests sizes that divide every matrix of that format).
// quantize_model checks this first; the CLI checks it before creating any output.
void check_quantize_inputs(const ModelSpec& spec, const TensorSource& source, const Recipe& recipe,
                           const QuantizeOptions& options);

// `source` holds the original weights `lm` reads (dense tensors are exported from it as
// stored). `exporter` may be null on ranks that do not write.
QuantizeReport quantize_model(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib,
                              const Recipe& recipe, const QuantizeOptions& options,
                              Exporter* exporter, Communicator& comm);

// ‖ΔW X‖² / ‖W X‖² from H = Σ xxᵀ: tr(ΔW H ΔWᵀ) / tr(W H Wᵀ). Host F32 tensors.
double relative_output_error(const Tensor& w, const Tensor& w_hat, const Tensor& hessian_sum);

}  // namespace qshard
