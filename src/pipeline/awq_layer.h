// The AWQ family per decoder layer (algorithms.md §2–§5): statistics of the unquantized
// layer over this rank's calibration windows (reduced over ranks), the scale search of
// each Llama scaling group, folding of the scales into the preceding norm or linear, the
// range fits, and — unless GPTQ follows — quantization. quantize.cpp dispatches here.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/decoder.h"
#include "pipeline/recipe.h"
#include "quant/awq.h"
#include "quant/awq_joint.h"
#include "quant/quantized.h"

namespace qshard {

enum class ScalingMethod { None, Awq, AwqJoint, AwqDh, SmoothQuant };

// --method NAME: gptq, rtn, awq, awq-joint, awq-dh, smoothquant, or a scaling method
// followed by GPTQ (awq+gptq, awq-joint+gptq, smoothquant+gptq). InputError otherwise,
// with one line saying why for reversed orders (gptq+awq).
struct MethodPlan {
  ScalingMethod scaling = ScalingMethod::None;
  bool gptq = false;  // GPTQ quantizes the (scaled) weights; else the method itself does
};
MethodPlan parse_method(const std::string& method);

struct ScalingOptions {
  int n_grid = 20;               // scale exponents α = i / n_grid, i < n_grid
  // Grid loss: false = MSE of the balance linears' outputs together (q,k,v; gate,up), from
  // H over all tokens; true = MSE of the whole block's output (attention after o_proj,
  // MLP after down_proj) as AutoAWQ's module2inspect, by forward passes.
  bool block_loss = false;
  bool clip = true;              // AWQ's clip search (awq, awq-dh)
  int clip_grid = 20;
  float clip_max_shrink = 0.5f;
  double smooth_alpha = 0.5;     // SmoothQuant's migration strength
  double max_flip_percent = 1.0; // awq-dh: flips per output row, % of in_features
  double knee_tolerance = 0.0;   // awq-dh: Kneedle knee shift, fraction of the half-curve
  JointOptions joint;
  // MoE: an expert under this many routed calibration tokens (over all ranks; at least 1)
  // keeps its up->down pair unscaled and is quantized by RTN (the pipeline's
  // --moe-min-tokens).
  double expert_min_tokens = 0;
  // Feed the next layer the unquantized layer's output (AutoAWQ) instead of the quantized
  // one. Set by the pipeline per method unless forced.
  bool propagate_fp = true;
};

struct LayerCalibration {
  int64_t windows = 0;  // this rank's
  int64_t seqlen = 0;
  int64_t per_batch = 1;
};

struct ScaledModule {
  QuantizedLinear q;     // in scaled coordinates (what is exported)
  double rel_error = 0;  // tr(ΔW H ΔWᵀ)/tr(W H Wᵀ) on the scaled layer's inputs
};

struct ScaledLayer {
  std::map<std::string, ScaledModule> quantized;                  // when !plan.gptq
  std::map<std::string, std::vector<GroupParams>> static_groups;  // awq-joint+gptq
  Tensor fp_output;  // the unquantized layer's output when options.propagate_fp
  std::map<int, double> routed;  // MoE: each expert's routed calibration tokens, all ranks
};

// Runs `plan.scaling` on layer `layer` whose input rows (this rank's windows) are h.
// w is updated in place: folded norms (rounded to numerics.norm_dtype) and scaled
// linears, still unquantized. Modules the recipe skips keep their weights (a scaling
// group touching one is left unscaled).
ScaledLayer scale_layer(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h,
                        const LayerCalibration& cal, const Recipe& recipe, const MethodPlan& plan,
                        const ScalingOptions& options, const ExportNumerics& numerics,
                        Communicator& comm);

}  // namespace qshard
