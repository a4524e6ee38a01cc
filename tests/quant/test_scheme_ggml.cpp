// llama.cpp's block types as formats: the reference rounding's edge cases (formats.md E.5)
// and the K-quants' representation (effective scales exact multiples of FP16 d).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/iq4.h"
#include "quant/kquant.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

using namespace qshard;

TEST(GgmlFormats, ParseNamesAndBlocks) {
  EXPECT_EQ(QuantFormat::parse("Q4_0", 0, true).describe(), "q4_0 b32");
  EXPECT_FALSE(QuantFormat::parse("q5_1", 0, true).symmetric);
  EXPECT_TRUE(QuantFormat::parse("q5_1", 0, true).stores_zeros());
  EXPECT_EQ(QuantFormat::parse("q6_k", 0, true).group_size, 16);
  EXPECT_EQ(QuantFormat::parse("q4_k", 0, true).group_size, 32);
  EXPECT_THROW(QuantFormat::parse("q4_0", 64, true), InputError);
  EXPECT_THROW(QuantFormat::parse("q2_j", 0, true), InputError);
  EXPECT_EQ(QuantFormat::parse("q2_k", 0, true).group_size, 16);
  EXPECT_TRUE(QuantFormat::parse("q2_k", 0, true).stores_zeros());
  EXPECT_THROW(QuantFormat::parse("q2_k", 32, true), InputError);
  EXPECT_EQ(QuantFormat::parse("q3_k", 0, true).group_size, 16);
  EXPECT_THROW(QuantFormat::parse("q4_k", 0, true).check_divides(576, "t"), InputError);
  EXPECT_EQ(QuantFormat::parse("IQ4_NL", 0, true).describe(), "iq4_nl b32");
  EXPECT_EQ(QuantFormat::parse("iq4_xs", 0, true).ggml_block(), 256);
  EXPECT_EQ(QuantFormat::parse("iq4_nl", 0, true).ggml_block(), 32);
  EXPECT_FALSE(QuantFormat::parse("iq4_xs", 0, true).stores_zeros());
  EXPECT_THROW(QuantFormat::parse("iq4_xs", 0, true).check_divides(576, "t"), InputError);
  EXPECT_NO_THROW(QuantFormat::parse("iq4_nl", 0, true).check_divides(576, "t"));
}

TEST(GgmlFormats, Q4_0SignTrickKeepsTheExtremeExact) {
  // formats.md E.5: max +4.0 -> d = -0.5; 4.0 -> q 0 -> 4.0 exactly; -4.0 -> q 15 -> -3.5.
  const auto s = Scheme::make(QuantFormat::parse("q4_0", 0, true));
  float x[32] = {};
  x[0] = 4.0f, x[1] = -4.0f, x[2] = 1.0f;
  const GroupParams p = s->fit(x, 32, 1, 1.0f, 1.0f);
  EXPECT_EQ(p.scale, -0.5f);
  EXPECT_EQ(s->quantize(4.0f, p, 1.0f), 0);
  EXPECT_EQ(s->dequantize(0, p, 1.0f), 4.0f);
  EXPECT_EQ(s->quantize(-4.0f, p, 1.0f), 15);
  EXPECT_EQ(s->dequantize(15, p, 1.0f), -3.5f);
  EXPECT_EQ(s->dequantize(s->quantize(0.0f, p, 1.0f), p, 1.0f), 0.0f);
}

TEST(GgmlFormats, Q8_0RoundsHalfAwayFromZeroAndStoresFp16) {
  const auto s = Scheme::make(QuantFormat::parse("q8_0", 0, true));
  float x[32] = {};
  x[0] = 127.0f;  // d = 1, id = 1
  const GroupParams p = s->fit(x, 32, 1, 1.0f, 1.0f);
  EXPECT_EQ(p.scale, 1.0f);
  EXPECT_EQ(int(s->quantize(2.5f, p, 1.0f)) - 128, 3);    // roundf, not nearbyint
  EXPECT_EQ(int(s->quantize(-2.5f, p, 1.0f)) - 128, -3);
  x[0] = 0.1f;  // d = 0.1/127 is not an FP16 value; the stored one is
  const GroupParams q = s->fit(x, 32, 1, 1.0f, 1.0f);
  EXPECT_EQ(q.scale, f16_to_f32(f32_to_f16(0.1f / 127.0f)));
}

