// RTN over whole tensors, the MSE clip search, and QuantizedLinear::dequantize.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

using namespace qshard;

namespace {

Tensor gaussian(int64_t out, int64_t in, uint32_t seed, float sd = 0.02f) {
  Tensor t = Tensor::zeros(DType::F32, {out, in});
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  float* w = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) w[i] = nd(rng);
  return t;
}

// Student-t with 2 degrees of freedom: heavy tails, a few outliers per group.
Tensor heavy_tailed(int64_t out, int64_t in, uint32_t seed) {
  Tensor t = Tensor::zeros(DType::F32, {out, in});
  std::mt19937 rng(seed);
  std::student_t_distribution<float> td(2.0f);
  float* w = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) w[i] = 0.01f * td(rng);
  return t;
}

double rel_mse(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(x[i]) * x[i];
  }
  return num / den;
}

double group_err(const Scheme& s, const float* x, int64_t n, const GroupParams& p, float ts,
                 double norm) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i)
    e += std::pow(std::fabs(double(s.dequantize(s.quantize(x[i], p, ts), p, ts)) - x[i]), norm);
  return e;
}

struct Budget {
  const char* format;
  int64_t group;
  bool sym;
  double max_rel_mse;
};

}  // namespace

// Relative MSE Σ(w−ŵ)²/Σw² of plain RTN on N(0, 0.02²) weights [256, 1024], seed 11.
// Budgets are ~1.5× the values measured when they were set (in the trailing comment).
TEST(Rtn, ErrorBudgetsOnGaussianWeights) {
  const Budget budgets[] = {
      {"int8", 128, true, 6.5e-5},    // measured 4.30e-5
      {"int8", 128, false, 5.3e-5},   // measured 3.53e-5
      {"int4", 128, true, 1.9e-2},    // measured 1.24e-2
      {"int4", 128, false, 1.5e-2},   // measured 1.02e-2
      {"int4", 32, false, 9.8e-3},    // measured 6.54e-3
      {"int4", -1, true, 2.7e-2},     // measured 1.81e-2 (per-channel)
      {"int3", 128, true, 8.5e-2},    // measured 5.68e-2
      {"int3", 128, false, 7.0e-2},   // measured 4.68e-2
      {"int2", 128, true, 4.6e-1},    // measured 3.05e-1
      {"int2", 128, false, 3.8e-1},   // measured 2.55e-1
      {"mxint8", 32, true, 8.7e-5},   // measured 5.81e-5
      {"mxint6", 32, true, 1.4e-3},   // measured 9.31e-4
      {"mxint4", 32, true, 2.2e-2},   // measured 1.49e-2
      {"mxint4", 128, true, 3.2e-2},  // measured 2.10e-2
      {"mxint3", 32, true, 9.1e-2},   // measured 6.05e-2
      {"mxfp4", 32, true, 2.0e-2},    // measured 1.31e-2
      {"nvfp4", 16, true, 1.4e-2},    // measured 9.07e-3
  };


  const Tensor w = gaussian(256, 1024, 11);
  for (const Budget& b : budgets) {
    auto s = Scheme::make(QuantFormat::parse(b.format, b.group, b.sym));
    const QuantizedLinear q = rtn_quantize(w, *s, ClipSearch{}, "w");
    const double e = rel_mse(w, q.dequantize());
    std::printf("rtn %-24s rel_mse %.3e (budget %.1e)\n", s->format().describe().c_str(), e,
                b.max_rel_mse);
    EXPECT_LT(e, b.max_rel_mse) << s->format().describe();
    EXPECT_GT(e, 0.0);
  }
}

