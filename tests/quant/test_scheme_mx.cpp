// MXINTd, MXFP4 and NVFP4 rows (shared/docs/formats.md F.1-F.5), scale encodings and
// the neutral bit packing. Rounding rule under test: round half to even everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/scheme.h"

using namespace qshard;

namespace {

std::unique_ptr<Scheme> make(const char* name, int64_t g = 0) {
  return Scheme::make(QuantFormat::parse(name, g, true));
}

float rt(const Scheme& s, float x, const GroupParams& p, float ts = 1.0f) {
  return s.dequantize(s.quantize(x, p, ts), p, ts);
}

constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

}  // namespace

// ---------------------------------------------------------------- MXFP4
TEST(SchemeMXFP4, WorkedExamplesFromFormatsF3) {
  auto s = make("mxfp4");
  std::vector<float> x(32, 0.25f);
  x[3] = 5.0f;  // amax 5 -> floor(log2 5) = 2, e = 0, X = 1 (E8M0 code 127)
  GroupParams p = s->fit(x.data(), 32, 1, 1.0f, 1.0f);
  EXPECT_EQ(p.scale, 1.0f);
  EXPECT_EQ(encode_e8m0(p.scale), 127);
  EXPECT_EQ(rt(*s, 5.0f, p), 4.0f);  // tie between 4 and 6 -> even (4)
  EXPECT_EQ(s->quantize(5.0f, p, 1.0f), 6);
  x[3] = 7.0f;  // also e = 0; 7 saturates to 6
  p = s->fit(x.data(), 32, 1, 1.0f, 1.0f);
  EXPECT_EQ(p.scale, 1.0f);
  EXPECT_EQ(rt(*s, 7.0f, p), 6.0f);
  EXPECT_EQ(s->quantize(7.0f, p, 1.0f), 7);
  EXPECT_EQ(s->quantize(-7.0f, p, 1.0f), 0xF);
  x[3] = 8.0f;  // e = 1
  EXPECT_EQ(s->fit(x.data(), 32, 1, 1.0f, 1.0f).scale, 2.0f);
  x[3] = 3.99f;  // floor(log2) = 1 -> e = -1
  EXPECT_EQ(s->fit(x.data(), 32, 1, 1.0f, 1.0f).scale, 0.5f);
}

TEST(SchemeMXFP4, GridTiesSaturationAndCodes) {
  auto s = make("mxfp4");
  GroupParams p;
  p.scale = 0.25f;  // any power of two
  for (int m = 0; m < 8; ++m)
    for (int sign : {1, -1}) {
      const float v = sign * kE2M1[m] * p.scale;
      const uint8_t c = s->quantize(v, p, 1.0f);
      EXPECT_EQ(c & 0x7, m);
      EXPECT_EQ(bool(c & 0x8), sign < 0);
      EXPECT_EQ(s->dequantize(c, p, 1.0f), v);
    }
  // Midpoints go to the even magnitude index.
  const float ties[][2] = {{0.25f, 0}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2},
                           {2.5f, 2},  {3.5f, 4},  {5.0f, 4}};
  for (auto [t, want] : ties) {
    EXPECT_EQ(rt(*s, t * p.scale, p), want * p.scale) << t;
    EXPECT_EQ(rt(*s, -t * p.scale, p), -want * p.scale) << t;
  }
  EXPECT_EQ(rt(*s, 0.2501f * p.scale, p), 0.5f * p.scale);
  EXPECT_EQ(rt(*s, 1e30f, p), 6.0f * p.scale);
  EXPECT_EQ(rt(*s, -1e30f, p), -6.0f * p.scale);
  EXPECT_EQ(rt(*s, 1e-30f, p), 0.0f);
  // Negative zero keeps its sign bit (code 8) and decodes to -0 == 0.
  EXPECT_EQ(s->quantize(-0.0f, p, 1.0f), 0x8);
  EXPECT_EQ(s->dequantize(0x8, p, 1.0f), 0.0f);
  EXPECT_EQ(s->quantize(0.0f, p, 1.0f), 0x0);
}

