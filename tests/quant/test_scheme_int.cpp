// INTk rows against a float64 re-implementation of GPTQ's quant.py Quantizer
// (shared/docs/algorithms.md §1.2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

using namespace qshard;

namespace {

// quant.py in float64. `fp32` = round to float wherever quant.py's torch tensors are fp32
// (every op is computed exactly enough in double that this is bit-exact fp32 emulation);
// without it the reference is the exact-arithmetic quantizer.
struct RefQuant {
  double scale = 0, zero = 0;
  bool fp32 = true;
};

double rnd(double v, bool fp32) { return fp32 ? double(float(v)) : v; }

RefQuant ref_params(const std::vector<float>& x, int bits, bool sym, double p = 1.0,
                    bool fp32 = true) {
  const double maxq = std::pow(2.0, bits) - 1;
  double xmin = 0, xmax = 0;
  for (float v : x) {
    xmin = std::min(xmin, double(v));
    xmax = std::max(xmax, double(v));
  }
  if (sym) {
    xmax = std::max(std::fabs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) {
    xmin = -1;
    xmax = 1;
  }
  RefQuant r;
  r.fp32 = fp32;
  const double pf = rnd(p, fp32);  // torch casts the python scalar to the tensor dtype
  const double lo = p == 1.0 ? xmin : rnd(pf * xmin, fp32);
  const double hi = p == 1.0 ? xmax : rnd(pf * xmax, fp32);
  r.scale = rnd(rnd(hi - lo, fp32) / maxq, fp32);
  r.zero = sym ? (maxq + 1) / 2 : std::nearbyint(rnd(-lo / r.scale, fp32));
  return r;
}

int ref_code(double x, const RefQuant& r, int bits) {
  const double maxq = std::pow(2.0, bits) - 1;
  return int(std::clamp(std::nearbyint(rnd(x / r.scale, r.fp32)) + r.zero, 0.0, maxq));
}

// quant.py's MSE search, norm 2.4, grid 100, maxshrink 0.8 (error summed in double).
RefQuant ref_mse(const std::vector<float>& x, int bits, bool sym) {
  RefQuant best = ref_params(x, bits, sym);
  double best_err = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 80; ++i) {
    const double p = 1 - i / 100.0;
    RefQuant r = ref_params(x, bits, sym, p);
    double err = 0;
    for (float v : x) {
      const double xq = rnd(r.scale * (ref_code(v, r, bits) - r.zero), true);
      err += std::pow(std::fabs(xq - v), 2.4);
    }
    if (err < best_err) {
      best_err = err;
      best = r;
    }
  }
  return best;
}

std::unique_ptr<Scheme> int_scheme(int bits, bool sym, int64_t g = 128) {
  return Scheme::make(QuantFormat::parse("int" + std::to_string(bits), g, sym));
}

std::vector<float> random_group(std::mt19937& rng, int n, int kind) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) {
    float z = nd(rng);
    switch (kind) {
      case 0: v = z * 0.02f; break;                   // centred
      case 1: v = std::fabs(z) * 0.5f + 0.1f; break;  // all positive (symmetric quirk)
      case 2: v = -std::fabs(z) * 3.0f; break;        // all negative
      case 3: v = z + 0.7f; break;                    // shifted
      default: v = z * z * z * 0.01f; break;          // heavy-tailed
    }
  }
  return x;
}

}  // namespace

TEST(SchemeInt, CodesMatchQuantPyFloat64Reference) {
  std::mt19937 rng(1234);
  int64_t checked = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false}) {
      auto s = int_scheme(bits, sym);
      const int maxq = (1 << bits) - 1;
      for (int kind = 0; kind < 5; ++kind)
        for (int rep = 0; rep < 8; ++rep) {
          auto x = random_group(rng, 128, kind);
          const RefQuant r = ref_params(x, bits, sym);
          const GroupParams p = s->fit(x.data(), 128, 1, 1.0f, 1.0f);
          EXPECT_EQ(double(p.scale), r.scale);
          EXPECT_EQ(double(p.zero), r.zero);
          EXPECT_GE(p.zero, 0.0f);
          EXPECT_LE(p.zero, float(maxq));
          for (float v : x) {
            ASSERT_EQ(int(s->quantize(v, p, 1.0f)), ref_code(v, r, bits))
                << "bits " << bits << " sym " << sym << " kind " << kind << " x " << v;
            ++checked;
          }
        }
    }
  EXPECT_EQ(checked, 7 * 2 * 5 * 8 * 128);
}

