// llama.cpp's named mixes and its fallback for rows a K-quant block does not divide,
// against llama-quant.cpp's llama_tensor_get_type / tensor_type_fallback read by hand,
// on SmolLM2-135M's geometry (hidden 576 = 2.25 super-blocks, intermediate 1536 = 6).
#include <gtest/gtest.h>

#include "core/error.h"
#include "pipeline/gguf_mix.h"
#include "pipeline/recipe.h"

using namespace qshard;

namespace {

ModelSpec smollm2_like() {
  ModelSpec s;
  s.hidden_size = 576;
  s.intermediate_size = 1536;
  s.num_layers = 30;
  s.n_heads = 9;
  s.n_kv_heads = 3;
  s.head_dim = 64;
  s.vocab_size = 49152;
  s.tie_word_embeddings = true;
  return s;
}

std::string type_of(const GgufPlan& p, const QuantFormat& base, const std::string& module) {
  const auto it = p.modules.find(module);
  if (it == p.modules.end()) return base.name();
  return it->second ? it->second->name() : "f16";
}

}  // namespace

TEST(GgufMix, Q4KMOnHidden576FallsBackLikeLlamaQuantize) {
  const auto mix = parse_gguf_mix("gguf:q4_k_m");
  ASSERT_TRUE(mix);
  EXPECT_EQ(mix->name, "Q4_K_M");
  EXPECT_EQ(mix->file_type, 15u);
  const ModelSpec s = smollm2_like();
  const GgufPlan p = plan_gguf(s, mix->base, &*mix);
  // 576 columns: Q4_K -> Q5_0, Q6_K (use_more_bits layers of attn_v) -> Q8_0.
  EXPECT_EQ(type_of(p, mix->base, "model.layers.5.self_attn.q_proj"), "q5_0");
  EXPECT_EQ(type_of(p, mix->base, "model.layers.5.mlp.gate_proj"), "q5_0");
  EXPECT_EQ(type_of(p, mix->base, "model.layers.0.self_attn.v_proj"), "q8_0");  // 0 < 30/8
  EXPECT_EQ(type_of(p, mix->base, "model.layers.4.self_attn.v_proj"), "q5_0");  // (4-3)%3 != 2
  EXPECT_EQ(type_of(p, mix->base, "model.layers.5.self_attn.v_proj"), "q8_0");  // (5-3)%3 == 2
  // 1536 columns divide into super-blocks: ffn_down keeps Q4_K, or Q6_K where use_more_bits.
  EXPECT_EQ(type_of(p, mix->base, "model.layers.4.mlp.down_proj"), "q4_k");
  EXPECT_EQ(type_of(p, mix->base, "model.layers.5.mlp.down_proj"), "q6_k");
  EXPECT_EQ(type_of(p, mix->base, "model.layers.29.mlp.down_proj"), "q6_k");  // >= 7*30/8
  // Tied embeddings: token_embd takes output's type, Q8_0 (576 % 256 != 0).
  EXPECT_EQ(p.dense.at("model.embed_tokens.weight"), "q8_0");
  EXPECT_EQ(p.dense.count("lm_head.weight"), 0u);
  EXPECT_FALSE(p.fallbacks.empty());
}

TEST(GgufMix, PlainFormatOnlyFallsBack) {
  const ModelSpec s = smollm2_like();
  const QuantFormat q6 = QuantFormat::parse("q6_k", 0, true);
  const GgufPlan p = plan_gguf(s, q6, nullptr);
  EXPECT_EQ(type_of(p, q6, "model.layers.0.self_attn.q_proj"), "q8_0");
  EXPECT_EQ(type_of(p, q6, "model.layers.0.mlp.down_proj"), "q6_k");
  EXPECT_TRUE(p.dense.empty());
  // The plan becomes recipe rules that --recipe / --skip rules still override.
  Recipe r(q6);
  r.add_skip("layers\\.0\\.self_attn\\.q_proj");
  for (const auto& [m, f] : p.modules) r.prepend_exact(m, f);
  EXPECT_FALSE(r.format_for("model.layers.0.self_attn.q_proj").has_value());
  EXPECT_EQ(r.format_for("model.layers.1.self_attn.q_proj")->name(), "q8_0");
  EXPECT_EQ(r.format_for("model.layers.1.mlp.down_proj")->name(), "q6_k");
}

TEST(GgufMix, UnknownMixIsRefusedWithTheList) {
  EXPECT_FALSE(parse_gguf_mix("q4_k").has_value());
  try {
    parse_gguf_mix("gguf:IQ2_XS");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K_M"), std::string::npos) << e.what();
  }
}

