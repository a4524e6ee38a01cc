// What a checkpoint is, from its config.json: architecture, geometry, RoPE, and the
// names of its tensors. Architectures differ here and nowhere else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace qshard {

enum class Arch { Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2Moe, Qwen3Moe };  // rows of model/architecture.h

struct RopeScaling {
  enum class Type { None, Linear, Llama3 };
  Type type = Type::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelSpec {
  std::string model_type;  // as in config.json: "llama", "mistral", "qwen2", "qwen3"
  Arch arch = Arch::Llama;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // qwen2 always; llama, qwen3 with attention_bias
  bool o_bias = false;    // llama, qwen3 with attention_bias
  bool mlp_bias = false;  // llama with mlp_bias
  // Mixture of experts (mixtral, qwen2_moe, qwen3_moe); num_experts 0: a dense MLP.
  int64_t num_experts = 0;
  int64_t experts_per_token = 0;
  int64_t moe_intermediate_size = 0;            // each routed expert's
  int64_t shared_expert_intermediate_size = 0;  // qwen2_moe's shared expert; 0: none
  bool norm_topk_prob = false;  // the top-k routing weights renormalized to sum to 1
  std::optional<int64_t> sliding_window;  // mistral v0.1; none means full attention
  int32_t bos_token_id = -1;

  // Parses and validates; `where` names the file in error messages.
  static ModelSpec from_json(const nlohmann::json& config, const std::string& where);
  // Reads DIR/config.json.
  static ModelSpec load(const std::string& model_dir);

  std::string layer_prefix(int64_t layer) const;  // "model.layers.7."
  std::string describe() const;                   // one line for logs and `qshard info`
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

}  // namespace qshard
