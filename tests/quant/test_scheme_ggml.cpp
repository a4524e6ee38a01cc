// llama.cpp's block types as formats: the reference rounding's edge cases (formats.md E.5)
// and the K-quants' representation (effective scales exact multiples of FP16 d).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
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
  EXPECT_THROW(QuantFormat::parse("q2_k", 0, true), InputError);
  EXPECT_EQ(QuantFormat::parse("q3_k", 0, true).group_size, 16);
  EXPECT_THROW(QuantFormat::parse("q4_k", 0, true).check_divides(576, "t"), InputError);
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
  for (const char* name : {"q4_k", "q5_k", "q6_k"}) {
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
        EXPECT_LE(std::fabs(c), f.bits == 6 ? 128.0f : 63.0f) << name;
      }
    const Tensor dq = q.dequantize();
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double e = dq.data<float>()[i] - w.data<float>()[i];
      err += e * e, ref += double(w.data<float>()[i]) * w.data<float>()[i];
    }
    EXPECT_LT(err / ref, f.bits == 4 ? 0.02 : 0.006) << name;  // ~4.5/5.5/6.6 bits per weight
  }
}