// Against exact (float64) arithmetic the codes differ only at structural ties: the
// extremes of a symmetric group sit at exactly ±maxq/2 steps, where fp32 rounding of the
// scale decides the side (as it does in quant.py under torch). Both sides cost the same.
TEST(SchemeInt, Float64ReferenceDiffersOnlyAtStructuralTies) {
  std::mt19937 rng(4321);
  int64_t ties = 0, checked = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false}) {
      auto s = int_scheme(bits, sym);
      for (int kind = 0; kind < 5; ++kind)
        for (int rep = 0; rep < 8; ++rep) {
          auto x = random_group(rng, 128, kind);
          const RefQuant r = ref_params(x, bits, sym, 1.0, /*fp32=*/false);
          const GroupParams p = s->fit(x.data(), 128, 1, 1.0f, 1.0f);
          EXPECT_NEAR(p.scale, r.scale, r.scale * 1e-6);
          EXPECT_NEAR(p.zero, r.zero, sym ? 0.0 : 1.0);
          if (double(p.zero) != r.zero) continue;  // zero itself at a near-tie
          for (float v : x) {
            const int want = ref_code(v, r, bits), got = s->quantize(v, p, 1.0f);
            ++checked;
            if (want == got) continue;
            const double t = v / r.scale;
            ASSERT_NEAR(std::fabs(t - std::trunc(t)), 0.5, 1e-5) << bits << " " << v;
            ASSERT_EQ(std::abs(want - got), 1);
            ++ties;
          }
        }
    }
  EXPECT_GT(checked, 50000);
  EXPECT_LT(ties, checked / 100);
}

TEST(SchemeInt, StridedGroupMatchesContiguous) {
  std::mt19937 rng(7);
  auto x = random_group(rng, 64, 3);
  std::vector<float> strided(64 * 3, 99.0f);
  for (int i = 0; i < 64; ++i) strided[size_t(i) * 3] = x[size_t(i)];
  auto s = int_scheme(4, false);
  const GroupParams a = s->fit(x.data(), 64, 1, 1.0f, 1.0f);
  const GroupParams b = s->fit(strided.data(), 64, 3, 1.0f, 1.0f);
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.zero, b.zero);
}

TEST(SchemeInt, MseSearchMatchesQuantPyReference) {
  std::mt19937 rng(99);
  ClipSearch clip;
  clip.enabled = true;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false}) {
      auto s = int_scheme(bits, sym);
      for (int kind = 0; kind < 5; ++kind) {
        auto x = random_group(rng, 128, kind);
        const RefQuant r = ref_mse(x, bits, sym);
        const GroupParams p = fit_group(*s, x.data(), 128, 1, 1.0f, clip);
        EXPECT_EQ(double(p.scale), r.scale) << bits << " " << sym << " " << kind;
        EXPECT_EQ(double(p.zero), r.zero);
        for (float v : x) ASSERT_EQ(int(s->quantize(v, p, 1.0f)), ref_code(v, r, bits));
      }
    }
}

TEST(SchemeInt, SymmetricQuirkWithoutNegativeValues) {
  // All-positive symmetric group keeps xmin = 0: scale = xmax/15, zero 8, and everything
  // above 7/15·xmax saturates to code 15.
  auto s = int_scheme(4, true);
  std::vector<float> x = {0.1f, 0.3f, 0.5f, 1.5f};
  const GroupParams p = s->fit(x.data(), 4, 1, 1.0f, 1.0f);
  EXPECT_FLOAT_EQ(p.scale, 1.5f / 15.0f);
  EXPECT_EQ(p.zero, 8.0f);
  EXPECT_EQ(s->quantize(1.5f, p, 1.0f), 15);
  EXPECT_FLOAT_EQ(s->dequantize(15, p, 1.0f), 7.0f * 1.5f / 15.0f);
  EXPECT_EQ(s->quantize(0.0f, p, 1.0f), 8);
  // With one negative value the range becomes symmetric.
  x.push_back(-0.01f);
  const GroupParams q = s->fit(x.data(), 5, 1, 1.0f, 1.0f);
  EXPECT_FLOAT_EQ(q.scale, 3.0f / 15.0f);
}

TEST(SchemeInt, GridPointsRoundTripExactly) {
  std::mt19937 rng(5);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false}) {
      auto s = int_scheme(bits, sym);
      auto x = random_group(rng, 128, 3);
      const GroupParams p = s->fit(x.data(), 128, 1, 1.0f, 1.0f);
      for (int q = 0; q < (1 << bits); ++q) {
        const float v = s->dequantize(uint8_t(q), p, 1.0f);
        EXPECT_EQ(int(s->quantize(v, p, 1.0f)), q) << bits << " " << sym;
        EXPECT_EQ(s->dequantize(s->quantize(v, p, 1.0f), p, 1.0f), v);
      }
    }
}

