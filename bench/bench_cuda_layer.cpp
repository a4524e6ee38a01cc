// One decoder layer at Llama-3-70B geometry on one GPU: what `qshard quantize --device cuda`
// does per layer, timed step by step, with the peak GPU memory and the ×80-layer estimate.
//
//   bench_cuda_layer [--methods rtn,gptq] [--windows 128] [--seqlen 2048] [--layers 80]
//                    [--hidden 8192] [--intermediate 28672] [--heads 64] [--kv-heads 8]
//                    [--head-dim 128] [--batch-tokens 2048] [--math bf16|tf32|fp32]
//   bench_cuda_layer --gptq-only OUT IN [--tokens N]   (one GPTQ, one line; for
//                    bench/bench_cuda_gptq_torch.py)
//
// Synthetic bf16-valued weights N(0, 0.02²) and calibration activations N(0, 1) with
// outlier input channels (every 61st ×12), generated on the GPU from fixed seeds.
// gptq = the true-sequential loop: per linear group a statistics forward up to the
// group's input (Hessian SSYRK), GPTQ int4 g128 of its linears; then one forward of the
// whole layer. rtn = RTN int4 g128 of the 7 linears and the forward. Dequantized weights
// are not written back (timing does not depend on the values). AWQ: see the hook below.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_cuda_synth.h"
#include "core/error.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_info.h"
#include "quant/cuda/gptq_cuda.h"

using namespace qshard;

namespace {

struct Config {
  int64_t hidden = 8192, inter = 28672, heads = 64, kv_heads = 8, head_dim = 128;
  int64_t windows = 128, seqlen = 2048, batch_tokens = 2048, layers = 80;
  std::string methods = "rtn,gptq", math = "bf16";
  int64_t gptq_out = 0, gptq_in = 0, gptq_tokens = 4096;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Linear {
  const char* name;
  Tensor w;  // device F32 [out, in]
};

enum Group { kQKV = 0, kO = 1, kGateUp = 2, kDown = 3, kNone = 4 };

class BenchLayer {
 public:
  BenchLayer(CudaBackend& be, const Config& c) : be_(be), c_(c) {
    auto& ctx = be.context();
    uint64_t seed = 100;
    auto weight = [&](int64_t out, int64_t in) {
      Tensor t = ctx.empty(DType::F32, {out, in});
      bench::fill_normal(t.data<float>(), t.numel(), seed++, 0.02f, in, 0, 0.0f, ctx.stream());
      return t;
    };
    const int64_t qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
    lin_ = {{"q_proj", weight(qd, c.hidden)},     {"k_proj", weight(kvd, c.hidden)},
            {"v_proj", weight(kvd, c.hidden)},    {"o_proj", weight(c.hidden, qd)},
            {"gate_proj", weight(c.inter, c.hidden)}, {"up_proj", weight(c.inter, c.hidden)},
            {"down_proj", weight(c.hidden, c.inter)}};
    norm1_ = be.upload(ones(c.hidden));
    norm2_ = be.upload(ones(c.hidden));
    Tensor cs = Tensor::zeros(DType::F32, {c.seqlen, c.head_dim / 2});
    Tensor sn = Tensor::zeros(DType::F32, {c.seqlen, c.head_dim / 2});
    for (int64_t p = 0; p < c.seqlen; ++p)
      for (int64_t i = 0; i < c.head_dim / 2; ++i) {
        const double a = double(p) / std::pow(500000.0, 2.0 * double(i) / double(c.head_dim));
        cs.data<float>()[p * (c.head_dim / 2) + i] = float(std::cos(a));
        sn.data<float>()[p * (c.head_dim / 2) + i] = float(std::sin(a));
      }
    cos_ = be.upload(cs);
    sin_ = be.upload(sn);
  }

  std::vector<Linear>& linears() { return lin_; }

