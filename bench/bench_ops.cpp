// Google Benchmark of the CPU backend's decoder ops at the tiny test model's shapes
// (hidden 256, 4/2 heads of 64, intermediate 768, vocab 4096, 16 windows x 256 tokens)
// and at a 7B-class shape (hidden 4096, 32/8 heads of 128, vocab 32000). Wall time,
// since the ops are multithreaded.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace qshard {
namespace {

Backend& cpu() {
  static auto be = make_cpu_backend();
  return *be;
}

Tensor random_tensor(Shape shape, float stddev = 1.0f, uint64_t seed = 1) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(gen);
  return cpu().upload(t);
}

// Real rotation tables: x is rotated in place every iteration, and a table of random
// numbers would shrink it into denormals (slow) or grow it to inf.
void rope_tables(int64_t tokens, int64_t seqlen, int64_t head_dim, Tensor& cos, Tensor& sin,
                 Tensor& pos) {
  const int64_t half = head_dim / 2;
  cos = cpu().zeros(DType::F32, {seqlen, half});
  sin = cpu().zeros(DType::F32, {seqlen, half});
  for (int64_t p = 0; p < seqlen; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(p) * std::pow(10000.0, -double(i) / double(half));
      cos.data<float>()[p * half + i] = float(std::cos(angle));
      sin.data<float>()[p * half + i] = float(std::sin(angle));
    }
  pos = cpu().zeros(DType::I32, {tokens});
  for (int64_t i = 0; i < tokens; ++i) pos.data<int32_t>()[i] = int32_t(i % seqlen);
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: tokens, in_features, out_features.
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Tensor x = random_tensor({m, k}), w = random_tensor({n, k}, 0.05f, 2);
  Tensor y = cpu().zeros(DType::F32, {m, n});
  for (auto _ : state) cpu().linear(x, w, nullptr, y);
  state.SetItemsProcessed(state.iterations() * m);
  set_flops(state, 2.0 * double(m) * double(n) * double(k));
}
BENCHMARK(BM_Linear)
    ->ArgNames({"tokens", "in", "out"})
    ->Args({4096, 256, 256})     // tiny q/o proj
    ->Args({4096, 256, 768})     // tiny gate/up proj
    ->Args({4096, 768, 256})     // tiny down proj
    ->Args({4096, 256, 4096})    // tiny lm_head
    ->Args({256, 4096, 4096})    // 4096-hidden q/o proj
    ->Args({256, 4096, 11008})   // 4096-hidden gate/up proj
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Args: batch (windows), seqlen, n_heads, n_kv_heads, head_dim.
void BM_Attention(benchmark::State& state) {
  const AttentionShape s{state.range(0), state.range(1), state.range(2), state.range(3),
                         state.range(4)};
  const int64_t tokens = s.batch * s.seqlen;
  Tensor q = random_tensor({tokens, s.n_heads * s.head_dim}, 1.0f, 3);
  Tensor k = random_tensor({tokens, s.n_kv_heads * s.head_dim}, 1.0f, 4);
  Tensor v = random_tensor({tokens, s.n_kv_heads * s.head_dim}, 1.0f, 5);
  Tensor out = cpu().zeros(DType::F32, {tokens, s.n_heads * s.head_dim});
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  for (auto _ : state) cpu().attention(q, k, v, s, scale, out);
  state.SetItemsProcessed(state.iterations() * tokens);
  // The useful (causal) work: QKᵀ and PV over the lower triangle.
  set_flops(state, 2.0 * 2.0 * double(s.batch * s.n_heads * s.head_dim) *
                       double(s.seqlen) * double(s.seqlen + 1) / 2.0);
}
BENCHMARK(BM_Attention)
    ->ArgNames({"batch", "seqlen", "heads", "kv_heads", "head_dim"})
    ->Args({16, 256, 4, 2, 64})
    ->Args({1, 2048, 32, 8, 128})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Args: tokens, hidden.
void BM_RmsNorm(benchmark::State& state) {
  const int64_t m = state.range(0), d = state.range(1);
  Tensor x = random_tensor({m, d}), w = random_tensor({d}, 1.0f, 6);
  Tensor y = cpu().zeros(DType::F32, {m, d});
  for (auto _ : state) cpu().rmsnorm(x, w, 1e-5f, y);
  state.SetItemsProcessed(state.iterations() * m * d);
}
BENCHMARK(BM_RmsNorm)
    ->ArgNames({"tokens", "hidden"})
    ->Args({4096, 256})
    ->Args({4096, 4096})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Args: tokens, n_heads, head_dim.
void BM_Rope(benchmark::State& state) {
  const int64_t t = state.range(0), h = state.range(1), d = state.range(2);
  Tensor x = random_tensor({t, h * d}), cos, sin, pos;
  rope_tables(t, 256, d, cos, sin, pos);
  for (auto _ : state) cpu().rope(x, h, d, cos, sin, pos);
  state.SetItemsProcessed(state.iterations() * t * h * d);
}
BENCHMARK(BM_Rope)
    ->ArgNames({"tokens", "heads", "head_dim"})
    ->Args({4096, 4, 64})
    ->Args({4096, 32, 128})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Args: tokens, vocab.
void BM_LogSoftmax(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  Tensor x = random_tensor({m, n}, 3.0f), y = cpu().zeros(DType::F32, {m, n});
  for (auto _ : state) cpu().log_softmax(x, y);
  state.SetItemsProcessed(state.iterations() * m * n);
}
BENCHMARK(BM_LogSoftmax)
    ->ArgNames({"tokens", "vocab"})
    ->Args({4096, 4096})
    ->Args({1024, 32000})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Args: tokens, intermediate.