TEST(GgufMix, Q2KQ3KAndIq4MixesOnHidden576) {
  const ModelSpec s = smollm2_like();  // n_gqa 3, 30 layers
  auto plan = [&](const char* name) {
    const auto mix = parse_gguf_mix(name);
    return std::make_pair(*mix, plan_gguf(s, mix->base, &*mix));
  };
  {  // Q2_K: attn_v, ffn_down, attn_output Q3_K (n_gqa < 4); 576 columns Q2_K/Q3_K -> Q4_0
    const auto [m, p] = plan("gguf:Q2_K");
    EXPECT_EQ(m.file_type, 10u);
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.q_proj"), "q4_0");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.v_proj"), "q4_0");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.o_proj"), "q4_0");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.mlp.down_proj"), "q3_k");  // 1536 divides
    EXPECT_EQ(p.dense.at("model.embed_tokens.weight"), "q8_0");
  }
  {  // Q3_K_L: attn_v, ffn_down, attn_output Q5_K
    const auto [m, p] = plan("gguf:Q3_K_L");
    EXPECT_EQ(m.file_type, 13u);
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.v_proj"), "q5_1");  // Q5_K -> Q5_1
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.mlp.down_proj"), "q5_k");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.mlp.up_proj"), "q4_0");
  }
  {  // Q3_K_S: Q3_K throughout
    const auto [m, p] = plan("gguf:Q3_K_S");
    EXPECT_EQ(m.file_type, 11u);
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.mlp.down_proj"), "q3_k");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.v_proj"), "q4_0");
  }
  {  // IQ4_XS: -> IQ4_NL on 576 columns; ffn_down Q5_K in the first n/8 layers
    const auto [m, p] = plan("gguf:IQ4_XS");
    EXPECT_EQ(m.file_type, 30u);
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.q_proj"), "iq4_nl");
    EXPECT_EQ(type_of(p, m.base, "model.layers.2.mlp.down_proj"), "q5_k");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.mlp.down_proj"), "iq4_xs");
    EXPECT_EQ(p.dense.at("model.embed_tokens.weight"), "q8_0");
  }
  {  // IQ4_NL: 32-blocks divide 576
    const auto [m, p] = plan("gguf:IQ4_NL");
    EXPECT_EQ(m.file_type, 25u);
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.q_proj"), "iq4_nl");
    EXPECT_EQ(type_of(p, m.base, "model.layers.3.self_attn.v_proj"), "iq4_nl");
  }
}

TEST(GgufMix, ImatrixRulesForCalibratedMethods) {
  // llama-quantize --imatrix: Q4_0's first n/8 ffn_down Q4_1; IQ4_XS's stay IQ4_XS.
  const ModelSpec s = smollm2_like();
  const auto q40 = parse_gguf_mix("gguf:Q4_0");
  EXPECT_EQ(type_of(plan_gguf(s, q40->base, &*q40, true), q40->base, "model.layers.2.mlp.down_proj"), "q4_1");
  EXPECT_EQ(type_of(plan_gguf(s, q40->base, &*q40, true), q40->base, "model.layers.3.mlp.down_proj"), "q4_0");
  EXPECT_EQ(type_of(plan_gguf(s, q40->base, &*q40, false), q40->base, "model.layers.2.mlp.down_proj"), "q4_0");
  const auto xs = parse_gguf_mix("gguf:IQ4_XS");
  EXPECT_EQ(type_of(plan_gguf(s, xs->base, &*xs, true), xs->base, "model.layers.2.mlp.down_proj"), "iq4_xs");
}

TEST(GgufMix, NoBlockDividesMeansF16) {
  // 80 columns: not even 32 divides them, so llama-quantize stores ffn_down as F16 (whatever
  // the source dtype); the GGUF writer is told so through `dense`.
  ModelSpec s = smollm2_like();
  s.intermediate_size = 80;
  const auto mix = parse_gguf_mix("gguf:Q4_K_M");
  const GgufPlan p = plan_gguf(s, mix->base, &*mix);
  EXPECT_EQ(type_of(p, mix->base, "model.layers.3.mlp.down_proj"), "f16");
  EXPECT_EQ(p.dense.at("model.layers.3.mlp.down_proj.weight"), "f16");
  EXPECT_EQ(p.dense.count("model.layers.3.mlp.up_proj.weight"), 0u);
}
