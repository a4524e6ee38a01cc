// Op-by-op: every CUDA op against the CPU reference backend on the same seeded inputs,
// each with a named tolerance and the reason for it (style.md item 2), plus the GPU
// quantizers against the CPU ones (Hessian, GPTQ with its Cholesky/inverse factor, RTN
// for every scheme row). Skips (GTEST_SKIP, shown as skipped by CTest) without a GPU;
// the factory tests at the bottom run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu_test_util.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/gptq.h"
#include "quant/quant_device.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {
namespace {

using test::host_f32;
using test::host_i32;
using test::Rng;

// ---- tolerances: max |gpu − cpu| / max |cpu| over the output (a normalized max error)
// fp32 GEMM: cuBLAS and OpenBLAS sum in different orders; K ≤ 512 terms of O(1).
constexpr double kTolLinearFp32 = 1e-5;
// TF32 rounds inputs to 10 mantissa bits (2^-11 relative), errors average over K.
constexpr double kTolLinearTf32 = 5e-3;
// bf16 inputs carry 8 bits (2^-9 relative per product); fp32 accumulation.
constexpr double kTolLinearBf16 = 1e-2;
// Sum of squares in a different order (both double); the rest is the same fp32 ops.
constexpr double kTolRmsnorm = 1e-5;
// Same fp32 operations without FMA: only a last-bit difference could come from the table.
constexpr double kTolRope = 1e-6;
// expf (CUDA, ≤ 2 ulp) vs the CPU's exp_approx (≤ 2 ulp), online vs two-pass softmax.
constexpr double kTolAttention = 1e-4;
// expf and exp_approx are each within ~2 ulp, so SiLU may differ by a few ulp.
constexpr double kTolSilu = 4e-6;
// fp32 max and double sum in a different order; output is O(log vocab).
constexpr double kTolLogSoftmax = 1e-5;
// SSYRK in fp32 in another order, over 300 tokens.
constexpr double kTolHessian = 1e-5;
// GPTQ codes may flip where a value sits on a rounding tie after differently-ordered
// GEMM updates (style.md item 3): at least this share must be identical...
constexpr double kMinIdenticalCodes = 0.99;
// ...and the output error ‖ΔW X‖² may not be worse than the CPU's by more than this.
constexpr double kMaxReconRatio = 1.02;

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::usable_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
    cpu_ = make_cpu_backend();
    CudaBackendOptions o;
    o.math = CudaMath::Fp32;
    gpu_ = std::make_unique<CudaBackend>(o);
  }

  Tensor up(const Tensor& host) { return gpu_->upload(host); }
  std::vector<float> down(const Tensor& t) { return test::values_of(*gpu_, t); }

  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<CudaBackend> gpu_;
};

// Checks gpu against cpu: no NaN, not all zero, normalized max error within tol.
void expect_close(const std::vector<float>& cpu, const std::vector<float>& gpu, double tol,
                  const char* op) {
  ASSERT_EQ(cpu.size(), gpu.size()) << op;
  double amax = 0, err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_FALSE(std::isnan(gpu[i])) << op << ": NaN at " << i;
    amax = std::max(amax, std::fabs(double(cpu[i])));
    const double e = std::fabs(double(gpu[i]) - double(cpu[i]));
    if (e > err) err = e, worst = i;
  }
  ASSERT_GT(amax, 0.0) << op << ": reference output is all zero";
  EXPECT_LE(err / amax, tol) << op << ": worst element " << worst << " cpu " << cpu[worst]
                             << " gpu " << gpu[worst];
}

std::vector<float> host_values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

// ---------------------------------------------------------------- ops
TEST_F(CudaOps, LinearWithBiasAtEachMathMode) {
  Rng rng(1);
  const int64_t m = 37, n = 129, k = 257;  // off every tile edge
  const Tensor x = host_f32({m, k}, rng.normal(size_t(m * k)));
  const Tensor w = host_f32({n, k}, rng.normal(size_t(n * k), 0.05f));
  const Tensor b = host_f32({n}, rng.normal(size_t(n)));
  Tensor yc = cpu_->zeros(DType::F32, {m, n});
  const Tensor bc = cpu_->upload(b);
  cpu_->linear(cpu_->upload(x), cpu_->upload(w), &bc, yc);
  const std::vector<float> ref = host_values(yc);
  const Tensor xg = up(x), wg = up(w), bg = up(b);
  for (auto [math, tol] : {std::pair{CudaMath::Fp32, kTolLinearFp32}, {CudaMath::Tf32, kTolLinearTf32},
                           {CudaMath::Bf16, kTolLinearBf16}}) {
    gpu_->set_math(math);
    Tensor yg = gpu_->zeros(DType::F32, {m, n});
    gpu_->linear(xg, wg, &bg, yg);
    expect_close(ref, down(yg), tol, cuda_math_name(math));
  }
  // bf16-stored weights: bf16 × bf16 on the tensor cores.
  const Tensor wb = gpu_->upload_as(w, DType::BF16);
  Tensor yb = gpu_->zeros(DType::F32, {m, n});
  gpu_->linear(xg, wb, &bg, yb);
  expect_close(ref, down(yb), kTolLinearBf16, "linear bf16 weights");
}

