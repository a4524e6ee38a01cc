// gguf_arch's HF -> llama.cpp tensor names (gguf-py tensor_mapping.py) and the experts'
// slots in their stacked tensors. llama.cpp loading the files is export_gguf_families.
#include <gtest/gtest.h>

#include "core/error.h"
#include "export/gguf_arch.h"

using namespace qshard;
using namespace qshard::exporting;

TEST(GgufArch, TensorNamesOfEveryFamily) {
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.q_proj.bias"), "blk.3.attn_q.bias");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.self_attn.k_norm.weight"), "blk.0.attn_k_norm.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.block_sparse_moe.gate.weight"), "blk.1.ffn_gate_inp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.mlp.gate.weight"), "blk.1.ffn_gate_inp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.mlp.gate_proj.weight"), "blk.1.ffn_gate.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.2.mlp.shared_expert.down_proj.weight"), "blk.2.ffn_down_shexp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.2.mlp.shared_expert_gate.weight"), "blk.2.ffn_gate_inp_shexp.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.2.mlp.experts.0.up_proj.weight"), "");  // a slot, below
  EXPECT_EQ(gguf_tensor_name("model.visual.proj.weight"), "");
}

TEST(GgufArch, ExpertSlots) {
  const auto q = gguf_expert_slot("model.layers.7.mlp.experts.12.down_proj.weight");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->name, "blk.7.ffn_down_exps.weight");
  EXPECT_EQ(q->expert, 12);
  const auto m = gguf_expert_slot("model.layers.0.block_sparse_moe.experts.3.w3.weight");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, "blk.0.ffn_up_exps.weight");  // w3 is up, w2 down, w1 gate
  EXPECT_EQ(m->expert, 3);
  EXPECT_FALSE(gguf_expert_slot("model.layers.0.mlp.shared_expert.up_proj.weight"));
  EXPECT_FALSE(gguf_expert_slot("model.layers.0.mlp.experts.x.up_proj.weight"));
  EXPECT_FALSE(gguf_expert_slot("model.layers.0.mlp.experts.1.up_proj.bias"));
}

TEST(GgufArch, StackedExpertsKeepOrderAndRefuseMixedTypes) {
  ExpertStacks s;
  s.add({"blk.0.ffn_up_exps.weight", 1}, {2, 32}, GgmlType::Q8_0, GgufExtent{"spool", 68, {}});
  s.add({"blk.0.ffn_up_exps.weight", 0}, {2, 32}, GgmlType::Q8_0, GgufExtent{"spool", 0, {}});
  GgufFile f;
  EXPECT_NO_THROW(s.write(f, 2));
  ExpertStacks bad;
  bad.add({"blk.0.ffn_up_exps.weight", 0}, {2, 32}, GgmlType::Q8_0, GgufExtent{"spool", 0, {}});
  bad.add({"blk.0.ffn_up_exps.weight", 1}, {2, 32}, GgmlType::F32, GgufExtent{"spool", 68, {}});
  try {
    bad.write(f, 2);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_up_exps.weight stacks every expert"), std::string::npos) << e.what();
  }
}

// Experts a --recipe/--skip splits are refused before any work (docs/errors.md row 69),
// not only when the stacks are written at the end; the shared expert is no stack.
TEST(GgufArch, ExpertFormatsCheckedBeforeQuantizing) {
  ModelSpec s;
  s.arch = Arch::Qwen2Moe;
  s.model_type = "qwen2_moe";
  s.num_layers = 2;
  s.hidden_size = 64;
  s.num_experts = 2;
  s.moe_intermediate_size = 32;
  s.shared_expert_intermediate_size = 64;
  const QuantFormat q4_0 = QuantFormat::parse("q4_0", 0, true), q4_k = QuantFormat::parse("q4_k", 0, true);
  const auto all = [](QuantFormat f) { return [f](const std::string&) { return std::optional<QuantFormat>(f); }; };
  EXPECT_NO_THROW(check_gguf_expert_formats(ExportKind::Gguf, s, all(q4_0)));
  EXPECT_NO_THROW(check_gguf_expert_formats(ExportKind::FakeQuant, s, all(q4_k)));
  try {
    check_gguf_expert_formats(ExportKind::Gguf, s, all(q4_k));
    ADD_FAILURE() << "K type on experts not refused";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("32-block types only"), std::string::npos) << e.what();
  }
  const auto skip_one = [&](const std::string& m) {
    return m == "model.layers.1.mlp.experts.1.up_proj" ? std::nullopt : std::optional<QuantFormat>(q4_0);
  };
  try {
    check_gguf_expert_formats(ExportKind::Gguf, s, skip_one);
    ADD_FAILURE() << "experts of one layer in two formats not refused";
  } catch (const InputError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("blk.1.ffn_up_exps.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("model.layers.1.mlp.experts.1.up_proj is not quantized"), std::string::npos) << w;
  }
  const auto shared_dense = [&](const std::string& m) {
    return m.find("shared_expert") != std::string::npos ? std::nullopt : std::optional<QuantFormat>(q4_0);
  };
  EXPECT_NO_THROW(check_gguf_expert_formats(ExportKind::Gguf, s, shared_dense));
}
