// The AWQ family's math: folding leaves the FP function unchanged, the scale search
// prefers α > 0 with outlier channels, the joint fit never loses to AWQ's clip on its own
// objective, flip budgets and outlier masks hold, and GPTQ keeps fixed group parameters.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "quant/awq.h"
#include "quant/awq_joint.h"
#include "quant/gptq.h"
#include "quant/heuristic_round.h"

using namespace qshard;

namespace {

Tensor gaussian(int64_t rows, int64_t cols, uint32_t seed, float sd = 1.0f) {
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

// Activations with a few outlier channels (10-30× larger), as LLM inputs have.
Tensor activations(int64_t n, int64_t d, uint32_t seed) {
  Tensor x = gaussian(n, d, seed);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j : {3, 40, 77, 150}) x.data<float>()[t * d + j] *= 10.0f + float(j % 20);
  return x;
}

Tensor gram(const Tensor& x) {
  HessianAccumulator acc(x.dim(1));
  acc.add(x);
  return acc.sum();
}

std::vector<double> mean_abs(const Tensor& x) {
  const int64_t n = x.dim(0), d = x.dim(1);
  std::vector<double> m(static_cast<size_t>(d), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < d; ++j) m[size_t(j)] += std::fabs(x.data<float>()[t * d + j]) / double(n);
  return m;
}

QuantFormat int_format(int bits, int64_t g, bool sym) { return QuantFormat::parse("int" + std::to_string(bits), g, sym); }

// Output error of Q(W·s)/s on inputs with Gram H.
double scaled_error(const Tensor& w, const Tensor& h, const std::vector<float>& s, const Scheme& scheme,
                    const GroupRanges* ranges = nullptr) {
  Tensor ws = w.to_f32();
  scale_columns(ws, s);
  Tensor wh = dequantize_exported(quantize_ranged(ws, scheme, ranges, {}, "w"), {});
  unscale_columns(wh, s);
  return output_error(w, wh, h);
}

}  // namespace

TEST(AwqFold, NormFoldKeepsTheFunction) {
  const int64_t d = 64, o = 16;
  Tensor w = gaussian(o, d, 1, 0.05f), x = gaussian(8, d, 2);
  std::vector<float> gamma(static_cast<size_t>(d)), s(static_cast<size_t>(d));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.2f, 3.0f);
  for (int64_t j = 0; j < d; ++j) gamma[size_t(j)] = u(rng), s[size_t(j)] = u(rng);
  std::vector<float> g2 = gamma;
  const std::vector<float> eff = fold_into_norm(g2, s, DType::BF16);
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(g2[size_t(j)], round_to_dtype(g2[size_t(j)], DType::BF16));
  Tensor ws = w.to_f32();
  scale_columns(ws, eff);
  for (int64_t t = 0; t < 8; ++t)
    for (int64_t r = 0; r < o; ++r) {
      double y0 = 0, y1 = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double xv = x.data<float>()[t * d + j];
        y0 += double(w.data<float>()[r * d + j]) * gamma[size_t(j)] * xv;
        y1 += double(ws.data<float>()[r * d + j]) * g2[size_t(j)] * xv;
      }
      EXPECT_NEAR(y0, y1, 1e-5 * (1 + std::fabs(y0)));
    }
}

TEST(AwqFold, LinearToLinearFoldKeepsTheFunction) {
  // down(silu(gate x) · up x): up's rows /s and down's columns ·s cancel exactly.
  const int64_t d = 32, I = 48;
  Tensor gate = gaussian(I, d, 4, 0.1f), up = gaussian(I, d, 5, 0.1f), down = gaussian(d, I, 6, 0.1f);
  Tensor x = gaussian(4, d, 7);
  std::vector<float> s(static_cast<size_t>(I));
  for (int64_t j = 0; j < I; ++j) s[size_t(j)] = 0.25f + 0.1f * float(j % 17);
  Tensor up2 = up.to_f32(), down2 = down.to_f32();
  unscale_last_rows(up2, s);
  scale_columns(down2, s);
  auto forward = [&](const Tensor& u, const Tensor& dn, int64_t t, int64_t r) {
    double y = 0;
    for (int64_t k = 0; k < I; ++k) {
      double g = 0, v = 0;
      for (int64_t j = 0; j < d; ++j) {
        g += double(gate.data<float>()[k * d + j]) * x.data<float>()[t * d + j];
        v += double(u.data<float>()[k * d + j]) * x.data<float>()[t * d + j];
      }
      y += double(dn.data<float>()[r * I + k]) * (g / (1 + std::exp(-g))) * v;
    }
    return y;
  };
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t r = 0; r < d; ++r) EXPECT_NEAR(forward(up, down, t, r), forward(up2, down2, t, r), 1e-5);
}