TEST_F(CudaOps, LinearWithEmptyInnerDimensionIsTheBias) {
  const Tensor b = host_f32({3}, {1.0f, -2.0f, 3.0f});
  const Tensor bg = up(b);
  Tensor y = gpu_->zeros(DType::F32, {2, 3});
  gpu_->linear(gpu_->zeros(DType::F32, {2, 0}), gpu_->zeros(DType::F32, {3, 0}), &bg, y);
  EXPECT_EQ(down(y), (std::vector<float>{1, -2, 3, 1, -2, 3}));
}

TEST_F(CudaOps, RmsnormInPlaceAndOutOfPlace) {
  Rng rng(2);
  const int64_t rows = 7, dim = 4099;
  const Tensor x = host_f32({rows, dim}, rng.normal(size_t(rows * dim), 3.0f));
  const Tensor w = host_f32({dim}, rng.uniform(size_t(dim), 0.5f, 1.5f));
  Tensor yc = cpu_->zeros(DType::F32, {rows, dim});
  cpu_->rmsnorm(cpu_->upload(x), cpu_->upload(w), 1e-6f, yc);
  Tensor xg = up(x);
  Tensor yg = gpu_->zeros(DType::F32, {rows, dim});
  gpu_->rmsnorm(xg, up(w), 1e-6f, yg);
  expect_close(host_values(yc), down(yg), kTolRmsnorm, "rmsnorm");
  gpu_->rmsnorm(xg, up(w), 1e-6f, xg);  // y aliases x
  expect_close(host_values(yc), down(xg), kTolRmsnorm, "rmsnorm in place");
}

TEST_F(CudaOps, RopeMatchesAndRefusesPositionsOutsideTheTable) {
  Rng rng(3);
  const int64_t tokens = 13, heads = 3, hd = 64, P = 40;
  const Tensor x = host_f32({tokens, heads * hd}, rng.normal(size_t(tokens * heads * hd)));
  const Tensor c = host_f32({P, hd / 2}, rng.uniform(size_t(P * hd / 2), -1, 1));
  const Tensor s = host_f32({P, hd / 2}, rng.uniform(size_t(P * hd / 2), -1, 1));
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (auto& p : pos) p = rng.integer(0, int32_t(P - 1));
  Tensor xc = cpu_->upload(x);
  cpu_->rope(xc, heads, hd, cpu_->upload(c), cpu_->upload(s), cpu_->upload(host_i32(pos)));
  Tensor xg = up(x);
  const Tensor cg = up(c), sg = up(s);
  gpu_->rope(xg, heads, hd, cg, sg, up(host_i32(pos)));
  expect_close(host_values(xc), down(xg), kTolRope, "rope");
  pos[5] = int32_t(P);
  EXPECT_THROW(gpu_->rope(xg, heads, hd, cg, sg, up(host_i32(pos))), Error);
}

struct AttnCase {
  int64_t batch, seqlen, heads, kv_heads, head_dim;
};

TEST_F(CudaOps, CausalGqaAttention) {
  // head_dim 80: not a multiple of the warp; 1 query; MHA and 4:1 GQA; odd lengths.
  for (const AttnCase& c : {AttnCase{2, 37, 8, 2, 64}, AttnCase{1, 1, 4, 4, 128},
                            AttnCase{3, 19, 6, 3, 80}, AttnCase{1, 70, 2, 1, 256}}) {
    Rng rng(uint64_t(4 + c.seqlen));
    const int64_t T = c.batch * c.seqlen;
    const Tensor q = host_f32({T, c.heads * c.head_dim}, rng.normal(size_t(T * c.heads * c.head_dim)));
    const Tensor k = host_f32({T, c.kv_heads * c.head_dim}, rng.normal(size_t(T * c.kv_heads * c.head_dim)));
    const Tensor v = host_f32({T, c.kv_heads * c.head_dim}, rng.normal(size_t(T * c.kv_heads * c.head_dim)));
    const AttentionShape s{c.batch, c.seqlen, c.heads, c.kv_heads, c.head_dim};
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    Tensor oc = cpu_->zeros(DType::F32, q.shape());
    cpu_->attention(cpu_->upload(q), cpu_->upload(k), cpu_->upload(v), s, scale, oc);
    Tensor og = gpu_->zeros(DType::F32, q.shape());
    gpu_->attention(up(q), up(k), up(v), s, scale, og);
    expect_close(host_values(oc), down(og), kTolAttention,
                 ("attention head_dim " + std::to_string(c.head_dim)).c_str());
  }
}

