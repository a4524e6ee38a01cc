#include "export/gguf_arch.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "core/error.h"

namespace qshard::exporting {

namespace {

// The converter registers MistralForCausalLM and MixtralForCausalLM as LlamaModel.
const GgufArch kArchs[] = {
    {Arch::Llama, "llama", true, true, false, false},
    {Arch::Mistral, "llama", true, true, false, false},
    {Arch::Qwen2, "qwen2", false, false, false, false},
    {Arch::Qwen3, "qwen3", false, false, false, false},
    {Arch::Mixtral, "llama", true, true, true, true},
    {Arch::Qwen2Moe, "qwen2moe", false, false, true, false},
    {Arch::Qwen3Moe, "qwen3moe", false, false, true, true},
};

// The layer part of an HF name split off: ("3", "mlp.experts.5.up_proj.weight"), or false.
bool split_layer(const std::string& hf, std::string& n, std::string& rest) {
  const std::string prefix = "model.layers.";
  if (hf.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t dot = hf.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  n = hf.substr(prefix.size(), dot - prefix.size());
  rest = hf.substr(dot + 1);
  return true;
}

// llama_ftype (llama.h) of a file whose quantized tensors are mostly `f`.
uint32_t file_type(const QuantFormat& f) {
  if (!f.is_ggml()) return 0;  // ALL_F32
  if (f.family == FormatFamily::GgmlIQ4NL) return 25;
  if (f.family == FormatFamily::GgmlIQ4XS) return 30;
  if (f.family == FormatFamily::GgmlK) return f.bits == 2 ? 10 : f.bits == 3 ? 11 : f.bits == 4 ? 14 : f.bits == 5 ? 16 : 18;  // _K_S, Q6_K
  if (f.bits == 8) return 7;
  if (f.bits == 4) return f.symmetric ? 2 : 3;
  return f.symmetric ? 8 : 9;
}

// LlamaModel.generate_extra_tensors for rope_scaling llama3: per rotary frequency pair, the
// factor llama.cpp divides its frequency by (1 above the high-frequency wavelength, `factor`
// below the low one, interpolated between), in float32 as the converter computes it.
std::vector<float> llama3_rope_freqs(const ModelSpec& s) {
  const RopeScaling& r = s.rope_scaling;
  const float dim = float(s.head_dim), factor = float(r.factor), lo = float(r.low_freq_factor),
              hi = float(r.high_freq_factor), old_ctx = float(r.original_max_position_embeddings);
  const float lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
  std::vector<float> out;
  for (int64_t i = 0; i < s.head_dim; i += 2) {
    const float freq = 1.0f / std::pow(float(s.rope_theta), float(i) / dim);
    const float wavelen = 2.0f * float(M_PI) / freq;
    if (wavelen < hi_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > lo_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (old_ctx / wavelen - lo) / (hi - lo);
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

void add_f32_tensor(GgufFile& file, const std::string& name, const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(float));
  std::memcpy(bytes.data(), v.data(), bytes.size());
  file.add_tensor(name, {int64_t(v.size())}, GgmlType::F32, std::move(bytes));
}

// rope_scaling as TextModel.set_gguf_parameters writes it (linear: two keys) or
// LlamaModel.generate_extra_tensors (llama3: the rope_freqs tensor, no key).
void rope_scaling(const ModelSpec& s, const GgufArch& a, GgufFile& file) {
  const std::string p = a.name;
  if (s.rope_scaling.type == RopeScaling::Type::Linear) {
    file.set_string(p + ".rope.scaling.type", "linear");
    file.set_f32(p + ".rope.scaling.factor", float(s.rope_scaling.factor));
  } else if (s.rope_scaling.type == RopeScaling::Type::Llama3) {
    add_f32_tensor(file, "rope_freqs.weight", llama3_rope_freqs(s));
  }
}

}  // namespace

const GgufArch& gguf_arch(const ModelSpec& spec) {
  for (const GgufArch& a : kArchs) {
    if (a.arch != spec.arch) continue;
    if (a.moe && spec.norm_topk_prob != a.norm_topk)
      fail_input("config.json: norm_topk_prob ", spec.norm_topk_prob ? "true" : "false", " on model_type ",
                 spec.model_type, ": llama.cpp's ", a.name, " graph ", a.norm_topk ? "always" : "never",
                 " renormalizes the top-k routing weights, so --export gguf cannot describe this model; "
                 "use --export fakequant or hdf5");
    if (spec.rope_scaling.type == RopeScaling::Type::Llama3 && !a.llama_extras)
      fail_input("config.json: rope_scaling llama3 on model_type ", spec.model_type, ": llama.cpp's ",
                 a.name, " graph reads no rope_freqs tensor, so --export gguf cannot write it; use "
                 "--export fakequant or hdf5 for this model");
    return a;
  }
  fail("internal error: no GGUF architecture row for model_type ", spec.model_type);
}

std::string gguf_tensor_name(const std::string& hf) {
  static const std::map<std::string, std::string> top = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  if (auto it = top.find(hf); it != top.end()) return it->second;
  static const std::pair<const char*, const char*> layer[] = {
      {"input_layernorm", "attn_norm"},  {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_proj", "attn_q"},    {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},    {"self_attn.o_proj", "attn_output"},
      {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"},
      {"mlp.gate_proj", "ffn_gate"},     {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
      {"block_sparse_moe.gate", "ffn_gate_inp"}, {"mlp.gate", "ffn_gate_inp"},  // routers
      {"mlp.shared_expert.gate_proj", "ffn_gate_shexp"}, {"mlp.shared_expert.up_proj", "ffn_up_shexp"},
      {"mlp.shared_expert.down_proj", "ffn_down_shexp"}, {"mlp.shared_expert_gate", "ffn_gate_inp_shexp"}};
  std::string n, rest;
  if (!split_layer(hf, n, rest)) return "";
  for (const auto& [from, to] : layer) {
    const std::string f = from;
    if (rest.compare(0, f.size() + 1, f + ".") == 0) return "blk." + n + "." + to + rest.substr(f.size());
  }
  return "";
}

std::optional<ExpertSlot> gguf_expert_slot(const std::string& hf) {
  static const char* const experts[] = {"block_sparse_moe.experts.", "mlp.experts."};  // mixtral, qwen
  static const std::pair<const char*, const char*> linear[] = {
      {"w1", "ffn_gate_exps"}, {"w3", "ffn_up_exps"}, {"w2", "ffn_down_exps"},  // mixtral
      {"gate_proj", "ffn_gate_exps"}, {"up_proj", "ffn_up_exps"}, {"down_proj", "ffn_down_exps"}};
  std::string n, rest;
  if (!split_layer(hf, n, rest)) return std::nullopt;
  for (const char* prefix : experts) {
    const std::string p = prefix;
    if (rest.compare(0, p.size(), p) != 0) continue;
    const size_t dot = rest.find('.', p.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string e = rest.substr(p.size(), dot - p.size()), lin = rest.substr(dot + 1);
    if (e.empty() || e.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    for (const auto& [from, to] : linear)
      if (lin == std::string(from) + ".weight") return ExpertSlot{"blk." + n + "." + to + ".weight", std::stoll(e)};
  }
  return std::nullopt;
}

void ExpertStacks::add(const ExpertSlot& slot, const std::vector<int64_t>& shape, GgmlType type,
                       GgufExtent where) {
  auto [it, fresh] = stacks_.try_emplace(slot.name);
  Stack& s = it->second;
  if (fresh) s.shape = shape, s.type = type;
  if ((shape != s.shape || type != s.type) && s.mismatch.empty())
    s.mismatch = str_cat("expert ", slot.expert, " is ", ggml_type_name(type), ", expert ",
                         s.slices.begin()->first, " ", ggml_type_name(s.type));
  s.slices[slot.expert] = std::move(where);
}

void ExpertStacks::write(GgufFile& file, int64_t n_experts) {
  for (auto& [name, s] : stacks_) {
    if (!s.mismatch.empty())
      fail_input("--export gguf: ", name, " stacks every expert in one GGUF tensor of one type, but ",
                 s.mismatch, ": give the experts of a layer one format (--recipe, --target-bpw)");
    QS_ASSERT(int64_t(s.slices.size()) == n_experts && s.slices.rbegin()->first == n_experts - 1, name,
              ": ", s.slices.size(), " of ", n_experts, " experts");
    std::vector<GgufExtent> parts;
    for (auto& [e, slice] : s.slices) parts.push_back(std::move(slice));
    file.add_tensor_at(name, {n_experts, s.shape[0], s.shape[1]}, s.type, std::move(parts));
  }
  stacks_.clear();
}

GgufModel gguf_model_metadata(const nlohmann::json& config, const ExportInfo& info, GgufFile& file) {
  const std::string where = (std::filesystem::path(info.source_model_dir) / "config.json").string();
  const ModelSpec s = ModelSpec::from_json(config, where);
  const GgufArch& a = gguf_arch(s);
  const std::string p = a.name;
  const std::string name = std::filesystem::path(info.source_model_dir).filename().string();
  file.set_string("general.architecture", a.name);
  file.set_string("general.name", name.empty() ? "model" : name);
  file.set_u32("general.quantization_version", 2);
  file.set_u32("general.file_type", info.gguf_file_type ? info.gguf_file_type : file_type(info.format));
  file.set_u32(p + ".block_count", uint32_t(s.num_layers));
  file.set_u32(p + ".context_length", uint32_t(s.max_position_embeddings));
  file.set_u32(p + ".embedding_length", uint32_t(s.hidden_size));
  file.set_u32(p + ".feed_forward_length", uint32_t(s.intermediate_size));
  file.set_u32(p + ".attention.head_count", uint32_t(s.n_heads));
  file.set_u32(p + ".attention.head_count_kv", uint32_t(s.n_kv_heads));
  file.set_f32(p + ".rope.freq_base", float(s.rope_theta));
  file.set_f32(p + ".attention.layer_norm_rms_epsilon", float(s.rms_norm_eps));
  // The converter writes these whenever config.json has head_dim; llama.cpp's default
  // (hidden / heads) is the same value otherwise.
  if (s.head_dim != s.hidden_size / s.n_heads) {
    file.set_u32(p + ".attention.key_length", uint32_t(s.head_dim));
    file.set_u32(p + ".attention.value_length", uint32_t(s.head_dim));
  }
  if (a.llama_extras) {
    file.set_u32(p + ".vocab_size", uint32_t(s.vocab_size));
    file.set_u32(p + ".rope.dimension_count", uint32_t(s.head_dim));
  }
  if (a.moe) {  // TextModel's expert keys, Qwen2MoeModel's expert sizes
    file.set_u32(p + ".expert_count", uint32_t(s.num_experts));
    file.set_u32(p + ".expert_used_count", uint32_t(s.experts_per_token));
    if (s.arch != Arch::Mixtral) file.set_u32(p + ".expert_feed_forward_length", uint32_t(s.moe_intermediate_size));
    if (s.shared_expert_intermediate_size > 0)
      file.set_u32(p + ".expert_shared_feed_forward_length", uint32_t(s.shared_expert_intermediate_size));
  }
  rope_scaling(s, a, file);
  return GgufModel{&a, s.n_heads, s.n_kv_heads, s.num_experts};
}

}  // namespace qshard::exporting