TEST(SchemeInt, TiesGoToEven) {
  auto sym = int_scheme(4, true);
  // xmax = 7.5 -> scale 2·7.5/15 = 1, zero 8.
  std::vector<float> x = {-7.5f, 7.5f};
  GroupParams p = sym->fit(x.data(), 2, 1, 1.0f, 1.0f);
  ASSERT_EQ(p.scale, 1.0f);
  EXPECT_EQ(sym->quantize(0.5f, p, 1.0f), 8);    // round(0.5) = 0
  EXPECT_EQ(sym->quantize(1.5f, p, 1.0f), 10);   // 2
  EXPECT_EQ(sym->quantize(2.5f, p, 1.0f), 10);   // 2
  EXPECT_EQ(sym->quantize(-0.5f, p, 1.0f), 8);   // -0
  EXPECT_EQ(sym->quantize(-1.5f, p, 1.0f), 6);   // -2
  EXPECT_EQ(sym->quantize(-2.5f, p, 1.0f), 6);   // -2
  auto asym = int_scheme(4, false);
  std::vector<float> y = {0.0f, 15.0f};  // scale 1, zero 0
  p = asym->fit(y.data(), 2, 1, 1.0f, 1.0f);
  ASSERT_EQ(p.scale, 1.0f);
  ASSERT_EQ(p.zero, 0.0f);
  EXPECT_EQ(asym->quantize(2.5f, p, 1.0f), 2);
  EXPECT_EQ(asym->quantize(3.5f, p, 1.0f), 4);
  // The zero point itself is rounded half to even (scale 1 exactly).
  std::vector<float> z = {-2.5f, 12.5f};
  EXPECT_EQ(asym->fit(z.data(), 2, 1, 1.0f, 1.0f).zero, 2.0f);
  z = {-3.5f, 11.5f};
  EXPECT_EQ(asym->fit(z.data(), 2, 1, 1.0f, 1.0f).zero, 4.0f);
  // fp32 as in torch: [-1, 1] at 4 bits gives fl(1/fl(2/15)) = 7.4999995 -> 7, not 8.
  z = {-1.0f, 1.0f};
  EXPECT_EQ(asym->fit(z.data(), 2, 1, 1.0f, 1.0f).zero, 7.0f);
}

TEST(SchemeInt, SaturatesAtTheGridEnds) {
  auto sym = int_scheme(4, true);
  std::vector<float> x = {-7.5f, 7.5f};
  const GroupParams p = sym->fit(x.data(), 2, 1, 1.0f, 1.0f);
  EXPECT_EQ(sym->quantize(7.5f, p, 1.0f), 15);  // +8 clamps to 7
  EXPECT_EQ(sym->quantize(-7.5f, p, 1.0f), 0);
  EXPECT_EQ(sym->quantize(1e30f, p, 1.0f), 15);
  EXPECT_EQ(sym->quantize(-1e30f, p, 1.0f), 0);
  auto asym = int_scheme(3, false);
  std::vector<float> y = {-1.0f, 2.0f};
  const GroupParams q = asym->fit(y.data(), 2, 1, 1.0f, 1.0f);
  EXPECT_EQ(asym->quantize(100.0f, q, 1.0f), 7);
  EXPECT_EQ(asym->quantize(-100.0f, q, 1.0f), 0);
  // Huge ranges do not overflow the step.
  std::vector<float> big = {-3e38f, 3e38f};
  const GroupParams b = sym->fit(big.data(), 2, 1, 1.0f, 1.0f);
  EXPECT_TRUE(std::isfinite(b.scale));
  EXPECT_EQ(sym->quantize(-3e38f, b, 1.0f), 0);
}

TEST(SchemeInt, TinyValuesAndZeros) {
  for (bool sym : {true, false}) {
    auto s = int_scheme(4, sym);
    std::vector<float> tiny = {1e-30f, -3e-30f, 2e-30f};
    GroupParams p = s->fit(tiny.data(), 3, 1, 1.0f, 1.0f);
    EXPECT_GT(p.scale, 0.0f);
    for (float v : tiny) EXPECT_NEAR(s->dequantize(s->quantize(v, p, 1.0f), p, 1.0f), v, p.scale);
    std::vector<float> sub = {1e-44f, -2e-44f};  // subnormal range: step stays positive
    p = s->fit(sub.data(), 2, 1, 1.0f, 1.0f);
    EXPECT_GT(p.scale, 0.0f);
    EXPECT_TRUE(std::isfinite(s->dequantize(s->quantize(sub[1], p, 1.0f), p, 1.0f)));
    // All-zero and negative-zero groups: degenerate range [-1, 1], zeros dequantize to 0.
    for (float z : {0.0f, -0.0f}) {
      std::vector<float> zeros(32, z);
      p = s->fit(zeros.data(), 32, 1, 1.0f, 1.0f);
      EXPECT_TRUE(std::isfinite(p.scale));
      EXPECT_GT(p.scale, 0.0f);
      EXPECT_FLOAT_EQ(p.scale, 2.0f / 15.0f);
      EXPECT_EQ(s->dequantize(s->quantize(z, p, 1.0f), p, 1.0f), 0.0f);
    }
  }
}

TEST(SchemeInt, NonFiniteRefused) {
  auto s = int_scheme(4, false);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = {1.0f, bad, 2.0f};
    EXPECT_THROW(s->fit(x.data(), 3, 1, 1.0f, 1.0f), InputError);
    EXPECT_THROW(s->tensor_scale(x.data(), 3), InputError);
    EXPECT_THROW(s->quantize(bad, GroupParams{}, 1.0f), InputError);
    try {
      s->tensor_scale(x.data(), 3);
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("NaN/Inf"), std::string::npos);
    }
  }
  std::vector<float> ok = {1.0f, -2.0f};
  EXPECT_EQ(s->tensor_scale(ok.data(), 2), 1.0f);
}