TEST(Rtn, LayoutMatchesTheSchemeRowByRow) {
  const Tensor w = gaussian(8, 256, 2);
  for (const char* name : {"int4", "int3", "mxint4", "mxfp4", "nvfp4"}) {
    for (bool sym : {true, false}) {
      const QuantFormat f = QuantFormat::parse(name, 0, sym);
      auto s = Scheme::make(f);
      const QuantizedLinear q = rtn_quantize(w, *s, ClipSearch{}, "w");
      const int64_t gw = f.group_width(256), ng = f.n_groups(256);
      ASSERT_EQ(q.codes.size(), size_t(8 * 256));
      ASSERT_EQ(q.scales.size(), size_t(8 * ng));
      EXPECT_EQ(q.zeros.size(), f.family == FormatFamily::Int ? size_t(8 * ng) : 0u);
      ASSERT_EQ(q.g_idx.size(), 256u);
      EXPECT_FALSE(q.has_act_order_g_idx());
      const float* x = w.data<float>();
      const float ts = s->tensor_scale(x, w.numel());
      EXPECT_EQ(q.tensor_scale, ts);
      const Tensor d = q.dequantize();
      for (int64_t o = 0; o < 8; ++o)
        for (int64_t g = 0; g < ng; ++g) {
          const GroupParams p = s->fit(x + o * 256 + g * gw, gw, 1, 1.0f, ts);
          ASSERT_EQ(q.scales[size_t(o * ng + g)], p.scale);
          if (f.family == FormatFamily::Int) {
            ASSERT_EQ(q.zeros[size_t(o * ng + g)], p.zero);
          }
          for (int64_t j = 0; j < gw; ++j) {
            const int64_t c = o * 256 + g * gw + j;
            ASSERT_EQ(q.codes[size_t(c)], s->quantize(x[c], p, ts));
            ASSERT_EQ(d.data<float>()[c], s->dequantize(q.codes[size_t(c)], p, ts));
          }
        }
    }
  }
}

TEST(Rtn, PerChannelIsOneGroupPerRow) {
  const Tensor w = gaussian(4, 100, 8);
  auto s = Scheme::make(QuantFormat::parse("int8", -1, false));
  const QuantizedLinear q = rtn_quantize(w, *s, ClipSearch{}, "w");
  EXPECT_EQ(q.n_groups(), 1);
  EXPECT_EQ(q.scales.size(), 4u);
  for (int32_t g : q.g_idx) EXPECT_EQ(g, 0);
  EXPECT_LT(rel_mse(w, q.dequantize()), 1e-4);
}

TEST(Rtn, NvFp4TensorScaleComputedOncePerTensor) {
  Tensor w = gaussian(4, 64, 9);
  w.data<float>()[77] = 1.344f;  // the amax
  auto s = Scheme::make(QuantFormat::parse("nvfp4", 0, true));
  const QuantizedLinear q = rtn_quantize(w, *s, ClipSearch{}, "w");
  EXPECT_FLOAT_EQ(q.tensor_scale, 1.344f / 2688.0f);
  // The block holding the amax gets the top E4M3 scale; the amax itself decodes exactly
  // (1.344 = 6 · 448 · s_tensor).
  EXPECT_EQ(q.scales[size_t(77 / 16)], 448.0f);
  EXPECT_FLOAT_EQ(q.dequantize().data<float>()[77], 1.344f);
}

TEST(Rtn, RefusesNonFiniteWeightsNamingTheTensor) {
  for (const char* name : {"int4", "mxint8", "mxfp4", "nvfp4"}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity()}) {
      Tensor w = gaussian(4, 128, 1);
      w.data<float>()[260] = bad;
      auto s = Scheme::make(QuantFormat::parse(name, 0, true));
      try {
        rtn_quantize(w, *s, ClipSearch{}, "model.layers.3.self_attn.q_proj");
        FAIL() << "expected InputError for " << name;
      } catch (const InputError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("model.layers.3.self_attn.q_proj"), std::string::npos) << m;
        EXPECT_NE(m.find("NaN/Inf"), std::string::npos) << m;
      }
    }
  }
}

TEST(Rtn, RefusesColumnsThatDoNotDivideIntoGroups) {
  const Tensor w = gaussian(4, 96, 1);
  auto s = Scheme::make(QuantFormat::parse("int4", 64, true));
  try {
    rtn_quantize(w, *s, ClipSearch{}, "lm_head");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("lm_head"), std::string::npos) << e.what();
  }
  auto nv = Scheme::make(QuantFormat::parse("nvfp4", 0, true));
  EXPECT_THROW(rtn_quantize(gaussian(2, 40, 1), *nv, ClipSearch{}, "x"), InputError);
}

