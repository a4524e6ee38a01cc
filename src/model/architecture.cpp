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
    case Dim::Experts: return s.num_experts;
    case Dim::MoeIntermediate: return s.moe_intermediate_size;
    case Dim::SharedIntermediate: return s.shared_expert_intermediate_size;
    case Dim::One: return 1;
  }
  return 0;
}

std::string group_id_name(const GroupId& g) {
  if (g.expert == kNoExpert) return linear_group_name(g.group);
  if (g.expert == kSharedExpert) return str_cat(linear_group_name(g.group), "[shared expert]");
  return str_cat(linear_group_name(g.group), "[expert ", g.expert, "]");
}

LinearWeights& linear_of(LayerWeights& w, const LinearSlot& s) {
  if (!s.expert_member) return w.*(s.member);
  if (s.expert == kSharedExpert) return w.shared.*(s.expert_member);
  QS_ASSERT(size_t(s.expert) < w.experts.size(), "expert ", s.expert, " of ", w.experts.size());
  return w.experts[size_t(s.expert)].*(s.expert_member);
}

const LinearWeights& linear_of(const LayerWeights& w, const LinearSlot& s) {
  return linear_of(const_cast<LayerWeights&>(w), s);
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

std::vector<NormSlot> qk_norms() {
  std::vector<NormSlot> n = llama_norms();
  n.push_back({"self_attn.q_norm", &LW::q_norm, Dim::HeadDim});
  n.push_back({"self_attn.k_norm", &LW::k_norm, Dim::HeadDim});
  return n;
}

std::vector<GroupSlot> attention_groups() {
  std::vector<GroupSlot> g = llama_groups();
  g.resize(2);  // qkv, o: an MoE layer's MLP half is expanded per expert by layer_groups
  return g;
}

// Mixtral (block_sparse_moe, w1/w3/w2), Qwen2-MoE (mlp, gate/up/down_proj + shared
// expert), Qwen3-MoE (as Qwen2-MoE without the shared expert, with q/k norm).
Architecture moe(Arch arch, const char* type, std::vector<NormSlot> norms, bool qk_norm, MoeNames names) {
  return Architecture{arch, type, std::move(norms), attention_groups(), qk_norm, names};
}

// One row per family. Biases are per config (ModelSpec::from_json), so they name a flag.
const std::vector<Architecture>& table() {
  static const std::vector<Architecture> rows = {
      {Arch::Llama, "llama", llama_norms(), llama_groups(), false, std::nullopt},
      {Arch::Mistral, "mistral", llama_norms(), llama_groups(), false, std::nullopt},
      {Arch::Qwen2, "qwen2", llama_norms(), llama_groups(), false, std::nullopt},
      {Arch::Qwen3, "qwen3", qk_norms(), llama_groups(), true, std::nullopt},
      moe(Arch::Mixtral, "mixtral", llama_norms(), false, {"block_sparse_moe", "w1", "w3", "w2", false}),
      moe(Arch::Qwen2Moe, "qwen2_moe", llama_norms(), false, {"mlp", "gate_proj", "up_proj", "down_proj", true}),
      moe(Arch::Qwen3Moe, "qwen3_moe", qk_norms(), true, {"mlp", "gate_proj", "up_proj", "down_proj", false}),
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

namespace {

// One expert's group of `kind`: gate/up on the routed (normed) rows, or down.
GroupSlot expert_group(const MoeNames& m, const std::string& prefix, int expert, Dim inter, LinearGroup kind) {
  auto slot = [&](const char* n, LinearWeights ExpertWeights::*member, Dim o, Dim i) {
    return LinearSlot{prefix + n, kind, nullptr, o, i, &ModelSpec::mlp_bias, member, expert};
  };
  if (kind == LinearGroup::GateUp)
    return {kind, "the routed rows of post_attention_layernorm(h + o)",
            {slot(m.gate, &ExpertWeights::gate, inter, Dim::Hidden), slot(m.up, &ExpertWeights::up, inter, Dim::Hidden)},
            expert};
  return {kind, "silu(gate) * up of the routed rows", {slot(m.down, &ExpertWeights::down, Dim::Hidden, inter)}, expert};
}

}  // namespace

std::vector<GroupSlot> layer_groups(const ModelSpec& s) {
  const Architecture& a = architecture(s.arch);
  std::vector<GroupSlot> out = a.groups;
  if (!a.is_moe()) return out;
  const MoeNames& m = *a.moe;
  for (LinearGroup kind : {LinearGroup::GateUp, LinearGroup::Down}) {
    for (int e = 0; e < int(s.num_experts); ++e)
      out.push_back(expert_group(m, str_cat(m.block, ".experts.", e, "."), e, Dim::MoeIntermediate, kind));
    if (m.shared_expert)
      out.push_back(expert_group(m, str_cat(m.block, ".shared_expert."), kSharedExpert, Dim::SharedIntermediate, kind));
  }
  return out;
}

std::vector<LinearSlot> layer_linears(const ModelSpec& s) {
  std::vector<LinearSlot> out;
  for (const GroupSlot& g : layer_groups(s)) out.insert(out.end(), g.linears.begin(), g.linears.end());
  return out;
}

std::vector<DenseLinearSlot> dense_linears(const ModelSpec& s) {
  const Architecture& a = architecture(s.arch);
  if (!a.is_moe()) return {};
  // Kept at full precision, as GPTQModel and llm-compressor do: the router decides which
  // expert runs, and a flipped choice costs more than its bits save.
  static const std::string mixtral_gate = "block_sparse_moe.gate", qwen_gate = "mlp.gate";
  std::vector<DenseLinearSlot> out = {
      {a.arch == Arch::Mixtral ? mixtral_gate.c_str() : qwen_gate.c_str(), &LW::router, Dim::Experts, Dim::Hidden}};
  if (a.moe->shared_expert) out.push_back({"mlp.shared_expert_gate", &LW::shared_gate, Dim::One, Dim::Hidden});
  return out;
}

std::vector<ScalingPair> scaling_pairs(const ModelSpec& s) {
  const std::vector<GroupSlot> groups = layer_groups(s);
  std::vector<size_t> first;  // each group's first Linear in layer_linears order
  for (size_t n = 0; const GroupSlot& g : groups) {
    first.push_back(n);
    n += g.linears.size();
  }
  auto linear = [&](GroupId id, size_t k) {  // the k-th Linear of group id
    for (size_t i = 0; i < groups.size(); ++i)
      if (groups[i].id() == id) return first[i] + k;
    QS_ASSERT(false, "no group ", group_id_name(id));
    return size_t(0);
  };
  auto pair = [](std::string what, std::vector<size_t> balance, Tensor LayerWeights::*norm, int prev, int expert) {
    ScalingPair p;
    p.what = std::move(what);
    p.balance = std::move(balance);
    p.norm = norm;
    p.prev_linear = prev;
    p.expert = expert;
    return p;
  };
  const std::vector<LinearSlot> slots = layer_linears(s);
  std::vector<ScalingPair> out;
  ScalingPair mlp = pair(architecture(s.arch).is_moe() ? "post_attention_layernorm->experts' gate,up and router"
                                                        : "post_attention_layernorm->gate,up",
                         {}, &LayerWeights::post_attention_norm, -1, kNoExpert);
  for (const DenseLinearSlot& d : dense_linears(s)) mlp.dense.push_back(d.member);
  for (size_t i = 0; i < groups.size(); ++i) {
    const GroupSlot& g = groups[i];
    std::vector<size_t> own(g.linears.size());
    for (size_t k = 0; k < own.size(); ++k) own[k] = first[i] + k;
    switch (g.group) {
      case LinearGroup::QKV:
        out.push_back(pair("input_layernorm->q,k,v", own, &LayerWeights::input_norm, -1, kNoExpert));
        break;
      case LinearGroup::O: {
        const size_t v = linear(LinearGroup::QKV, 2);
        if (linear_shape(s, slots[v]) == linear_shape(s, slots[own[0]]))
          out.push_back(pair("v->o", own, nullptr, int(v), kNoExpert));
        break;
      }
      case LinearGroup::GateUp: mlp.balance.insert(mlp.balance.end(), own.begin(), own.end()); break;
      case LinearGroup::Down:
        if (!mlp.balance.empty()) out.push_back(mlp);  // before every down: the fold order
        mlp.balance.clear();
        out.push_back(pair(str_cat("up->", group_id_name(g.id())), own, nullptr,
                           int(linear({LinearGroup::GateUp, g.expert}, 1)), g.expert));
        break;
    }
  }
  return out;
}

int64_t group_in_features(const ModelSpec& s, const GroupSlot& g) { return dim_size(s, g.linears.front().in); }

}  // namespace qshard
