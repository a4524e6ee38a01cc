// The architecture table: per model family, the decoder layer's tensors — its norms, its
// Linears grouped by the input they share, in true-sequential order, with the input each
// group reads, their shapes and biases — and the extra ops of the forward. The forward's
// loading and shape checks, the pipeline's group loop, the bpw planner, resume and the
// exports' tensor names all read these rows, so a family is a row (plus any new op), not
// a copy of the pipeline (docs/architecture.md, "The architecture table").
#pragma once

#include <cstdint>
#include <optional>
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

// One expert of a Mixture-of-Experts layer: a SwiGLU MLP.
struct ExpertWeights {
  LinearWeights gate, up, down;
};

struct LayerWeights {
  Tensor input_norm;  // [hidden]
  Tensor post_attention_norm;
  Tensor q_norm, k_norm;  // [head_dim], qwen3's per-head RMSNorm on q and k; else undefined
  LinearWeights q, k, v, o, gate, up, down;  // gate/up/down: dense MLP layers only
  // Mixture of experts: the router [experts, hidden] (never quantized), the experts, and
  // qwen2_moe's shared expert with its sigmoid gate [1, hidden]; empty/undefined otherwise.
  LinearWeights router;
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
  LinearWeights shared_gate;
};

// Linears that read the same input, in true-sequential order: what GPTQ and AWQ
// collect statistics over.
enum class LinearGroup { QKV, O, GateUp, Down };
const char* linear_group_name(LinearGroup g);

// Which group of a layer: the kind, and for an MoE layer's experts which one.
constexpr int kNoExpert = -1;
constexpr int kSharedExpert = 1 << 20;  // after every routed expert, as transformers runs it
struct GroupId {
  LinearGroup group;
  int expert = kNoExpert;
  GroupId(LinearGroup g, int e = kNoExpert) : group(g), expert(e) {}  // NOLINT: a LinearGroup is one
  // True-sequential order: by kind (qkv, o, gate_up, down), experts in index order within
  // a kind. An expert's down reads only its own gate/up, so every expert's gate_up can be
  // quantized before any down.
  bool operator<(const GroupId& o) const { return group != o.group ? group < o.group : expert < o.expert; }
  bool operator==(const GroupId& o) const { return group == o.group && expert == o.expert; }
};
std::string group_id_name(const GroupId& g);  // "gate_up", "gate_up[expert 3]"

// A size of the config that a tensor dimension is.
enum class Dim { Hidden, Q, KV, Intermediate, HeadDim, Experts, MoeIntermediate, SharedIntermediate, One };
int64_t dim_size(const ModelSpec& spec, Dim d);

struct LinearSlot {
  std::string name;  // under the layer prefix, without ".weight": "self_attn.q_proj"
  LinearGroup group;
  LinearWeights LayerWeights::*member;  // a layer's own Linear; null for an expert's
  Dim out, in;
  bool ModelSpec::*bias;  // the config flag that says whether it has a bias
  LinearWeights ExpertWeights::*expert_member = nullptr;  // an expert's Linear
  int expert = kNoExpert;  // which expert (index, or kSharedExpert)
};
LinearWeights& linear_of(LayerWeights& w, const LinearSlot& s);
const LinearWeights& linear_of(const LayerWeights& w, const LinearSlot& s);

// A Linear that is read and run but never quantized (an MoE router, the shared expert's
// gate): exported as stored.
struct DenseLinearSlot {
  const char* name;
  LinearWeights LayerWeights::*member;
  Dim out, in;
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
  int expert = kNoExpert;
  GroupId id() const { return {group, expert}; }
};

// The MLP half of an MoE family: names under the layer prefix, and the routing.
struct MoeNames {
  const char* block;   // "block_sparse_moe" (mixtral), "mlp" (qwen)
  const char* gate;    // expert Linears: "w1" / "gate_proj"
  const char* up;      // "w3" / "up_proj"
  const char* down;    // "w2" / "down_proj"
  bool shared_expert;  // qwen2_moe: shared_expert.{gate,up,down}_proj + shared_expert_gate
};

struct Architecture {
  Arch arch;
  const char* model_type;  // config.json's
  std::vector<NormSlot> norms;
  std::vector<GroupSlot> groups;  // true-sequential order; an MoE row: the attention half only
  bool qk_norm = false;  // q_norm/k_norm per head before RoPE (qwen3)
  std::optional<MoeNames> moe;  // the MLP is a mixture of experts: expanded by layer_groups
  bool is_moe() const { return moe.has_value(); }
};

const Architecture& architecture(Arch arch);
const Architecture* find_architecture(const std::string& model_type);  // null: unsupported
std::string supported_model_types();  // "llama, mistral, qwen2, qwen3"

// A layer's groups in true-sequential order (GroupId's), an MoE layer's experts expanded:
// qkv, o, gate_up of expert 0, 1, ..., of the shared expert, then their downs.
std::vector<GroupSlot> layer_groups(const ModelSpec& s);
// Every quantizable Linear of a layer in that order (the report's and the plan's order).
std::vector<LinearSlot> layer_linears(const ModelSpec& s);
std::vector<DenseLinearSlot> dense_linears(const ModelSpec& s);  // router, shared gate

inline Shape linear_shape(const ModelSpec& s, const LinearSlot& l) {
  return {dim_size(s, l.out), dim_size(s, l.in)};
}
inline bool has_bias(const ModelSpec& s, const LinearSlot& l) { return s.*(l.bias); }

// An AWQ / SmoothQuant scaling pair: Linears reading one input whose columns take a
// per-input-channel scale s, and what takes 1/s so that the layer's function is unchanged:
// the RMSNorm before them, or the output rows of the Linear before them. Unquantized
// Linears reading the same normed input (an MoE router, qwen2_moe's shared-expert gate)
// take s as well, so the routing logits stay what they were.
struct ScalingPair {
  std::string what;                      // for logs: "post_attention_layernorm->gate,up"
  std::vector<size_t> balance;           // indices into layer_linears(spec)
  Tensor LayerWeights::*norm = nullptr;  // the RMSNorm before them, or null
  int prev_linear = -1;                  // else the Linear before them (layer_linears index)
  std::vector<LinearWeights LayerWeights::*> dense;  // unquantized Linears on the same input
  int expert = kNoExpert;                // whose up->down pair
};
// A layer's pairs in fold order (AutoAWQ's, and llm-compressor's for MoE): input_layernorm
// -> q,k,v; v -> o when their shapes match (no GQA: v's output rows are o's input columns
// one to one); post_attention_layernorm -> every gate,up of the layer (an MoE layer's
// experts and shared expert share the one normed input, so one scale) and the routers;
// each up -> its down.
std::vector<ScalingPair> scaling_pairs(const ModelSpec& s);

// The input width of a group's Linears (their Hessian's size).
int64_t group_in_features(const ModelSpec& s, const GroupSlot& g);

}  // namespace qshard