TEST(AwqSearch, OutlierChannelsPickPositiveAlphaAndBeatRtn) {
  const int64_t d = 256, o = 64;
  const Tensor x = activations(2048, d, 11), h = gram(x);
  const Tensor w = gaussian(o, d, 12, 0.02f);
  const auto scheme = Scheme::make(int_format(4, 128, false));
  const std::vector<double> xm = mean_abs(x);
  int best = 0;
  double best_err = 0;
  for (int i = 0; i < 20; ++i) {
    const double e = scaled_error(w, h, awq_scales(xm, i / 20.0), *scheme);
    if (i == 0 || e < best_err) best = i, best_err = e;
  }
  const double rtn = scaled_error(w, h, std::vector<float>(size_t(d), 1.0f), *scheme);
  EXPECT_GT(best, 0);
  EXPECT_LT(best_err, 0.9 * rtn);
  // α = 0 is RTN up to the (power-free) normalisation: all scales 1.
  for (float v : awq_scales(xm, 0.0)) EXPECT_FLOAT_EQ(v, 1.0f);
}

TEST(AwqSearch, ClipSearchNeverWorseThanObservedRangePerGroup) {
  const int64_t d = 256, o = 32;
  const Tensor x = activations(1024, d, 21), h = gram(x), w = gaussian(o, d, 22, 0.02f);
  for (bool sym : {true, false}) {
    const auto scheme = Scheme::make(int_format(3, 128, sym));
    const GroupRanges r = awq_clip_search(w, h, *scheme, {}, 20, 0.5f);
    // c = 1 is a candidate, and the criterion is block-diagonal: the clipped error's
    // block-diagonal part cannot exceed the unclipped one; on this data the total drops.
    const std::vector<float> ones(size_t(d), 1.0f);
    EXPECT_LT(scaled_error(w, h, ones, *scheme, &r), scaled_error(w, h, ones, *scheme));
  }
}

TEST(AwqJoint, ObjectiveAtMostAwqAndMonotone) {
  const int64_t d = 256, o = 48;
  const Tensor x = activations(2048, d, 31), h = gram(x), w = gaussian(o, d, 32, 0.02f);
  for (const char* fmt : {"int4a", "int3a", "int4s", "mxint4", "nvfp4"}) {
    const std::string f(fmt);
    const QuantFormat qf = f[0] == 'i' ? int_format(f[3] - '0', 128, f[4] == 's') : QuantFormat::parse(f, 0, true);
    const auto scheme = Scheme::make(qf);
    const std::vector<float> s = awq_scales(mean_abs(x), 0.5);
    Tensor ws = w.to_f32();
    scale_columns(ws, s);
    const Tensor hs = scale_hessian(h, s);
    const GroupRanges awq = awq_clip_search(ws, hs, *scheme, {}, 20, 0.5f);
    const double awq_loss = output_error(ws, dequantize_exported(quantize_ranged(ws, *scheme, &awq, {}, "w"), {}), hs);
    const JointResult jr = joint_refine(ws, hs, *scheme, {}, &awq, JointOptions{}, "w");
    SCOPED_TRACE(fmt);
    EXPECT_LE(jr.loss_ranges, jr.loss_start * (1 + 1e-5));
    EXPECT_LE(jr.loss_final, jr.loss_ranges * (1 + 1e-5));
    EXPECT_LE(jr.loss_final, awq_loss * (1 + 1e-5));
    EXPECT_LT(jr.loss_final, (f == "nvfp4" ? 0.99 : 0.9) * awq_loss);  // nvfp4 g16: little left to fit
    // The reported loss is the exported weights' loss.
    const double exported = output_error(ws, dequantize_exported(jr.q, {}), hs);
    EXPECT_NEAR(exported, jr.loss_final, 1e-3 * jr.loss_final);
  }
}

// Rows are fitted independently and serially inside each thread: the same codes and
// parameters at any thread count; the damped Hessian's fit is a descent on that Hessian.
TEST(AwqJoint, IndependentOfThreadCountAndDamped) {
  const int64_t d = 256, o = 40;
  const Tensor x = activations(300, d, 51), h = gram(x), w = gaussian(o, d, 52, 0.02f);  // 300 < d: singular H
  const auto scheme = Scheme::make(int_format(4, 128, false));
  JointOptions opt;
  opt.damp = 0.3f;
  const Tensor hd = damped_hessian(h, opt.damp);
  double mean = 0;
  for (int64_t i = 0; i < d; ++i) mean += h.data<float>()[i * d + i];
  mean /= double(d);
  EXPECT_NEAR(hd.data<float>()[5 * d + 5] - h.data<float>()[5 * d + 5], 0.3 * mean, 1e-3 * mean);
  EXPECT_EQ(hd.data<float>()[5 * d + 6], h.data<float>()[5 * d + 6]);
  std::vector<JointResult> runs;
  for (int threads : {1, 3}) {
    omp_set_num_threads(threads);
    const GroupRanges start = joint_block_ranges(w, hd, *scheme, {}, opt);
    runs.push_back(joint_refine(w, hd, *scheme, {}, &start, opt, "w"));
  }
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(runs[0].q.codes, runs[1].q.codes);
  EXPECT_EQ(runs[0].q.scales, runs[1].q.scales);
  EXPECT_EQ(runs[0].q.zeros, runs[1].q.zeros);
  EXPECT_EQ(runs[0].loss_final, runs[1].loss_final);
  EXPECT_LE(runs[0].loss_final, runs[0].loss_start * (1 + 1e-5));
}