  // One batch of windows through the layer, in place on h, stopping after `watch`'s input
  // went into `hess` (statistics passes run on a copy, as the pipeline does).
  void forward(Tensor& h, int64_t windows, Group watch, CudaHessian* hess) {
    const int64_t T = h.dim(0);
    const int64_t qd = c_.heads * c_.head_dim, kvd = c_.kv_heads * c_.head_dim;
    if (!positions_.defined() || positions_.dim(0) != T) {
      Tensor p = Tensor::zeros(DType::I32, {T});
      for (int64_t t = 0; t < T; ++t) p.data<int32_t>()[t] = int32_t(t % c_.seqlen);
      positions_ = be_.upload(p);
    }
    Tensor x = be_.zeros(DType::F32, {T, c_.hidden});
    be_.rmsnorm(h, norm1_, 1e-5f, x);
    if (watch == kQKV) return hess->add(x);
    Tensor q = be_.zeros(DType::F32, {T, qd}), k = be_.zeros(DType::F32, {T, kvd}),
           v = be_.zeros(DType::F32, {T, kvd});
    be_.linear(x, lin_[0].w, nullptr, q);
    be_.linear(x, lin_[1].w, nullptr, k);
    be_.linear(x, lin_[2].w, nullptr, v);
    be_.rope(q, c_.heads, c_.head_dim, cos_, sin_, positions_);
    be_.rope(k, c_.kv_heads, c_.head_dim, cos_, sin_, positions_);
    Tensor a = be_.zeros(DType::F32, {T, qd});
    be_.attention(q, k, v, {windows, c_.seqlen, c_.heads, c_.kv_heads, c_.head_dim},
                  1.0f / std::sqrt(float(c_.head_dim)), a);
    if (watch == kO) return hess->add(a);
    be_.linear(a, lin_[3].w, nullptr, x);
    be_.add_inplace(h, x);
    be_.rmsnorm(h, norm2_, 1e-5f, x);
    if (watch == kGateUp) return hess->add(x);
    Tensor g = be_.zeros(DType::F32, {T, c_.inter}), u = be_.zeros(DType::F32, {T, c_.inter});
    be_.linear(x, lin_[4].w, nullptr, g);
    be_.linear(x, lin_[5].w, nullptr, u);
    be_.silu_mul(g, u, g);
    if (watch == kDown) return hess->add(g);
    be_.linear(g, lin_[6].w, nullptr, x);
    be_.add_inplace(h, x);
  }