void BM_SiluMul(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  Tensor g = random_tensor({m, n}), u = random_tensor({m, n}, 1.0f, 9);
  Tensor out = cpu().zeros(DType::F32, {m, n});
  for (auto _ : state) cpu().silu_mul(g, u, out);
  state.SetItemsProcessed(state.iterations() * m * n);
}
BENCHMARK(BM_SiluMul)
    ->ArgNames({"tokens", "inter"})
    ->Args({4096, 768})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The tiny model's forward, op for op as transformers' LlamaForCausalLM runs it, to
// time the ops together (OpenMP and OpenBLAS handing the cores back and forth) rather
// than each alone. Random weights: only the shapes matter here.
struct TinyForward {
  static constexpr int64_t hidden = 256, heads = 4, kv_heads = 2, head_dim = 64;
  static constexpr int64_t inter = 768, vocab = 4096, n_layers = 4;
  struct Layer {
    Tensor norm1, wq, wk, wv, wo, norm2, wg, wu, wd;
  };
  AttentionShape shape;
  int64_t t;
  std::vector<Layer> layers;
  Tensor embed, tokens, norm, lm_head, cos, sin, pos;
  Tensor x, h, q, k, v, attn, gate, up, logits;

  TinyForward(int64_t batch, int64_t seqlen)
      : shape{batch, seqlen, heads, kv_heads, head_dim}, t(batch * seqlen) {
    Backend& be = cpu();
    uint64_t seed = 100;
    auto w = [&](int64_t n, int64_t k) { return random_tensor({n, k}, 0.05f, seed++); };
    for (int64_t l = 0; l < n_layers; ++l)
      layers.push_back({random_tensor({hidden}, 1.0f, seed++), w(heads * head_dim, hidden),
                        w(kv_heads * head_dim, hidden), w(kv_heads * head_dim, hidden),
                        w(hidden, heads * head_dim), random_tensor({hidden}, 1.0f, seed++),
                        w(inter, hidden), w(inter, hidden), w(hidden, inter)});
    embed = Tensor::zeros(DType::BF16, {vocab, hidden});  // a checkpoint's dtype
    tokens = Tensor::zeros(DType::I32, {t});
    for (int64_t i = 0; i < t; ++i) tokens.data<int32_t>()[i] = int32_t(i * 7919 % vocab);
    norm = random_tensor({hidden}, 1.0f, seed++);
    lm_head = w(vocab, hidden);
    rope_tables(t, seqlen, head_dim, cos, sin, pos);
    x = be.zeros(DType::F32, {t, hidden}), h = be.zeros(DType::F32, {t, hidden});
    q = be.zeros(DType::F32, {t, heads * head_dim}), attn = be.zeros(DType::F32, {t, heads * head_dim});
    k = be.zeros(DType::F32, {t, kv_heads * head_dim}), v = be.zeros(DType::F32, {t, kv_heads * head_dim});
    gate = be.zeros(DType::F32, {t, inter}), up = be.zeros(DType::F32, {t, inter});
    logits = be.zeros(DType::F32, {t, vocab});
  }

  void layer(const Layer& p) {
    Backend& be = cpu();
    be.rmsnorm(x, p.norm1, 1e-5f, h);
    be.linear(h, p.wq, nullptr, q);
    be.linear(h, p.wk, nullptr, k);
    be.linear(h, p.wv, nullptr, v);
    be.rope(q, heads, head_dim, cos, sin, pos);
    be.rope(k, kv_heads, head_dim, cos, sin, pos);
    be.attention(q, k, v, shape, 0.125f, attn);
    be.linear(attn, p.wo, nullptr, h);
    be.add_inplace(x, h);
    be.rmsnorm(x, p.norm2, 1e-5f, h);
    be.linear(h, p.wg, nullptr, gate);
    be.linear(h, p.wu, nullptr, up);
    be.silu_mul(gate, up, gate);
    be.linear(gate, p.wd, nullptr, h);
    be.add_inplace(x, h);
  }

  void forward() {
    Backend& be = cpu();
    be.embedding(embed, tokens, x);
    for (const Layer& p : layers) layer(p);
    be.rmsnorm(x, norm, 1e-5f, h);
    be.linear(h, lm_head, nullptr, logits);
    be.log_softmax(logits, logits);
  }
};

// Args: batch (windows), seqlen.
void BM_DecoderLayerTiny(benchmark::State& state) {
  TinyForward m(state.range(0), state.range(1));
  for (auto _ : state) {
    m.layer(m.layers[0]);
    // Keep the residual stream from growing without bound across iterations.
    cpu().rmsnorm(m.x, m.norm, 1e-5f, m.x);
  }
  state.SetItemsProcessed(state.iterations() * m.t);
}
BENCHMARK(BM_DecoderLayerTiny)
    ->ArgNames({"batch", "seqlen"})
    ->Args({16, 256})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Embedding, 4 layers, final norm, lm_head and log_softmax: what perplexity runs.
void BM_ForwardTiny(benchmark::State& state) {
  TinyForward m(state.range(0), state.range(1));
  for (auto _ : state) m.forward();
  state.SetItemsProcessed(state.iterations() * m.t);
}
BENCHMARK(BM_ForwardTiny)
    ->ArgNames({"batch", "seqlen"})
    ->Args({16, 256})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace qshard

BENCHMARK_MAIN();
