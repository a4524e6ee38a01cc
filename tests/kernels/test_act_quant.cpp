// Backend::fake_quant_activations on the CPU backend: INT8 per token against the vLLM
// arithmetic written out here, MXINT8 against quant/scheme.cpp's MXINT8 row (the Scheme
// table every weight quantizer is checked against), plus the corner cases. The Python
// check (check_act_quant_python.py) compares the same outputs with torch / numpy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "act_quant_cases.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "quant/scheme.h"

namespace qshard {
namespace {

using test::kActCols;
using test::kActRows;

Tensor host(const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

Tensor run(ActFormat f, const std::vector<float>& x, int64_t rows, int64_t cols) {
  auto be = make_cpu_backend();
  Tensor in = host(x, rows, cols);
  Tensor out = be->zeros(DType::F32, {rows, cols});
  be->fake_quant_activations(in, f, out);
  return out;
}

bool same_bits(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub || (a == 0.0f && b == 0.0f);
}

TEST(ActQuant, Int8MatchesVllmArithmetic) {
  const std::vector<float> x = test::act_quant_input();
  const Tensor y = run(ActFormat::Int8, x, kActRows, kActCols);
  for (int64_t r = 0; r < kActRows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < kActCols; ++c) amax = std::max(amax, std::fabs(x[size_t(r * kActCols + c)]));
    const float scale = amax / 127.0f, inv = 127.0f / amax;
    for (int64_t c = 0; c < kActCols; ++c) {
      const float xv = x[size_t(r * kActCols + c)];
      float q = std::nearbyint(xv * inv);
      q = std::isnan(q) ? 0.0f : std::clamp(q, -128.0f, 127.0f);  // PTX cvt.rni.sat.s8.f32
      const float want = amax == 0 ? 0.0f : q * scale;
      ASSERT_TRUE(same_bits(y.data<float>()[r * kActCols + c], want))
          << "row " << r << " col " << c << ": " << y.data<float>()[r * kActCols + c] << " vs " << want;
    }
  }
  // Ties go to even codes: -4.5 -> -4, -3.5 -> -4, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
  const float* r0 = y.data<float>();
  EXPECT_EQ(r0[0], -4.0f);
  EXPECT_EQ(r0[1], -4.0f);
  EXPECT_EQ(r0[5], 0.0f);
  EXPECT_EQ(r0[6], 2.0f);
  EXPECT_EQ(r0[7], 127.0f);
  // Per token: the outlier row keeps its outlier and flushes the small values to 0.
  EXPECT_EQ(y.data<float>()[3 * kActCols + 40], 3000.0f);
}

TEST(ActQuant, MXInt8MatchesSchemeTable) {
  const std::vector<float> x = test::act_quant_input();
  const Tensor y = run(ActFormat::MXInt8, x, kActRows, kActCols);
  QuantFormat f = QuantFormat::parse("mxint8", 32, true);
  const auto scheme = Scheme::make(f);
  for (int64_t r = 0; r < kActRows; ++r)
    for (int64_t b = 0; b < kActCols; b += kMXInt8Block) {
      const int64_t n = std::min(kMXInt8Block, kActCols - b);
      const float* xb = x.data() + r * kActCols + b;
      const GroupParams p = scheme->fit(xb, n, 1, 1.0f, 1.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float want = scheme->dequantize(scheme->quantize(xb[i], p, 1.0f), p, 1.0f);
        ASSERT_TRUE(same_bits(y.data<float>()[r * kActCols + b + i], want))
            << "row " << r << " col " << b + i << ": " << y.data<float>()[r * kActCols + b + i]
            << " vs " << want;
      }
    }
  // Ties at E = 0 (step 1/64): 1/128 -> 0, 3/128 -> 2/64, -1/128 -> 0.
  const float* r1 = y.data<float>() + kActCols;
  EXPECT_EQ(r1[20], 0.0f);   // (2·20+1−40)/128 = 1/128
  EXPECT_EQ(r1[21], 2.0f / 64.0f);
  EXPECT_EQ(r1[19], 0.0f);   // −1/128
}

TEST(ActQuant, InPlaceEqualsOutOfPlace) {
  auto be = make_cpu_backend();
  const std::vector<float> x = test::act_quant_input();
  for (ActFormat f : {ActFormat::Int8, ActFormat::MXInt8, ActFormat::None}) {
    Tensor a = host(x, kActRows, kActCols);
    be->fake_quant_activations(a, f, a);
    const Tensor b = run(f, x, kActRows, kActCols);
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << act_format_name(f);
  }
}

// MXINT8 values are on the grid exactly, so quantizing them again changes nothing; INT8
// rescales by amax'/127 with amax' = 127·fl(amax/127), which may move values by an ulp.
TEST(ActQuant, MXInt8Idempotent) {
  const std::vector<float> x = test::act_quant_input();
  const Tensor y = run(ActFormat::MXInt8, x, kActRows, kActCols);
  const Tensor z = run(ActFormat::MXInt8, std::vector<float>(y.data<float>(), y.data<float>() + y.numel()),
                       kActRows, kActCols);
  EXPECT_EQ(std::memcmp(y.raw(), z.raw(), y.nbytes()), 0);
}

// Away from the degenerate subnormal row (row 5), every value is within half a step of
// its input: amax/254 per token for INT8, 2^(E−7) per block for MXINT8.
TEST(ActQuant, ErrorWithinHalfAStep) {
  const std::vector<float> x = test::act_quant_input();
  const Tensor yi = run(ActFormat::Int8, x, kActRows, kActCols);
  const Tensor ym = run(ActFormat::MXInt8, x, kActRows, kActCols);
  for (int64_t r = 0; r < kActRows; ++r) {
    if (r == 5) continue;
    const float* xr = x.data() + r * kActCols;
    float amax = 0;
    for (int64_t c = 0; c < kActCols; ++c) amax = std::max(amax, std::fabs(xr[c]));
    for (int64_t c = 0; c < kActCols; ++c)
      ASSERT_LE(std::fabs(yi.data<float>()[r * kActCols + c] - xr[c]), amax / 254.0f * 1.0001f)
          << "int8 row " << r << " col " << c;
    for (int64_t b = 0; b < kActCols; b += kMXInt8Block) {
      float bmax = 0;
      for (int64_t c = b; c < std::min(b + kMXInt8Block, kActCols); ++c) bmax = std::max(bmax, std::fabs(xr[c]));
      if (bmax == 0) continue;
      const float half_step = std::ldexp(1.0f, int(std::floor(std::log2(bmax))) - 7);
      for (int64_t c = b; c < std::min(b + kMXInt8Block, kActCols); ++c) {
        // The largest magnitudes (above 127/64 · 2^E) saturate; they lie within one step.
        const float tol = std::fabs(xr[c]) > std::ldexp(127.0f, int(std::floor(std::log2(bmax))) - 6)
                              ? 2 * half_step : half_step;
        ASSERT_LE(std::fabs(ym.data<float>()[r * kActCols + c] - xr[c]), tol) << "mxint8 row " << r << " col " << c;
      }
    }
  }
}

TEST(ActQuant, NonFiniteRowBecomesNaN) {
  std::vector<float> x(2 * 64, 0.5f);
  x[3] = std::numeric_limits<float>::infinity();
  for (ActFormat f : {ActFormat::Int8, ActFormat::MXInt8}) {
    const Tensor y = run(f, x, 2, 64);
    EXPECT_TRUE(std::isnan(y.data<float>()[0])) << act_format_name(f);
    EXPECT_EQ(y.data<float>()[64], 0.5f) << act_format_name(f);  // the next row is untouched
  }
}

TEST(ActQuant, ParseNames) {
  EXPECT_EQ(parse_act_format("none"), ActFormat::None);
  EXPECT_EQ(parse_act_format("int8"), ActFormat::Int8);
  EXPECT_EQ(parse_act_format("mxint8"), ActFormat::MXInt8);
  EXPECT_THROW(parse_act_format("fp8"), InputError);
  EXPECT_STREQ(act_format_name(ActFormat::MXInt8), "mxint8");
}

// A backend that does not implement the op refuses it with an InputError naming itself.
TEST(ActQuant, DefaultBackendOpRefuses) {
  class Bare : public Backend {
   public:
    std::string name() const override { return "bare"; }
    Tensor zeros(DType d, Shape s) override { return Tensor::zeros(d, std::move(s)); }
    Tensor upload(const Tensor& t) override { return t; }
    Tensor download(const Tensor& t) override { return t; }
    void linear(const Tensor&, const Tensor&, const Tensor*, Tensor&) override {}
    void rmsnorm(const Tensor&, const Tensor&, float, Tensor&) override {}
    void rope(Tensor&, int64_t, int64_t, const Tensor&, const Tensor&, const Tensor&) override {}
    void attention(const Tensor&, const Tensor&, const Tensor&, const AttentionShape&, float,
                   Tensor&) override {}
    void silu_mul(const Tensor&, const Tensor&, Tensor&) override {}
    void add_inplace(Tensor&, const Tensor&) override {}
    void embedding(const Tensor&, const Tensor&, Tensor&) override {}
    void log_softmax(const Tensor&, Tensor&) override {}
  } bare;
  Tensor x = Tensor::zeros(DType::F32, {1, 4});
  try {
    bare.fake_quant_activations(x, ActFormat::Int8, x);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bare backend"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qshard