TEST(Rtn, ClipSearchNeverWorsePerGroupAndBetterOnHeavyTails) {
  ClipSearch clip;
  clip.enabled = true;
  const Tensor gauss = gaussian(16, 512, 21);
  const Tensor heavy = heavy_tailed(16, 512, 22);
  for (const char* name : {"int2", "int3", "int4", "int8", "mxint4", "mxint8", "mxfp4", "nvfp4"})
    for (bool sym : {true, false}) {
      const QuantFormat f = QuantFormat::parse(name, 0, sym);
      if (f.family != FormatFamily::Int && !sym) continue;
      auto s = Scheme::make(f);
      for (const Tensor* w : {&gauss, &heavy}) {
        const float* x = w->data<float>();
        const float ts = s->tensor_scale(x, w->numel());
        const int64_t in = w->dim(1), gw = f.group_width(in);
        double plain_total = 0, clip_total = 0;
        for (int64_t o = 0; o < w->dim(0); ++o)
          for (int64_t g = 0; g < in / gw; ++g) {
            const float* gx = x + o * in + g * gw;
            const GroupParams p0 = fit_group(*s, gx, gw, 1, ts, ClipSearch{});
            const GroupParams p1 = fit_group(*s, gx, gw, 1, ts, clip);
            const double e0 = group_err(*s, gx, gw, p0, ts, clip.norm);
            const double e1 = group_err(*s, gx, gw, p1, ts, clip.norm);
            ASSERT_LE(e1, e0) << f.describe() << " row " << o << " group " << g;
            plain_total += e0;
            clip_total += e1;
          }
        std::printf("clip %-18s %s: err2.4 plain %.4e clipped %.4e (%.1f%%)\n",
                    f.describe().c_str(), w == &heavy ? "heavy" : "gauss", plain_total,
                    clip_total, 100.0 * (1 - clip_total / plain_total));
        // MXFP4 is left out: the OCP floor exponent already clips, and a smaller exponent
        // saturates the block top (measured 0% gain), so the search keeps shrink 1.
        if (w == &heavy && f.family != FormatFamily::MXFP4 && f.bits <= 4) {
          EXPECT_LT(clip_total, 0.98 * plain_total) << f.describe();
        }
      }
    }
  // rtn_quantize uses the search too.
  auto s = Scheme::make(QuantFormat::parse("int4", 128, false));
  const double e_plain = rel_mse(heavy, rtn_quantize(heavy, *s, ClipSearch{}, "h").dequantize());
  const double e_clip = rel_mse(heavy, rtn_quantize(heavy, *s, clip, "h").dequantize());
  EXPECT_LT(e_clip, e_plain);
}

TEST(QuantizedLinear, DequantizeFollowsPermutedGIdx) {
  QuantizedLinear q;
  q.format = QuantFormat::parse("int4", 2, false);
  q.out_features = 2;
  q.in_features = 8;
  // Column c belongs to group g_idx[c] (act-order without static groups).
  q.g_idx = {3, 0, 2, 1, 1, 0, 3, 2};
  q.scales = {1.0f, 2.0f, 4.0f, 8.0f, 0.5f, 0.25f, 0.125f, 3.0f};
  q.zeros = {8.0f, 7.0f, 6.0f, 5.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  q.codes.resize(16);
  for (int i = 0; i < 16; ++i) q.codes[size_t(i)] = uint8_t((i * 5) % 16);
  EXPECT_TRUE(q.has_act_order_g_idx());
  const Tensor d = q.dequantize();
  for (int o = 0; o < 2; ++o)
    for (int c = 0; c < 8; ++c) {
      const int g = q.g_idx[size_t(c)];
      const float want = q.scales[size_t(o * 4 + g)] *
                         (float(q.codes[size_t(o * 8 + c)]) - q.zeros[size_t(o * 4 + g)]);
      EXPECT_EQ(d.data<float>()[o * 8 + c], want) << o << " " << c;
    }
  q.g_idx = {0, 0, 1, 1, 2, 2, 3, 3};
  EXPECT_FALSE(q.has_act_order_g_idx());
  q.g_idx.clear();  // empty g_idx means c / group_width
  EXPECT_FALSE(q.has_act_order_g_idx());
  EXPECT_EQ(q.dequantize().data<float>()[5], 4.0f * (float(q.codes[5]) - 6.0f));
}

TEST(QuantizedLinear, NvFp4DequantizeAppliesTensorScale) {
  QuantizedLinear q;
  q.format = QuantFormat::parse("nvfp4", 0, true);
  q.out_features = 1;
  q.in_features = 16;
  q.codes.assign(16, 0x7);  // +6
  q.codes[1] = 0xB;         // -1.5
  q.scales = {2.0f};
  q.tensor_scale = 0.25f;
  q.g_idx.assign(16, 0);
  const Tensor d = q.dequantize();
  EXPECT_EQ(d.data<float>()[0], 3.0f);
  EXPECT_EQ(d.data<float>()[1], -0.75f);
}
