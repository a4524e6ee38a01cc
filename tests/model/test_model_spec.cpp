#include <gtest/gtest.h>

#include "core/error.h"
#include "model/architecture.h"
#include "model/model_spec.h"

using namespace qshard;
using nlohmann::json;

namespace {

json llama31_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
    "bos_token_id": 128000})");
}

std::string error_of(const json& j) {
  try {
    ModelSpec::from_json(j, "config.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ModelSpec, Llama31) {
  const ModelSpec s = ModelSpec::from_json(llama31_8b(), "config.json");
  EXPECT_EQ(s.arch, Arch::Llama);
  EXPECT_EQ(s.head_dim, 128);
  EXPECT_EQ(s.kv_dim(), 1024);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_EQ(s.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(s.rope_theta, 500000.0);
  EXPECT_FALSE(s.qkv_bias);
  EXPECT_EQ(s.bos_token_id, 128000);
  EXPECT_EQ(s.layer_prefix(7), "model.layers.7.");
}

TEST(ModelSpec, Qwen2HasQkvBiasAndIgnoresUnusedSlidingWindow) {
  const json j = json::parse(R"({"model_type": "qwen2", "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": true,
    "sliding_window": 32768, "use_sliding_window": false, "rope_theta": 1000000.0})");
  const ModelSpec s = ModelSpec::from_json(j, "config.json");
  EXPECT_EQ(s.arch, Arch::Qwen2);
  EXPECT_TRUE(s.qkv_bias);
  EXPECT_FALSE(s.o_bias);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_EQ(s.head_dim, 64);
  EXPECT_FALSE(s.sliding_window.has_value());
}

TEST(ModelSpec, Qwen3HeadDimFromConfigQkNormAndNoBias) {
  // Qwen3-0.6B's config.json (the fields qshard reads).
  const json j = json::parse(R"({"model_type": "qwen3", "hidden_size": 1024,
    "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "attention_bias": false,
    "tie_word_embeddings": true, "rope_theta": 1000000, "sliding_window": null,
    "use_sliding_window": false, "hidden_act": "silu", "rms_norm_eps": 1e-06})");
  const ModelSpec s = ModelSpec::from_json(j, "config.json");
  EXPECT_EQ(s.arch, Arch::Qwen3);
  EXPECT_EQ(s.head_dim, 128);  // not hidden/heads = 64
  EXPECT_EQ(s.q_dim(), 2048);
  EXPECT_FALSE(s.qkv_bias);
  EXPECT_FALSE(s.o_bias);
  const Architecture& a = architecture(s.arch);
  EXPECT_TRUE(a.qk_norm);
  ASSERT_EQ(a.norms.size(), 4u);
  EXPECT_STREQ(a.norms[2].name, "self_attn.q_norm");
  EXPECT_EQ(dim_size(s, a.norms[2].size), 128);
}

TEST(ArchitectureTable, EveryFamilyListsItsLinearsInTrueSequentialOrder) {
  const json j = json::parse(R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 100})");
  const ModelSpec s = ModelSpec::from_json(j, "config.json");
  std::vector<std::string> names;
  for (const LinearSlot& l : layer_linears(s)) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                             "mlp.down_proj"}));
  const auto linears = layer_linears(s);
  EXPECT_EQ(linear_shape(s, linears[1]), (Shape{32, 64}));   // k: kv_dim x hidden
  EXPECT_EQ(linear_shape(s, linears[3]), (Shape{64, 64}));   // o: hidden x q_dim
  EXPECT_EQ(linear_shape(s, linears[6]), (Shape{64, 160}));  // down: hidden x intermediate
  for (const char* t : {"llama", "mistral", "qwen2", "qwen3"}) {
    const Architecture* a = find_architecture(t);
    ASSERT_NE(a, nullptr) << t;
    EXPECT_EQ(a->groups.size(), 4u) << t;
    EXPECT_EQ(supported_model_types().find(t) != std::string::npos, true) << t;
  }
  EXPECT_EQ(find_architecture("gpt_neox"), nullptr);
}

TEST(ModelSpec, MistralExplicitHeadDimAndSlidingWindow) {
  const json j = json::parse(R"({"model_type": "mistral", "hidden_size": 5120,
    "intermediate_size": 14336, "num_hidden_layers": 40, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072, "sliding_window": 4096})");
  const ModelSpec s = ModelSpec::from_json(j, "config.json");
  EXPECT_EQ(s.head_dim, 128);  // not hidden/heads = 160
  EXPECT_EQ(s.q_dim(), 4096);
  ASSERT_TRUE(s.sliding_window.has_value());
  EXPECT_EQ(*s.sliding_window, 4096);
}

TEST(ModelSpec, ClearErrors) {
  json j = llama31_8b();
  j["model_type"] = "gpt2";
  EXPECT_NE(error_of(j).find("model_type \"gpt2\" is not supported"), std::string::npos);
  j = llama31_8b();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("missing \"hidden_size\""), std::string::npos);
  j = llama31_8b();
  j["num_key_value_heads"] = 5;
  EXPECT_NE(error_of(j).find("not a multiple of num_key_value_heads"), std::string::npos);
  j = llama31_8b();
  j["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_NE(error_of(j).find("\"yarn\" is not supported"), std::string::npos);
  j = llama31_8b();
  j["hidden_size"] = "4096";
  EXPECT_NE(error_of(j).find("must be an integer"), std::string::npos);
  j = llama31_8b();
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("hidden_act"), std::string::npos);
  EXPECT_NE(error_of(json::array()).find("expected a JSON object"), std::string::npos);
  EXPECT_THROW(ModelSpec::load("/nonexistent/model"), InputError);
}

TEST(ModelSpec, LoadsBundledModel) {
  const ModelSpec s = ModelSpec::load(QSHARD_TEST_MODEL);
  EXPECT_EQ(s.num_layers, 4);
  EXPECT_EQ(s.n_kv_heads, 2);
  EXPECT_EQ(s.head_dim, 64);
  EXPECT_EQ(s.vocab_size, 4096);
}