TEST_F(CudaOps, AttentionRefusesHeadsTooWideForTheKernel) {
  const AttentionShape s{1, 2, 1, 1, 288};
  Tensor q = gpu_->zeros(DType::F32, {2, 288});
  Tensor o = gpu_->zeros(DType::F32, {2, 288});
  EXPECT_THROW(gpu_->attention(q, q.rows(0, 2), q, s, 1.0f, o), Error);
}

TEST_F(CudaOps, SiluMulAddAndLogSoftmax) {
  Rng rng(5);
  const int64_t n = 3001;
  const Tensor g = host_f32({n}, rng.normal(size_t(n), 4.0f));
  const Tensor u = host_f32({n}, rng.normal(size_t(n)));
  Tensor oc = cpu_->zeros(DType::F32, {n});
  cpu_->silu_mul(cpu_->upload(g), cpu_->upload(u), oc);
  Tensor og = gpu_->zeros(DType::F32, {n});
  gpu_->silu_mul(up(g), up(u), og);
  expect_close(host_values(oc), down(og), kTolSilu, "silu_mul");

  Tensor ac = cpu_->upload(g), ag = up(g);
  cpu_->add_inplace(ac, cpu_->upload(u));
  gpu_->add_inplace(ag, up(u));
  EXPECT_EQ(host_values(ac), down(ag)) << "add is one rounding on both";

  const int64_t rows = 5, cols = 4097;
  const Tensor x = host_f32({rows, cols}, rng.normal(size_t(rows * cols), 5.0f));
  Tensor lc = cpu_->upload(x);
  cpu_->log_softmax(lc, lc);
  Tensor lg = up(x);
  gpu_->log_softmax(lg, lg);
  expect_close(host_values(lc), down(lg), kTolLogSoftmax, "log_softmax");
}

TEST_F(CudaOps, EmbeddingAndUploadAreExact) {
  Rng rng(6);
  const int64_t V = 50, D = 33;
  const std::vector<float> vals = rng.normal(size_t(V * D));
  Tensor table = Tensor::zeros(DType::BF16, {V, D});
  for (int64_t i = 0; i < V * D; ++i) table.data<uint16_t>()[i] = f32_to_bf16(vals[size_t(i)]);
  const Tensor ids = host_i32({3, 0, 49, 3, 17});
  Tensor ec = cpu_->zeros(DType::F32, {5, D});
  cpu_->embedding(table, ids, ec);
  Tensor eg = gpu_->zeros(DType::F32, {5, D});
  gpu_->embedding(table, ids, eg);
  EXPECT_EQ(host_values(ec), down(eg));
  Tensor one_row = eg.rows(0, 1);
  EXPECT_THROW(gpu_->embedding(table, host_i32({50}), one_row), InputError);
  // bf16 -> f32 upload is a widening, exact; I32 round trips.
  EXPECT_EQ(host_values(table.to_f32()), down(gpu_->upload(table)));
  const Tensor back = gpu_->download(gpu_->upload(ids));
  EXPECT_EQ(std::memcmp(back.raw(), ids.raw(), ids.nbytes()), 0);
}

// ---------------------------------------------------------------- quantization
// Activations with a shared low-rank part, outlier channels and one dead channel.
Tensor make_activations(int64_t tokens, int64_t in, uint64_t seed, int64_t dead_col) {
  Rng rng(seed);
  std::vector<float> x = rng.normal(size_t(tokens * in));
  const std::vector<float> f = rng.normal(size_t(tokens));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < in; ++c) {
      float& v = x[size_t(t * in + c)];
      v += 0.8f * f[size_t(t)] * float((c % 5) - 2);
      if (c % 61 == 7) v *= 12.0f;
      if (c == dead_col) v = 0.0f;
    }
  return host_f32({tokens, in}, x);
}

Tensor make_weight(int64_t out, int64_t in, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w = rng.normal(size_t(out * in), 0.02f);
  for (int k = 0; k < 6; ++k) w[size_t((k * 7919) % (out * in))] = 0.15f * (k % 2 ? -1.0f : 1.0f);
  return host_f32({out, in}, w);
}