 private:
  static Tensor ones(int64_t n) {
    Tensor t = Tensor::zeros(DType::F32, {n});
    std::fill(t.data<float>(), t.data<float>() + n, 1.0f);
    return t;
  }
  CudaBackend& be_;
  Config c_;
  std::vector<Linear> lin_;
  Tensor norm1_, norm2_, cos_, sin_, positions_;
};

// Runs every calibration batch through the layer (statistics pass on copies, or the
// final pass in place).
void pass(CudaBackend& be, BenchLayer& L, Tensor& hidden, const Config& c, Group watch,
          CudaHessian* hess) {
  const int64_t per = std::max<int64_t>(1, c.batch_tokens / c.seqlen);
  for (int64_t w0 = 0; w0 < c.windows; w0 += per) {
    const int64_t B = std::min(per, c.windows - w0);
    Tensor rows = hidden.rows(w0 * c.seqlen, (w0 + B) * c.seqlen);
    if (watch == kNone) {
      L.forward(rows, B, kNone, nullptr);
    } else {
      Tensor scratch = be.zeros(DType::F32, rows.shape());
      QS_CUDA_CHECK(cudaMemcpyAsync(scratch.raw(), rows.raw(), rows.nbytes(), cudaMemcpyDeviceToDevice,
                                    be.context().stream()));
      L.forward(scratch, B, watch, hess);
    }
  }
}

int run_gptq_only(CudaBackend& be, const Config& c) {
  auto& ctx = be.context();
  Tensor w = ctx.empty(DType::F32, {c.gptq_out, c.gptq_in});
  bench::fill_normal(w.data<float>(), w.numel(), 1, 0.02f, c.gptq_in, 0, 0.0f, ctx.stream());
  Tensor x = ctx.empty(DType::F32, {c.gptq_tokens, c.gptq_in});
  bench::fill_normal(x.data<float>(), x.numel(), 2, 1.0f, c.gptq_in, 61, 12.0f, ctx.stream());
  CudaHessian hess(be.shared_context(), c.gptq_in);
  hess.add(x);
  const Tensor h = hess.sum_device();
  const auto scheme = Scheme::make(QuantFormat::parse("int4", 128, true));
  gptq_quantize_cuda(ctx, w, h, *scheme, GptqOptions{}, "warmup");
  ctx.sync();
  const double t0 = now();
  gptq_quantize_cuda(ctx, w, h, *scheme, GptqOptions{}, "bench");
  ctx.sync();
  std::printf("gptq out %lld in %lld seconds %.4f\n", (long long)c.gptq_out, (long long)c.gptq_in,
              now() - t0);
  return 0;
}

int run(const Config& c) {
  CudaBackendOptions o;
  o.math = parse_cuda_math(c.math);
  CudaBackend be(o);
  auto& ctx = be.context();
  if (c.gptq_out > 0) return run_gptq_only(be, c);
  const int64_t tokens = c.windows * c.seqlen;
  std::printf("# bench_cuda_layer: hidden %lld, intermediate %lld, heads %lld/%lld, head_dim %lld; "
              "%lld x %lld calibration tokens, batches of %lld; linear math %s\n",
              (long long)c.hidden, (long long)c.inter, (long long)c.heads, (long long)c.kv_heads,
              (long long)c.head_dim, (long long)c.windows, (long long)c.seqlen,
              (long long)c.batch_tokens, c.math.c_str());
  std::printf("# device: %s\n", cuda_describe().c_str());
  BenchLayer L(be, c);
  Tensor hidden = ctx.empty(DType::F32, {tokens, c.hidden});
  bench::fill_normal(hidden.data<float>(), hidden.numel(), 7, 1.0f, c.hidden, 61, 12.0f, ctx.stream());
  ctx.sync();
  const auto scheme = Scheme::make(QuantFormat::parse("int4", 128, true));
  std::printf("# %-10s %-28s %10s\n", "method", "step", "seconds");
  std::map<std::string, std::pair<double, size_t>> totals;
  std::stringstream ms(c.methods);
  for (std::string m; std::getline(ms, m, ',');) {
    ctx.sync();
    ctx.reset_peak();
    double total = 0;
    auto step = [&](const std::string& what, auto&& fn) {
      ctx.sync();
      const double t0 = now();
      fn();
      ctx.sync();
      const double dt = now() - t0;
      total += dt;
      std::printf("  %-10s %-28s %10.3f\n", m.c_str(), what.c_str(), dt);
    };
    if (m == "rtn") {
      for (auto& l : L.linears())
        step(std::string("rtn ") + l.name, [&] { rtn_quantize_cuda(ctx, l.w, *scheme, ClipSearch{}, l.name); });
    } else if (m == "gptq") {
      const std::vector<std::pair<Group, std::vector<int>>> groups = {
          {kQKV, {0, 1, 2}}, {kO, {3}}, {kGateUp, {4, 5}}, {kDown, {6}}};
      for (const auto& [g, members] : groups) {
        const int64_t in = L.linears()[size_t(members[0])].w.dim(1);
        std::unique_ptr<CudaHessian> hess;
        step(std::string("stats pass ") + L.linears()[size_t(members[0])].name, [&] {
          hess = std::make_unique<CudaHessian>(be.shared_context(), in);
          pass(be, L, hidden, c, g, hess.get());
        });
        const Tensor h = hess->sum_device();
        for (int i : members) {
          Linear& l = L.linears()[size_t(i)];
          step(std::string("gptq ") + l.name, [&] { gptq_quantize_cuda(ctx, l.w, h, *scheme, GptqOptions{}, l.name); });
        }
      }
    } else if (m == "awq" || m == "awq-joint") {
      // Hook: AWQ (being written on the CPU by another helper) would run here, between
      // the statistics pass of each group and its quantization, on the same device Hessian
      // inputs; nothing to time until it exists.
      std::printf("  %-10s not implemented on the GPU yet (hook in bench_cuda_layer.cpp)\n", m.c_str());
      continue;
    } else {
      fail_input("--methods: unknown method ", m, " (rtn, gptq, awq, awq-joint)");
    }
    step("forward (outputs onward)", [&] { pass(be, L, hidden, c, kNone, nullptr); });
    totals[m] = {total, ctx.peak_bytes()};
  }
  std::printf("# %-10s %12s %16s %14s %16s\n", "method", "layer_s", "x layers_min", "peak_pool_GiB",
              "device_used_GiB");
  for (const auto& [m, v] : totals)
    std::printf("  %-10s %12.2f %16.1f %14.2f %16.2f\n", m.c_str(), v.first,
                v.first * double(c.layers) / 60.0, double(v.second) / double(1ull << 30),
                double(ctx.device_used_bytes()) / double(1ull << 30));
  std::printf("# x layers: layer_s x %lld layers (the checkpoint read and the exports not included)\n",
              (long long)c.layers);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail_input(a, " needs a value");
        return argv[++i];
      };
      auto num = [&]() { return std::stoll(next()); };
      if (a == "--methods") c.methods = next();
      else if (a == "--math") c.math = next();
      else if (a == "--windows") c.windows = num();
      else if (a == "--seqlen") c.seqlen = num();
      else if (a == "--layers") c.layers = num();
      else if (a == "--hidden") c.hidden = num();
      else if (a == "--intermediate") c.inter = num();
      else if (a == "--heads") c.heads = num();
      else if (a == "--kv-heads") c.kv_heads = num();
      else if (a == "--head-dim") c.head_dim = num();
      else if (a == "--batch-tokens") c.batch_tokens = num();
      else if (a == "--tokens") c.gptq_tokens = num();
      else if (a == "--gptq-only") {
        c.gptq_out = num();
        c.gptq_in = num();
      } else fail_input("unknown option ", a, " (see the comment at the top of bench_cuda_layer.cpp)");
    }
    return run(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_layer: %s\n", e.what());
    return 2;
  }
}
