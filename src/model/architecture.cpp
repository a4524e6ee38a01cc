#include "model/architecture.h"

#include "core/error.h"

namespace qshard {

const char* linear_group_name(LinearGroup g) {
  switch (g) {
    case LinearGroup::QKV: return "qkv";
    case LinearGroup::O: return "o";
    case LinearGroup::GateUp: return "gate_up";
    case LinearGroup::Down: return "down";
  }
  return "?";
}

int64_t dim_size(const ModelSpec& s, Dim d) {
  switch (d) {
    case Dim::Hidden: return s.hidden_size;
    case Dim::Q: return s.q_dim();
    case Dim::KV: return s.kv_dim();
    case Dim::Intermediate: return s.intermediate_size;
    case Dim::HeadDim: return s.head_dim;
  }
  return 0;
}

namespace {

using LW = LayerWeights;

// The Llama decoder layer every supported family shares: pre-norm attention then a
// SwiGLU MLP, each added to the residual stream.
std::vector<GroupSlot> llama_groups() {
  return {
      {LinearGroup::QKV, "input_layernorm(h)",
       {{"self_attn.q_proj", LinearGroup::QKV, &LW::q, Dim::Q, Dim::Hidden, &ModelSpec::qkv_bias},
        {"self_attn.k_proj", LinearGroup::QKV, &LW::k, Dim::KV, Dim::Hidden, &ModelSpec::qkv_bias},
        {"self_attn.v_proj", LinearGroup::QKV, &LW::v, Dim::KV, Dim::Hidden, &ModelSpec::qkv_bias}}},
      {LinearGroup::O, "attention(q, k, v)",
       {{"self_attn.o_proj", LinearGroup::O, &LW::o, Dim::Hidden, Dim::Q, &ModelSpec::o_bias}}},
      {LinearGroup::GateUp, "post_attention_layernorm(h + o)",
       {{"mlp.gate_proj", LinearGroup::GateUp, &LW::gate, Dim::Intermediate, Dim::Hidden, &ModelSpec::mlp_bias},
        {"mlp.up_proj", LinearGroup::GateUp, &LW::up, Dim::Intermediate, Dim::Hidden, &ModelSpec::mlp_bias}}},
      {LinearGroup::Down, "silu(gate) * up",
       {{"mlp.down_proj", LinearGroup::Down, &LW::down, Dim::Hidden, Dim::Intermediate, &ModelSpec::mlp_bias}}},
  };
}

std::vector<NormSlot> llama_norms() {
  return {{"input_layernorm", &LW::input_norm, Dim::Hidden},
          {"post_attention_layernorm", &LW::post_attention_norm, Dim::Hidden}};
}

Architecture qwen3() {
  Architecture a{Arch::Qwen3, "qwen3", llama_norms(), llama_groups(), true};
  a.norms.push_back({"self_attn.q_norm", &LW::q_norm, Dim::HeadDim});
  a.norms.push_back({"self_attn.k_norm", &LW::k_norm, Dim::HeadDim});
  return a;
}

// One row per family. Biases are per config (ModelSpec::from_json), so they name a flag.
const std::vector<Architecture>& table() {
  static const std::vector<Architecture> rows = {
      {Arch::Llama, "llama", llama_norms(), llama_groups()},
      {Arch::Mistral, "mistral", llama_norms(), llama_groups()},
      {Arch::Qwen2, "qwen2", llama_norms(), llama_groups()},
      qwen3(),
  };
  return rows;
}

}  // namespace

const Architecture& architecture(Arch arch) {
  for (const Architecture& a : table())
    if (a.arch == arch) return a;
  QS_ASSERT(false, "no architecture row for arch ", int(arch));
  return table().front();
}

const Architecture* find_architecture(const std::string& model_type) {
  for (const Architecture& a : table())
    if (model_type == a.model_type) return &a;
  return nullptr;
}

std::string supported_model_types() {
  std::string s;
  for (const Architecture& a : table()) s += (s.empty() ? "" : ", ") + std::string(a.model_type);
  return s;
}

std::vector<LinearSlot> layer_linears(const Architecture& a) {
  std::vector<LinearSlot> out;
  for (const GroupSlot& g : a.groups) out.insert(out.end(), g.linears.begin(), g.linears.end());
  return out;
}

const GroupSlot& group_slot(const Architecture& a, LinearGroup g) {
  for (const GroupSlot& s : a.groups)
    if (s.group == g) return s;
  QS_ASSERT(false, "architecture ", a.model_type, " has no group ", linear_group_name(g));
  return a.groups.front();
}

int64_t group_in_features(const ModelSpec& s, const GroupSlot& g) { return dim_size(s, g.linears.front().in); }

}  // namespace qshard