// ---------------------------------------------------------------- MXINTd
TEST(SchemeMXInt, Mxint8IsTheKOver64Grid) {
  auto s = make("mxint8");
  std::vector<float> x(32, 0.0f);
  x[0] = 1.5f;  // amax in [1, 2) -> e = 0
  const GroupParams p = s->fit(x.data(), 32, 1, 1.0f, 1.0f);
  ASSERT_EQ(p.scale, 1.0f);
  for (int k = -127; k <= 127; ++k) {
    const float v = float(k) / 64.0f;
    const uint8_t c = s->quantize(v, p, 1.0f);
    EXPECT_EQ(c, uint8_t(int8_t(k)));  // two's complement
    EXPECT_EQ(s->dequantize(c, p, 1.0f), v);
  }
  // Ties to even k, symmetric saturation at ±127/64.
  EXPECT_EQ(rt(*s, 0.5f / 64, p), 0.0f);
  EXPECT_EQ(rt(*s, 1.5f / 64, p), 2.0f / 64);
  EXPECT_EQ(rt(*s, -2.5f / 64, p), -2.0f / 64);
  EXPECT_EQ(rt(*s, 1.99f, p), 127.0f / 64);
  EXPECT_EQ(rt(*s, -2.0f, p), -127.0f / 64);
  EXPECT_EQ(s->quantize(-2.0f, p, 1.0f), 0x81);
  EXPECT_EQ(s->quantize(-1.0f / 64, p, 1.0f), 0xFF);
}

TEST(SchemeMXInt, AllWidthsGridAndExponent) {
  for (int bits : {3, 4, 6, 8}) {
    auto s = make(("mxint" + std::to_string(bits)).c_str());
    const int kmax = (1 << (bits - 1)) - 1, frac = bits - 2;
    std::vector<float> x(32, 0.1f);
    x[5] = -0.75f;  // amax 0.75 -> e = -1
    const GroupParams p = s->fit(x.data(), 32, 1, 1.0f, 1.0f);
    ASSERT_EQ(p.scale, 0.5f);
    EXPECT_EQ(encode_e8m0(p.scale), 126);
    for (int k = -kmax; k <= kmax; ++k) {
      const float v = std::ldexp(float(k), -frac) * p.scale;
      const uint8_t c = s->quantize(v, p, 1.0f);
      EXPECT_EQ(c, uint8_t(k) & ((1 << bits) - 1)) << bits << " " << k;
      EXPECT_EQ(c >> bits, 0);
      EXPECT_EQ(s->dequantize(c, p, 1.0f), v);
    }
    const float top = std::ldexp(float(kmax), -frac) * p.scale;
    EXPECT_EQ(rt(*s, 1.0f, p), top);  // saturates
    EXPECT_EQ(rt(*s, -1.0f, p), -top);
    // tie between k=0 and 1 -> 0; between 1 and 2 -> 2
    const float q = std::ldexp(1.0f, -frac) * p.scale;
    EXPECT_EQ(rt(*s, 0.5f * q, p), 0.0f);
    EXPECT_EQ(rt(*s, 1.5f * q, p), 2 * q);
    EXPECT_EQ(rt(*s, -0.0f, p), 0.0f);
  }
}

TEST(SchemeMX, ZeroTinyAndHugeBlocks) {
  for (const char* name : {"mxint8", "mxint4", "mxint3", "mxfp4"}) {
    auto s = make(name);
    std::vector<float> z(32, 0.0f);
    z[2] = -0.0f;
    GroupParams p = s->fit(z.data(), 32, 1, 1.0f, 1.0f);
    EXPECT_TRUE(std::isfinite(p.scale)) << name;
    EXPECT_GT(p.scale, 0.0f) << name;
    EXPECT_NO_THROW(encode_e8m0(p.scale));
    for (float v : z) EXPECT_EQ(rt(*s, v, p), 0.0f);
    std::vector<float> tiny(32, 1e-40f);  // below 2^-127: exponent clamps to -127
    p = s->fit(tiny.data(), 32, 1, 1.0f, 1.0f);
    EXPECT_EQ(p.scale, std::ldexp(1.0f, -127)) << name;
    EXPECT_EQ(encode_e8m0(p.scale), 0);
    EXPECT_TRUE(std::isfinite(rt(*s, 1e-40f, p)));
    std::vector<float> huge(32, 3e38f);
    p = s->fit(huge.data(), 32, 1, 1.0f, 1.0f);
    EXPECT_TRUE(std::isfinite(p.scale)) << name;
    EXPECT_NEAR(rt(*s, 3e38f, p), 3e38f, 0.35 * 3e38);
  }
}

