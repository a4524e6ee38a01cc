// The architecture table: per model family, the decoder layer's tensors — its norms, its
// Linears grouped by the input they share, in true-sequential order, with the input each
// group reads, their shapes and biases — and the extra ops of the forward. The forward's
// loading and shape checks, the pipeline's group loop, the bpw planner, resume and the
// exports' tensor names all read these rows, so a family is a row (plus any new op), not
// a copy of the pipeline (docs/architecture.md, "The architecture table").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/act_format.h"
#include "model/model_spec.h"

namespace qshard {

struct LinearWeights {
  Tensor weight;  // backend F32 [out, in]
  Tensor bias;    // backend F32 [out], or undefined
  ActFormat act = ActFormat::None;  // the input is fake-quantized to this before the GEMM
};

struct LayerWeights {
  Tensor input_norm;  // [hidden]
  Tensor post_attention_norm;
  Tensor q_norm, k_norm;  // [head_dim], qwen3's per-head RMSNorm on q and k; else undefined
  LinearWeights q, k, v, o, gate, up, down;
};

// Linears that read the same input, in true-sequential order: what GPTQ and AWQ
// collect statistics over.
enum class LinearGroup { QKV, O, GateUp, Down };
const char* linear_group_name(LinearGroup g);

// A size of the config that a tensor dimension is.
enum class Dim { Hidden, Q, KV, Intermediate, HeadDim };
int64_t dim_size(const ModelSpec& spec, Dim d);

struct LinearSlot {
  const char* name;  // under the layer prefix, without ".weight": "self_attn.q_proj"
  LinearGroup group;
  LinearWeights LayerWeights::*member;
  Dim out, in;
  bool ModelSpec::*bias;  // the config flag that says whether it has a bias
};

struct NormSlot {
  const char* name;  // under the layer prefix, without ".weight": "input_layernorm"
  Tensor LayerWeights::*member;
  Dim size;
};

struct GroupSlot {
  LinearGroup group;
  const char* input;  // what the group reads, for documentation and logs
  std::vector<LinearSlot> linears;
};

struct Architecture {
  Arch arch;
  const char* model_type;  // config.json's
  std::vector<NormSlot> norms;
  std::vector<GroupSlot> groups;  // true-sequential order
  bool qk_norm = false;  // q_norm/k_norm per head before RoPE (qwen3)
};

const Architecture& architecture(Arch arch);
const Architecture* find_architecture(const std::string& model_type);  // null: unsupported
std::string supported_model_types();  // "llama, mistral, qwen2, qwen3"

// Every Linear of a layer in true-sequential order (the report's and the plan's order).
std::vector<LinearSlot> layer_linears(const Architecture& a);
const GroupSlot& group_slot(const Architecture& a, LinearGroup g);

inline Shape linear_shape(const ModelSpec& s, const LinearSlot& l) {
  return {dim_size(s, l.out), dim_size(s, l.in)};
}
inline bool has_bias(const ModelSpec& s, const LinearSlot& l) { return s.*(l.bias); }

// The input width of a group's Linears (their Hessian's size).
int64_t group_in_features(const ModelSpec& s, const GroupSlot& g);

}  // namespace qshard