TEST(GgmlFormats, KQuantScalesAreExactMultiplesOfTheSuperBlockScale) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 0.02f);
  for (const char* name : {"q2_k", "q4_k", "q5_k", "q6_k"}) {
    const QuantFormat f = QuantFormat::parse(name, 0, true);
    Tensor w = Tensor::zeros(DType::F32, {8, 512});
    for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = n(rng);
    const QuantizedLinear q = rtn_quantize(w, *Scheme::make(f), {}, name);
    ASSERT_EQ(q.super_scales.size(), size_t(8 * 2 * 2)) << name;
    const int64_t per = 256 / f.group_size;
    double err = 0, ref = 0;
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t g = 0; g < q.n_groups(); ++g) {
        const float d = q.super_scales[size_t((r * 2 + g / per) * 2)];
        const float c = q.scales[size_t(r * q.n_groups() + g)] / d;
        EXPECT_EQ(c, std::nearbyint(c)) << name;
        EXPECT_LE(std::fabs(c), f.bits == 6 ? 128.0f : f.bits == 2 ? 15.0f : 63.0f) << name;
        if (f.bits != 2) continue;  // Q2_K's minima: 4-bit multiples of dmin
        const float m = q.zeros[size_t(r * q.n_groups() + g)] / q.super_scales[size_t((r * 2 + g / per) * 2 + 1)];
        EXPECT_EQ(m, std::nearbyint(m)) << name;
        EXPECT_LE(m, 15.0f) << name;
      }
    const Tensor dq = q.dequantize();
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double e = dq.data<float>()[i] - w.data<float>()[i];
      err += e * e, ref += double(w.data<float>()[i]) * w.data<float>()[i];
    }
    // ~2.6/4.5/5.5/6.6 bits per weight
    EXPECT_LT(err / ref, f.bits == 2 ? 0.2 : f.bits == 4 ? 0.02 : 0.006) << name;
  }
}

namespace {

// Σ qw·(x − value an engine computes)² of one 32-block with parameters p (stored values).
double weighted_block_error(const Scheme& s, const float* x, const float* qw, GroupParams p) {
  p.inv = 0.0f;
  double e = 0;
  for (int j = 0; j < 32; ++j) {
    const double d = double(x[j]) - s.dequantize(s.quantize(x[j], p, 1.0f), p, 1.0f);
    e += qw[j] * d * d;
  }
  return e;
}

}  // namespace

TEST(GgmlFormats, ImatrixBlockFitLowersTheWeightedError) {
  // llama.cpp's imatrix path (quantize_row_q4_0_impl ...): fitted to the importance, it
  // must beat the reference fit on the importance-weighted error over many blocks.
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::exponential_distribution<float> imp(1.0f);
  for (const char* name : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"}) {
    const QuantFormat f = QuantFormat::parse(name, 0, true);
    const auto s = Scheme::make(f);
    double e_ref = 0, e_fit = 0;
    for (int b = 0; b < 300; ++b) {
      float x[32], qw[32];
      float s2 = 0;
      for (int j = 0; j < 32; ++j) x[j] = n(rng), qw[j] = imp(rng) * imp(rng), s2 += x[j] * x[j];
      const GroupParams p = ggml_block_weighted_fit_one(f, x, 1, qw, s2 / 32);
      EXPECT_EQ(p.scale, f16_to_f32(f32_to_f16(p.scale))) << name;
      EXPECT_EQ(p.zero, f16_to_f32(f32_to_f16(p.zero))) << name;
      e_ref += weighted_block_error(*s, x, qw, s->fit(x, 32, 1, 1.0f, 1.0f));
      e_fit += weighted_block_error(*s, x, qw, p);
    }
    EXPECT_LT(e_fit, 0.95 * e_ref) << name;
  }
}