TEST(SchemeMX, ShrinkPicksTheExponentFromShrunkAmax) {
  auto s = make("mxfp4");
  std::vector<float> x(32, 0.0f);
  x[0] = 4.5f;  // e = 0
  EXPECT_EQ(s->fit(x.data(), 32, 1, 1.0f, 1.0f).scale, 1.0f);
  EXPECT_EQ(s->fit(x.data(), 32, 1, 0.8f, 1.0f).scale, 0.5f);  // 3.6 -> e = -1
  auto m = make("mxint8");
  x[0] = 1.0f;
  EXPECT_EQ(m->fit(x.data(), 32, 1, 1.0f, 1.0f).scale, 1.0f);
  EXPECT_EQ(m->fit(x.data(), 32, 1, 0.99f, 1.0f).scale, 0.5f);
}

// ---------------------------------------------------------------- NVFP4
TEST(SchemeNVFP4, TensorScale) {
  auto s = make("nvfp4");
  std::vector<float> w = {0.5f, -2688.0f, 3.0f};
  EXPECT_EQ(s->tensor_scale(w.data(), 3), 1.0f);
  w[1] = -26.88f;
  EXPECT_FLOAT_EQ(s->tensor_scale(w.data(), 3), 26.88f / 2688.0f);
  std::vector<float> z(16, 0.0f);
  EXPECT_EQ(s->tensor_scale(z.data(), 16), 1.0f);
  w[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(s->tensor_scale(w.data(), 3), InputError);
}

TEST(SchemeNVFP4, TwoLevelEncodeDecodeErrorBound) {
  auto s = make("nvfp4");
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int n = 16 * 256;
  std::vector<float> w(n);
  for (auto& v : w) v = nd(rng);
  for (int b = 0; b < 256; b += 17) w[size_t(b) * 16] *= 40.0f;  // some loud blocks
  const float ts = s->tensor_scale(w.data(), n);
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  EXPECT_FLOAT_EQ(ts, amax / 2688.0f);
  bool saw_448 = false;
  for (int b = 0; b < n / 16; ++b) {
    const float* x = &w[size_t(b) * 16];
    const GroupParams p = s->fit(x, 16, 1, 1.0f, ts);
    // The block scale is an E4M3 value within the E4M3 range.
    EXPECT_EQ(f8e4m3_to_f32(encode_e4m3(p.scale)), p.scale);
    EXPECT_GT(p.scale, 0.0f);
    EXPECT_LE(p.scale, 448.0f);
    saw_448 |= p.scale == 448.0f;
    float bamax = 0;
    for (int i = 0; i < 16; ++i) bamax = std::max(bamax, std::fabs(x[i]));
    // E4M3 has 3 mantissa bits: the block scale is within 2^-4 of amax/6/ts (normals).
    const float ideal = bamax / 6.0f / ts;
    if (ideal >= 1.0f / 64) {
      EXPECT_NEAR(p.scale, ideal, ideal / 16 * 1.0001f);
    }
    const float step = p.scale * ts;
    for (int i = 0; i < 16; ++i) {
      const uint8_t c = s->quantize(x[i], p, ts);
      const float d = s->dequantize(c, p, ts);
      EXPECT_FLOAT_EQ(d, (c & 8 ? -1 : 1) * kE2M1[c & 7] * p.scale * ts);
      // Half the widest E2M1 gap (4..6) is one step; saturation past 6 loses < 0.375.
      EXPECT_LE(std::fabs(d - x[i]), step * 1.0001f) << b << " " << i;
    }
  }
  EXPECT_TRUE(saw_448);  // the tensor's amax block uses the top of E4M3
}

TEST(SchemeNVFP4, ZeroBlockAndNonFinite) {
  auto s = make("nvfp4");
  std::vector<float> z(16, 0.0f);
  const GroupParams p = s->fit(z.data(), 16, 1, 1.0f, 0.01f);
  EXPECT_GT(p.scale, 0.0f);
  EXPECT_TRUE(std::isfinite(p.scale));
  EXPECT_EQ(rt(*s, 0.0f, p, 0.01f), 0.0f);
  EXPECT_EQ(rt(*s, -0.0f, p, 0.01f), 0.0f);
  z[4] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(s->fit(z.data(), 16, 1, 1.0f, 0.01f), InputError);
  EXPECT_THROW(s->quantize(std::nanf(""), p, 0.01f), InputError);
}

TEST(SchemeMX, NonFiniteRefusedEveryRow) {
  for (const char* name : {"mxint8", "mxint6", "mxint4", "mxint3", "mxfp4", "nvfp4"}) {
    auto s = make(name);
    std::vector<float> x(32, 1.0f);
    x[7] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(s->fit(x.data(), 16, 1, 1.0f, 1.0f), InputError) << name;
    EXPECT_THROW(s->tensor_scale(x.data(), 32), InputError) << name;
    x[7] = -std::numeric_limits<float>::infinity();
    EXPECT_THROW(s->fit(x.data(), 16, 1, 1.0f, 1.0f), InputError) << name;
    EXPECT_THROW(s->quantize(x[7], GroupParams{}, 1.0f), InputError) << name;
  }
}

// ---------------------------------------------------------------- scale encodings
TEST(ScaleEncoding, E8M0AllCodes) {
  for (int c = 0; c < 255; ++c) {
    const float v = decode_e8m0(uint8_t(c));
    EXPECT_EQ(v, std::ldexp(1.0f, c - 127));
    EXPECT_EQ(encode_e8m0(v), c);
  }
  EXPECT_TRUE(std::isnan(decode_e8m0(0xFF)));
  EXPECT_EQ(encode_e8m0(std::nanf("")), 0xFF);
  EXPECT_THROW(encode_e8m0(3.0f), Error);
  EXPECT_THROW(encode_e8m0(0.0f), Error);
}

TEST(ScaleEncoding, E4M3AllCodesTiesAndSaturation) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN
    EXPECT_EQ(encode_e4m3(f8e4m3_to_f32(uint8_t(c))), c) << c;
  }
  // Midpoints between neighbours round to the even code (mantissa lsb 0).
  for (int c = 0; c < 0x7E; ++c) {
    const double lo = f8e4m3_to_f32(uint8_t(c)), hi = f8e4m3_to_f32(uint8_t(c + 1));
    const float mid = float((lo + hi) / 2);
    ASSERT_EQ(double(mid), (lo + hi) / 2);
    EXPECT_EQ(encode_e4m3(mid), (c % 2 == 0) ? c : c + 1) << c;
    EXPECT_EQ(encode_e4m3(std::nextafter(mid, 0.0f)), c);
    EXPECT_EQ(encode_e4m3(std::nextafter(mid, 1e9f)), c + 1);
  }
  EXPECT_EQ(encode_e4m3(0.0f), 0x00);
  EXPECT_EQ(encode_e4m3(448.0f), 0x7E);
  EXPECT_EQ(encode_e4m3(460.0f), 0x7E);
  EXPECT_EQ(encode_e4m3(1e30f), 0x7E);
  EXPECT_EQ(encode_e4m3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(encode_e4m3(-500.0f), 0xFE);
  EXPECT_EQ(encode_e4m3(std::ldexp(1.0f, -11)), 0x00);  // a quarter of the min subnormal
  EXPECT_EQ(encode_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half: tie to even (0)
  EXPECT_EQ(encode_e4m3(std::ldexp(3.0f, -11)), 0x01);
}

// ---------------------------------------------------------------- packing
TEST(Packing, RoundTripAllWidthsOddCounts) {
  std::mt19937 rng(3);
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t count : {0, 1, 3, 7, 13, 101, 1001}) {
      std::vector<uint8_t> codes(static_cast<size_t>(count));
      for (auto& c : codes) c = uint8_t(rng() & ((1u << bits) - 1));
      const auto packed = pack_codes(codes, bits);
      EXPECT_EQ(int64_t(packed.size()), (count * bits + 7) / 8);
      EXPECT_EQ(unpack_codes(packed, bits, count), codes) << bits << " " << count;
    }
}

TEST(Packing, LsbFirstLayout) {
  EXPECT_EQ(pack_codes({1, 2, 3}, 4), (std::vector<uint8_t>{0x21, 0x03}));
  EXPECT_EQ(pack_codes({7, 0, 5}, 3), (std::vector<uint8_t>{0x47, 0x01}));
  EXPECT_EQ(pack_codes({1, 2, 3, 0}, 2), (std::vector<uint8_t>{0x39}));
  EXPECT_EQ(pack_codes({0xAB}, 8), (std::vector<uint8_t>{0xAB}));
  // High bits beyond `bits` are ignored.
  EXPECT_EQ(pack_codes({0xF1}, 4), (std::vector<uint8_t>{0x01}));
}