// tr(ΔW H ΔWᵀ) in double: the output error the GPTQ objective minimizes.
double recon_error(const Tensor& w, const QuantizedLinear& q, const Tensor& h) {
  const Tensor wq = q.dequantize();
  const int64_t o = w.dim(0), d = w.dim(1);
  double total = 0;
  std::vector<double> dw(static_cast<size_t>(d));
  for (int64_t r = 0; r < o; ++r) {
    for (int64_t j = 0; j < d; ++j)
      dw[size_t(j)] = double(w.data<float>()[r * d + j]) - double(wq.data<float>()[r * d + j]);
    for (int64_t i = 0; i < d; ++i) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j) s += double(h.data<float>()[i * d + j]) * dw[size_t(j)];
      total += dw[size_t(i)] * s;
    }
  }
  return total;
}

double identical_share(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  size_t same = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 1.0 : double(same) / double(a.size());
}

TEST_F(CudaOps, HessianSumMatchesTheCpuAccumulator) {
  const int64_t in = 96;
  const Tensor x = make_activations(300, in, 7, 5);
  HessianAccumulator cpu_acc(in);
  cpu_acc.add(x.rows(0, 150));
  cpu_acc.add(x.rows(150, 300));
  HessianAccumulator gpu_acc(in);
  const Tensor xg = up(x);
  gpu_acc.add(xg.rows(0, 150), gpu_.get());
  gpu_acc.add(xg.rows(150, 300), gpu_.get());
  EXPECT_EQ(gpu_acc.tokens(), 300);
  expect_close(host_values(cpu_acc.sum()), host_values(gpu_acc.sum()), kTolHessian, "hessian");
  // Both triangles, exactly symmetric.
  const float* s = gpu_acc.sum().data<float>();
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(s[i * in + j], s[j * in + i]);
}

struct GptqCase {
  const char* format;
  int64_t group;
  bool act_order, static_groups;
  BlockGptq block = BlockGptq::Columnwise;
  int64_t block_size = 128;
  bool clip = false;
};

class CudaGptq : public CudaOps, public ::testing::WithParamInterface<GptqCase> {};

TEST_P(CudaGptq, MatchesTheCpuQuantizer) {
  const GptqCase& c = GetParam();
  const int64_t out = 67, in = 256;  // rows not a multiple of the 32-row warp tile
  const Tensor w = make_weight(out, in, 11);
  HessianAccumulator acc(in);
  acc.add(make_activations(512, in, 12, /*dead_col=*/40));
  const Tensor h = acc.sum();
  const auto scheme = Scheme::make(QuantFormat::parse(c.format, c.group, true));
  GptqOptions o;
  o.act_order = c.act_order;
  o.static_groups = c.static_groups;
  o.block_gptq = c.block;
  o.block_size = c.block_size;
  o.clip.enabled = c.clip;
  const GptqResult rc = gptq_quantize(w, h, *scheme, o, "test.weight");
  const GptqResult rg = gptq_quantize_on(*gpu_, w, h, *scheme, o, "test.weight");
  const double same = identical_share(rc.q.codes, rg.q.codes);
  EXPECT_GE(same, kMinIdenticalCodes) << c.format << " g" << c.group;
  EXPECT_EQ(rc.q.g_idx, rg.q.g_idx);
  EXPECT_EQ(rc.q.tensor_scale, rg.q.tensor_scale);
  EXPECT_EQ(rc.damp_escalations, rg.damp_escalations);
  EXPECT_NEAR(rg.loss, rc.loss, 0.02 * rc.loss + 1e-12);
  const double ec = recon_error(w, rc.q, h), eg = recon_error(w, rg.q, h);
  EXPECT_GT(ec, 0.0);
  EXPECT_LE(eg, ec * kMaxReconRatio) << "identical codes " << same;
}

INSTANTIATE_TEST_SUITE_P(
    Formats, CudaGptq,
    ::testing::Values(GptqCase{"int4", 64, false, false}, GptqCase{"int4", -1, false, false},
                      GptqCase{"int3", 32, true, false}, GptqCase{"int4", 64, true, true},
                      GptqCase{"int4", 256, false, false, BlockGptq::Columnwise, 96},
                      GptqCase{"int8", 128, false, false, BlockGptq::Columnwise, 128, true},
                      GptqCase{"mxfp4", 32, false, false}, GptqCase{"mxint8", 32, false, false},
                      GptqCase{"nvfp4", 16, false, false, BlockGptq::Microblock},
                      GptqCase{"nvfp4", 16, false, false, BlockGptq::Columnwise}),
    [](const ::testing::TestParamInfo<GptqCase>& i) {
      const GptqCase& c = i.param;
      return std::string(c.format) + "_g" + (c.group < 0 ? "ch" : std::to_string(c.group)) +
             (c.act_order ? "_act" : "") + (c.static_groups ? "_static" : "") +
             (c.block == BlockGptq::Microblock ? "_micro" : "") + "_b" +
             std::to_string(c.block_size) + (c.clip ? "_clip" : "");
    });