TEST(GgmlFormats, Q3KImatrixFitKeepsSixBitSignedScaleCodes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::exponential_distribution<float> imp(1.0f);
  const QuantFormat f = QuantFormat::parse("q3_k", 0, true);
  Tensor w = Tensor::zeros(DType::F32, {16, 512});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = n(rng);
  std::vector<float> qw(512);
  for (float& v : qw) v = imp(rng) * imp(rng);
  const QuantizedLinear ref = kquant_rtn(w, f, "t");
  const QuantizedLinear fit = kquant_rtn(w, f, "t", qw);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t g = 0; g < fit.n_groups(); ++g) {
      const float d = fit.super_scales[size_t((r * 2 + g / 16) * 2)];
      const float c = d != 0.0f ? fit.scales[size_t(r * fit.n_groups() + g)] / d : 0.0f;
      EXPECT_EQ(c, std::nearbyint(c));
      EXPECT_GE(c, -32.0f);
      EXPECT_LE(c, 31.0f);
    }
  auto werr = [&](const QuantizedLinear& q) {
    const Tensor dq = q.dequantize();
    double e = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double d = dq.data<float>()[i] - w.data<float>()[i];
      e += qw[size_t(i % 512)] * d * d;
    }
    return e;
  };
  EXPECT_LT(werr(fit), 0.95 * werr(ref));
}

namespace {

// Σ qw·(w − ŵ)² over a [rows, 512] weight whose columns have importance qw.
double weighted_error(const QuantizedLinear& q, const Tensor& w, const std::vector<float>& qw) {
  const Tensor dq = q.dequantize();
  double e = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double d = dq.data<float>()[i] - w.data<float>()[i];
    e += qw[size_t(i % w.dim(1))] * d * d;
  }
  return e;
}

}  // namespace

TEST(GgmlFormats, Q2KAndIq4ImatrixFitsLowerTheWeightedError) {
  // quantize_row_q2_K_impl and quantize_iq4_nl/xs with quant_weights: fitted to the
  // importance, they beat the fit without it on the importance-weighted error.
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::exponential_distribution<float> imp(1.0f);
  Tensor w = Tensor::zeros(DType::F32, {16, 512});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = n(rng);
  std::vector<float> qw(512);
  for (float& v : qw) v = imp(rng) * imp(rng);
  for (const char* name : {"q2_k", "iq4_nl", "iq4_xs"}) {
    const QuantFormat f = QuantFormat::parse(name, 0, true);
    const QuantizedLinear ref = kquant_rtn(w, f, "t");
    const QuantizedLinear fit = kquant_rtn(w, f, "t", qw);
    EXPECT_LT(weighted_error(fit, w, qw), 0.95 * weighted_error(ref, w, qw)) << name;
  }
}

TEST(GgmlFormats, Iq4CodesIndexTheNonLinearValues) {
  // kvalues_iq4nl: the largest magnitude maps to -127 (or the value nearest it); an
  // all-zero IQ4_XS super-block stores d = -0 (llama.cpp's -max/32) and decodes to 0.
  EXPECT_EQ(iq4_best_index(-200.0f), 0);
  EXPECT_EQ(iq4_best_index(0.0f), 8);   // 1 is nearer than -10
  EXPECT_EQ(iq4_best_index(6.9f), 8);
  EXPECT_EQ(iq4_best_index(7.0f), 9);  // halfway between 1 and 13: the lower only if strictly nearer
  EXPECT_EQ(iq4_best_index(500.0f), 15);
  const QuantFormat xs = QuantFormat::parse("iq4_xs", 0, true);
  Tensor w = Tensor::zeros(DType::F32, {2, 256});
  for (int64_t i = 0; i < 256; ++i) w.data<float>()[256 + i] = 0.001f * float(i % 17) - 0.008f;
  const QuantizedLinear q = kquant_rtn(w, xs, "t");
  EXPECT_EQ(q.super_scales[0], 0.0f);
  EXPECT_TRUE(std::signbit(q.super_scales[0]));
  const Tensor dq = q.dequantize();
  for (int64_t i = 0; i < 256; ++i) EXPECT_EQ(dq.data<float>()[i], 0.0f);
  for (int64_t g = 0; g < 8; ++g) {  // every sub-block scale a 6-bit signed multiple of d
    const float c = q.scales[size_t(8 + g)] / q.super_scales[2];
    EXPECT_EQ(c, std::nearbyint(c));
    EXPECT_GE(c, -32.0f);
    EXPECT_LE(c, 31.0f);
  }
  double e = 0, r = 0;
  for (int64_t i = 256; i < 512; ++i) {
    const double d = dq.data<float>()[i] - w.data<float>()[i];
    e += d * d, r += double(w.data<float>()[i]) * w.data<float>()[i];
  }
  EXPECT_LT(e / r, 0.05);
}