TEST(AwqJoint, SimulatesF16ScalesOfTheExport) {
  const Tensor w = gaussian(8, 128, 41, 0.02f);
  const auto scheme = Scheme::make(int_format(4, 128, false));
  ExportNumerics num;
  num.scale_dtype = DType::F16;
  const QuantizedLinear q = quantize_ranged(w, *scheme, nullptr, num, "w");
  for (float s : q.scales) EXPECT_EQ(s, round_to_dtype(s, DType::F16));
}

TEST(AwqDh, KneedleFlagsTheFewLargeChannels) {
  std::vector<float> m(256);
  for (size_t j = 0; j < m.size(); ++j) m[j] = 0.01f * float(j % 7 + 1);
  m[5] = 5.0f, m[99] = -7.0f, m[200] = 6.0f;
  const auto mask = kneedle_outliers(m, 0.0);
  int n = 0;
  for (uint8_t v : mask) n += v;
  EXPECT_TRUE(mask[5] && mask[99] && mask[200]);
  EXPECT_LE(n, 8);
}

TEST(AwqDh, FlipBudgetAndOutlierMaskRespected) {
  const int64_t d = 256, o = 32;
  const Tensor w = gaussian(o, d, 51, 0.02f);
  const auto scheme = Scheme::make(int_format(4, 128, false));
  const QuantizedLinear q0 = quantize_ranged(w, *scheme, nullptr, {}, "w");
  std::vector<float> mu(static_cast<size_t>(d));
  std::mt19937 rng(52);
  std::normal_distribution<float> nd(0.3f, 1.0f);
  for (float& v : mu) v = nd(rng);
  std::vector<uint8_t> outl(size_t(d), 0);
  for (int64_t j = 0; j < d; j += 10) outl[size_t(j)] = 1;
  for (double pct : {1.0, 3.0}) {
    QuantizedLinear q = q0;
    const FlipStats st = heuristic_flip(q, w, mu, outl, pct, {});
    const int64_t cap = int64_t(std::floor(pct / 100 * d));
    EXPECT_GT(st.flips, 0);
    double e0 = 0, e1 = 0;
    const Tensor w0 = q0.dequantize(), w1 = q.dequantize();
    for (int64_t r = 0; r < o; ++r) {
      int64_t changed = 0;
      double r0 = 0, r1 = 0;
      for (int64_t j = 0; j < d; ++j) {
        const size_t i = size_t(r * d + j);
        if (q.codes[i] != q0.codes[i]) {
          ++changed;
          EXPECT_FALSE(outl[size_t(j)]) << "flipped an outlier channel";
          EXPECT_EQ(std::abs(int(q.codes[i]) - int(q0.codes[i])), 1);
        }
        r0 += (w.data<float>()[i] - w0.data<float>()[i]) * mu[size_t(j)];
        r1 += (w.data<float>()[i] - w1.data<float>()[i]) * mu[size_t(j)];
      }
      EXPECT_LE(changed, cap);
      EXPECT_LE(std::fabs(r1), std::fabs(r0) + 1e-7);
      e0 += std::fabs(r0), e1 += std::fabs(r1);
    }
    EXPECT_LT(e1, e0);
  }
}

TEST(GptqFixedGroups, KeepsTheGivenParameters) {
  const int64_t d = 256, o = 16;
  const Tensor x = activations(1024, d, 61), h = gram(x), w = gaussian(o, d, 62, 0.02f);
  const auto scheme = Scheme::make(int_format(4, 128, false));
  const JointResult jr = joint_refine(w, h, *scheme, {}, nullptr, JointOptions{}, "w");
  std::vector<GroupParams> fixed;
  for (int64_t r = 0; r < o; ++r)
    for (int64_t g = 0; g < 2; ++g) fixed.push_back(group_params(jr.q, r, g));
  GptqOptions go;
  go.fixed_groups = &fixed;
  const GptqResult g = gptq_quantize(w, h, *scheme, go, "w");
  EXPECT_EQ(g.q.scales, jr.q.scales);
  EXPECT_EQ(g.q.zeros, jr.q.zeros);
}