TEST_F(CudaOps, GptqEscalatesDampingLikeTheCpu) {
  // Rank-deficient H (fewer tokens than features, no damping): both must escalate.
  const int64_t in = 64;
  HessianAccumulator acc(in);
  acc.add(make_activations(16, in, 13, -1));
  const Tensor w = make_weight(8, in, 14);
  const auto scheme = Scheme::make(QuantFormat::parse("int4", 32, true));
  GptqOptions o;
  o.damp = 0.0;
  const GptqResult rc = gptq_quantize(w, acc.sum(), *scheme, o, "t");
  const GptqResult rg = gptq_quantize_on(*gpu_, w, acc.sum(), *scheme, o, "t");
  EXPECT_GT(rc.damp_escalations, 0);
  EXPECT_EQ(rg.damp_escalations, rc.damp_escalations);
  EXPECT_EQ(rg.damp_used, rc.damp_used);
}

TEST_F(CudaOps, RtnCodesAreIdenticalForEverySchemeRow) {
  const int64_t out = 45, in = 384;
  Tensor w = make_weight(out, in, 15);
  w.data<float>()[3] = 0.0f;  // a few structural ties and zeros
  w.data<float>()[in + 1] = -0.0f;
  for (auto [name, group, sym] :
       {std::tuple{"int4", 128, true}, {"int3", 32, false}, {"int8", -1, true}, {"int2", 64, false},
        {"mxint8", 32, true}, {"mxint4", 16, true}, {"mxint3", 128, true}, {"mxfp4", 32, true},
        {"nvfp4", 16, true}}) {
    const auto scheme = Scheme::make(QuantFormat::parse(name, group, sym));
    const QuantizedLinear c = rtn_quantize(w, *scheme, ClipSearch{}, "t");
    const QuantizedLinear g = rtn_quantize_on(*gpu_, w, *scheme, ClipSearch{}, "t");
    EXPECT_EQ(c.codes, g.codes) << name;
    EXPECT_EQ(c.scales, g.scales) << name;
    EXPECT_EQ(c.zeros, g.zeros) << name;
    EXPECT_EQ(c.g_idx, g.g_idx) << name;
    EXPECT_EQ(c.tensor_scale, g.tensor_scale) << name;
  }
  // With the clip search, CUDA's pow may order two near-equal errors differently.
  ClipSearch clip;
  clip.enabled = true;
  const auto scheme = Scheme::make(QuantFormat::parse("int4", 32, false));
  const QuantizedLinear c = rtn_quantize(w, *scheme, clip, "t");
  const QuantizedLinear g = rtn_quantize_on(*gpu_, w, *scheme, clip, "t");
  EXPECT_GE(identical_share(c.codes, g.codes), 0.999);
}

TEST_F(CudaOps, QuantizersRefuseNonFiniteWeights) {
  Tensor w = make_weight(4, 64, 16);
  w.data<float>()[70] = NAN;
  const auto scheme = Scheme::make(QuantFormat::parse("int4", 32, true));
  EXPECT_THROW(rtn_quantize_on(*gpu_, w, *scheme, ClipSearch{}, "t"), InputError);
  HessianAccumulator acc(64);
  acc.add(make_activations(100, 64, 17, -1));
  EXPECT_THROW(gptq_quantize_on(*gpu_, w, acc.sum(), *scheme, GptqOptions{}, "t"), InputError);
}

// ---------------------------------------------------------------- everywhere (no GPU)
TEST(CudaFactory, NoDeviceIsOneClearInputError) {
  if (cuda::usable_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  try {
    make_backend("cuda");
    FAIL() << "make_backend(\"cuda\") succeeded without a GPU";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--device cuda"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(CudaFactory, RefusesUnknownDevices) {
  EXPECT_THROW(make_backend("tpu"), InputError);
  EXPECT_THROW(make_backend("cuda:x"), InputError);
  EXPECT_EQ(make_backend("cpu")->name(), "cpu");
  EXPECT_THROW(parse_cuda_math("fp8"), InputError);
}

}  // namespace
}  // namespace qshard
