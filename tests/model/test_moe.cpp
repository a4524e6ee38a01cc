// Top-k routing (model/moe.h) against hand-computed softmax weights.
#include <gtest/gtest.h>

#include <cmath>

#include "model/architecture.h"
#include "model/moe.h"

using namespace qshard;

namespace {

Tensor logits_of(std::vector<float> v, int64_t experts) {
  Tensor t = Tensor::zeros(DType::F32, {int64_t(v.size()) / experts, experts});
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

}  // namespace

TEST(MoeRouting, TopKOfSoftmaxRenormalizedOrNot) {
  // token 0 prefers expert 2 then 0; token 1 prefers 1 then 3.
  const Tensor l = logits_of({1.0f, -1.0f, 2.0f, 0.0f, 0.0f, 3.0f, -2.0f, 1.0f}, 4);
  const double z0 = std::exp(1.0) + std::exp(-1.0) + std::exp(2.0) + 1.0;
  const Routing raw = route_tokens(l, 2, false);
  ASSERT_EQ(raw.rows.size(), 4u);
  EXPECT_EQ(raw.rows[0], (std::vector<int64_t>{0}));
  EXPECT_EQ(raw.rows[1], (std::vector<int64_t>{1}));
  EXPECT_EQ(raw.rows[2], (std::vector<int64_t>{0}));
  EXPECT_EQ(raw.rows[3], (std::vector<int64_t>{1}));
  EXPECT_NEAR(raw.weights[2][0], std::exp(2.0) / z0, 1e-6);
  EXPECT_NEAR(raw.weights[0][0], std::exp(1.0) / z0, 1e-6);
  const Routing norm = route_tokens(l, 2, true);
  EXPECT_NEAR(norm.weights[2][0], std::exp(2.0) / (std::exp(2.0) + std::exp(1.0)), 1e-6);
  EXPECT_NEAR(norm.weights[2][0] + norm.weights[0][0], 1.0, 1e-6);
}

TEST(MoeRouting, TiesGoToTheLowerExpertAndRowsAscend) {
  const Tensor l = logits_of({0.5f, 0.5f, 0.5f, 1.0f, 0.0f, 1.0f}, 3);
  const Routing r = route_tokens(l, 1, true);
  EXPECT_EQ(r.rows[0], (std::vector<int64_t>{0, 1}));  // token 1: experts 0 and 2 tie
  EXPECT_TRUE(r.rows[1].empty());
  EXPECT_TRUE(r.rows[2].empty());
  EXPECT_FLOAT_EQ(r.weights[0][1], 1.0f);
}

TEST(MoeRouting, GatherAndScatterRows) {
  const Tensor x = logits_of({1, 2, 3, 4, 5, 6}, 2);  // 3 rows
  const Tensor g = gather_rows(x, {2, 0});
  EXPECT_EQ(g.shape(), (Shape{2, 2}));
  EXPECT_EQ(g.data<float>()[0], 5.0f);
  const Tensor s = scatter_rows(g, {2, 0}, 3);
  EXPECT_EQ(s.data<float>()[4], 5.0f);
  EXPECT_EQ(s.data<float>()[2], 0.0f);  // row 1 not routed: zero
  EXPECT_EQ(s.data<float>()[1], 2.0f);
}

TEST(ArchitectureTable, MoeLayersExpandExpertsKindByKind) {
  ModelSpec s;
  s.arch = Arch::Qwen2Moe;
  s.hidden_size = 8;
  s.num_experts = 2;
  s.moe_intermediate_size = 4;
  s.shared_expert_intermediate_size = 6;
  std::vector<std::string> names;
  for (const LinearSlot& l : layer_linears(s)) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.1.gate_proj",
                       "mlp.experts.1.up_proj", "mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                       "mlp.experts.0.down_proj", "mlp.experts.1.down_proj", "mlp.shared_expert.down_proj"}));
  const auto groups = layer_groups(s);
  for (size_t i = 1; i < groups.size(); ++i) EXPECT_LT(groups[i - 1].id(), groups[i].id()) << i;
  const auto dense = dense_linears(s);
  ASSERT_EQ(dense.size(), 2u);
  EXPECT_STREQ(dense[0].name, "mlp.gate");
  EXPECT_STREQ(dense[1].name, "mlp.shared_expert_gate");
  s.arch = Arch::Mixtral;
  s.shared_expert_intermediate_size = 0;
  EXPECT_EQ(layer_linears(s)[4].name, "block_sparse_moe.experts.0.w1");
  EXPECT_EQ(layer_linears(s)[5].name, "block_sparse_moe.experts.0.w3");
  EXPECT_EQ(layer_linears(s).back().name, "block_sparse_moe.experts.1.w2");
  EXPECT_STREQ(dense_linears(s)[0].name, "block_sparse_moe.gate");
}

// The AWQ / SmoothQuant pairs (awq_layer.cpp folds them in this order): a dense layer's
// four; an MoE layer's one post_attention_layernorm pair over every expert's gate/up (and
// the shared expert's) with the routers taking the scale, then one up->down per expert.
TEST(ArchitectureTable, ScalingPairsShareOneMlpScaleOverExperts) {
  ModelSpec s;
  s.arch = Arch::Llama;
  s.hidden_size = 8;
  s.n_heads = 2;
  s.n_kv_heads = 2;
  s.head_dim = 4;
  s.intermediate_size = 12;
  auto what = [&] {
    std::vector<std::string> w;
    for (const ScalingPair& p : scaling_pairs(s)) w.push_back(p.what);
    return w;
  };
  EXPECT_EQ(what(), (std::vector<std::string>{"input_layernorm->q,k,v", "v->o", "post_attention_layernorm->gate,up",
                                              "up->down"}));
  const auto dense = scaling_pairs(s);
  EXPECT_EQ(dense[1].prev_linear, 2);  // v
  EXPECT_EQ(dense[3].prev_linear, 5);  // up
  EXPECT_EQ(dense[2].balance, (std::vector<size_t>{4, 5}));
  s.n_kv_heads = 1;  // GQA: v's rows are not o's columns one to one
  EXPECT_EQ(what().size(), 3u);
  s.arch = Arch::Qwen2Moe;
  s.num_experts = 2;
  s.moe_intermediate_size = 4;
  s.shared_expert_intermediate_size = 6;
  EXPECT_EQ(what(), (std::vector<std::string>{"input_layernorm->q,k,v",
                                              "post_attention_layernorm->experts' gate,up and router",
                                              "up->down[expert 0]", "up->down[expert 1]",
                                              "up->down[shared expert]"}));
  const auto moe = scaling_pairs(s);
  EXPECT_EQ(moe[1].balance, (std::vector<size_t>{4, 5, 6, 7, 8, 9}));  // every gate/up, shared too
  EXPECT_EQ(moe[1].norm, &LayerWeights::post_attention_norm);
  EXPECT_EQ(moe[1].dense, (std::vector<LinearWeights LayerWeights::*>{&LayerWeights::router,
                                                                        &LayerWeights::shared_gate}));
  EXPECT_EQ(moe[2].balance, (std::vector<size_t>{10}));  // expert 0's down ...
  EXPECT_EQ(moe[2].prev_linear, 5);                       // ... after its up
  EXPECT_EQ(moe[4].prev_linear, 9);                       // the shared expert's up
  EXPECT_EQ(moe[4].expert, kSharedExpert);
}
