#include "model/model_spec.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/architecture.h"

namespace qshard {

namespace {

using nlohmann::json;

// Typed field access whose errors name the file and key, so a user can fix config.json.
class ConfigReader {
 public:
  ConfigReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  int64_t required_int(const char* key, int64_t min_value = 1) const {
    if (!j_.contains(key) || j_[key].is_null())
      fail_input(where_, ": missing \"", key, "\", which this architecture needs");
    return checked_int(key, j_[key], min_value);
  }
  int64_t int_or(const char* key, int64_t fallback, int64_t min_value = 1) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    return checked_int(key, j_[key], min_value);
  }
  double double_or(const char* key, double fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_number()) fail_input(where_, ": \"", key, "\" must be a number");
    return j_[key].get<double>();
  }
  bool bool_or(const char* key, bool fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_boolean()) fail_input(where_, ": \"", key, "\" must be true or false");
    return j_[key].get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_string()) fail_input(where_, ": \"", key, "\" must be a string");
    return j_[key].get<std::string>();
  }
  const std::string& where() const { return where_; }

 private:
  int64_t checked_int(const char* key, const json& v, int64_t min_value) const {
    if (!v.is_number_integer())
      fail_input(where_, ": \"", key, "\" must be an integer, got ", v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < min_value || x > (int64_t(1) << 40))
      fail_input(where_, ": \"", key, "\" = ", x, " is out of range");
    return x;
  }
  const json& j_;
  std::string where_;
};

RopeScaling parse_rope_scaling(const json& config, const std::string& where) {
  RopeScaling rs;
  if (!config.contains("rope_scaling") || config["rope_scaling"].is_null()) return rs;
  const json& j = config["rope_scaling"];
  if (!j.is_object()) fail_input(where, ": \"rope_scaling\" must be an object or null");
  const ConfigReader r(j, where + " (rope_scaling)");
  // transformers accepts both spellings; "rope_type" is the current one.
  std::string type = r.string_or("rope_type", r.string_or("type", "default"));
  if (type == "default") return rs;
  rs.factor = r.double_or("factor", 1.0);
  if (!(rs.factor > 0)) fail_input(where, ": rope_scaling.factor must be positive");
  if (type == "linear") {
    rs.type = RopeScaling::Type::Linear;
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::Llama3;
    rs.low_freq_factor = r.double_or("low_freq_factor", 1.0);
    rs.high_freq_factor = r.double_or("high_freq_factor", 4.0);
    rs.original_max_position_embeddings = r.required_int("original_max_position_embeddings");
    if (!(rs.high_freq_factor > rs.low_freq_factor))
      fail_input(where, ": rope_scaling needs high_freq_factor > low_freq_factor");
  } else {
    fail_input(where, ": rope_scaling type \"", type,
               "\" is not supported (supported: default, linear, llama3)");
  }
  return rs;
}

// The experts and their routing. Mixtral: num_local_experts of intermediate_size, top-k
// weights always renormalized; Qwen-MoE: num_experts of moe_intermediate_size, renormalized
// when norm_topk_prob, Qwen2-MoE with a shared expert.
void parse_moe(const ConfigReader& r, const json& config, ModelSpec& s) {
  const std::string& where = r.where();
  if (s.arch == Arch::Mixtral) {
    s.num_experts = r.required_int("num_local_experts");
    s.moe_intermediate_size = s.intermediate_size;
    s.norm_topk_prob = true;
  } else {
    s.num_experts = r.required_int("num_experts");
    s.moe_intermediate_size = r.required_int("moe_intermediate_size");
    s.norm_topk_prob = r.bool_or("norm_topk_prob", false);
    if (s.arch == Arch::Qwen2Moe) s.shared_expert_intermediate_size = r.required_int("shared_expert_intermediate_size");
    // Dense MLP layers between sparse ones are not in the table (no released checkpoint has them).
    const bool dense_layers = r.int_or("decoder_sparse_step", 1) != 1 ||
                              (config.contains("mlp_only_layers") && config["mlp_only_layers"].is_array() &&
                               !config["mlp_only_layers"].empty());
    if (dense_layers)
      fail_input(where, ": decoder_sparse_step != 1 or a non-empty mlp_only_layers (dense MLP layers "
                 "among the MoE layers) is not supported: every layer must be a mixture of experts");
  }
  s.experts_per_token = r.required_int("num_experts_per_tok");
  if (s.experts_per_token > s.num_experts)
    fail_input(where, ": num_experts_per_tok ", s.experts_per_token, " exceeds the ", s.num_experts, " experts");
}

}  // namespace

ModelSpec ModelSpec::from_json(const json& config, const std::string& where) {
  if (!config.is_object()) fail_input(where, ": expected a JSON object");
  const ConfigReader r(config, where);
  ModelSpec s;
  s.model_type = r.string_or("model_type", "");
  if (s.model_type.empty())
    fail_input(where, ": no \"model_type\"; is this a Hugging Face config.json?");
  const Architecture* family = find_architecture(s.model_type);
  if (!family)
    fail_input(where, ": model_type \"", s.model_type, "\" is not supported (supported: ",
               supported_model_types(), ")");
  s.arch = family->arch;

  const std::string act = r.string_or("hidden_act", "silu");
  if (act != "silu")
    fail_input(where, ": hidden_act \"", act, "\" is not supported (Llama-family models use silu)");

  s.hidden_size = r.required_int("hidden_size");
  s.intermediate_size = r.required_int("intermediate_size");
  s.num_layers = r.required_int("num_hidden_layers");
  s.n_heads = r.required_int("num_attention_heads");
  s.n_kv_heads = r.int_or("num_key_value_heads", s.n_heads);
  s.vocab_size = r.required_int("vocab_size");
  s.max_position_embeddings = r.int_or("max_position_embeddings", 2048);
  s.rms_norm_eps = r.double_or("rms_norm_eps", 1e-6);
  s.rope_theta = r.double_or("rope_theta", 10000.0);
  s.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  s.bos_token_id = int32_t(r.int_or("bos_token_id", -1, -1));
  if (config.contains("head_dim") && !config["head_dim"].is_null()) {
    s.head_dim = r.required_int("head_dim");
  } else {
    if (s.hidden_size % s.n_heads != 0)
      fail_input(where, ": hidden_size ", s.hidden_size, " is not divisible by num_attention_heads ",
                 s.n_heads, " and no head_dim is given");
    s.head_dim = s.hidden_size / s.n_heads;
  }
  if (s.head_dim % 2 != 0) fail_input(where, ": head_dim ", s.head_dim, " must be even for RoPE");
  if (s.n_heads % s.n_kv_heads != 0)
    fail_input(where, ": num_attention_heads ", s.n_heads, " is not a multiple of num_key_value_heads ",
               s.n_kv_heads);
  if (!(s.rms_norm_eps > 0)) fail_input(where, ": rms_norm_eps must be positive");
  if (!(s.rope_theta > 0)) fail_input(where, ": rope_theta must be positive");
  s.rope_scaling = parse_rope_scaling(config, where);

  switch (s.arch) {
    case Arch::Llama:
      s.qkv_bias = s.o_bias = r.bool_or("attention_bias", false);
      s.mlp_bias = r.bool_or("mlp_bias", false);
      break;
    case Arch::Mistral:
      break;
    case Arch::Qwen2:
      s.qkv_bias = true;  // Qwen2Attention hard-codes bias on q/k/v, none on o_proj
      break;
    case Arch::Qwen3:
    case Arch::Qwen3Moe:
      s.qkv_bias = s.o_bias = r.bool_or("attention_bias", false);
      break;
    case Arch::Mixtral:
      break;
    case Arch::Qwen2Moe:
      s.qkv_bias = true;  // as Qwen2
      break;
  }
  if (architecture(s.arch).is_moe()) parse_moe(r, config, s);
  // Qwen2 configs carry sliding_window even when use_sliding_window is false.
  const bool qwen = s.arch != Arch::Llama && s.arch != Arch::Mistral && s.arch != Arch::Mixtral;
  const bool sliding = s.arch == Arch::Mistral || s.arch == Arch::Mixtral ||
                       (qwen && r.bool_or("use_sliding_window", false));
  if (sliding && config.contains("sliding_window") && !config["sliding_window"].is_null())
    s.sliding_window = r.required_int("sliding_window");
  return s;
}

ModelSpec ModelSpec::load(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    if (!std::filesystem::exists(model_dir))
      fail_input(model_dir, ": no such model directory: check --model (a Hugging Face model "
                 "directory with config.json and safetensors files)");
    fail_input(path, ": cannot open; a Hugging Face model directory has config.json beside its "
               "safetensors files");
  }
  json config;
  try {
    config = json::parse(in);
  } catch (const json::parse_error& e) {
    fail_input(path, ": not valid JSON (", e.what(), ")");
  }
  return from_json(config, path);
}

std::string ModelSpec::layer_prefix(int64_t layer) const {
  return str_cat("model.layers.", layer, ".");
}

std::string ModelSpec::describe() const {
  std::ostringstream os;
  os << model_type << ": " << num_layers << " layers, hidden " << hidden_size << ", intermediate "
     << intermediate_size << ", heads " << n_heads << "/" << n_kv_heads << " (head_dim " << head_dim
     << "), vocab " << vocab_size << ", rope_theta " << rope_theta;
  if (rope_scaling.type == RopeScaling::Type::Llama3) os << " (llama3 scaling x" << rope_scaling.factor << ")";
  if (rope_scaling.type == RopeScaling::Type::Linear) os << " (linear scaling x" << rope_scaling.factor << ")";
  if (tie_word_embeddings) os << ", tied embeddings";
  if (qkv_bias) os << ", qkv bias";
  if (architecture(arch).qk_norm) os << ", q/k norm";
  if (num_experts)
    os << ", " << num_experts << " experts of " << moe_intermediate_size << " (top " << experts_per_token
       << (norm_topk_prob ? ", renormalized" : "") << ")";
  if (shared_expert_intermediate_size) os << " + shared expert of " << shared_expert_intermediate_size;
  return os.str();
}

}  // namespace qshard
