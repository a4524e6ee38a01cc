// rmsnorm, rope, silu_mul, add_inplace and log_softmax against float64 loops.
#include <cmath>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "tests/kernels/cpu_test_util.h"

namespace qshard::test {
namespace {

// Elementwise relative tolerances, in units of fp32's 6e-8 roundoff: rmsnorm and rope
// round a handful of times per element, silu_mul goes through a ~2 ulp exp.
constexpr double kRmsNormTol = 1e-6;
constexpr double kRopeTol = 1e-6;       // normwise: relative to the largest |x|
constexpr double kSiluMulTol = 2e-6;    // below |ref| = 1e-6 absolute
// log_softmax: relative to max(1, |ref|): |x - max| is exact or rounded once, the
// log-sum-exp carries ~1 ulp.
constexpr double kLogSoftmaxTol = 1e-6;

class RmsNormTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(RmsNormTest, MatchesFloat64) {
  const auto [rows, dim, in_place] = GetParam();
  auto be = make_cpu_backend();
  Rng rng(rows * 100 + dim);
  const auto x = rng.normal(rows * dim, 3.0f), w = rng.uniform(dim, 0.5f, 1.5f);
  const float eps = 1e-5f;
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / double(dim) + double(eps));
    for (int64_t i = 0; i < dim; ++i) ref[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  Tensor xt = be->upload(host_f32({rows, dim}, x)), wt = be->upload(host_f32({dim}, w));
  Tensor y = in_place ? xt : be->zeros(DType::F32, {rows, dim});
  be->rmsnorm(xt, wt, eps, y);
  std::ostringstream what;
  what << "rmsnorm rows=" << rows << " dim=" << dim << (in_place ? " in place" : "");
  expect_elementwise(values_of(*be, y), ref, kRmsNormTol, 1e-30, what.str());
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(std::tuple{1, 1, false}, std::tuple{3, 5, false},
                                           std::tuple{7, 13, true}, std::tuple{33, 256, false},
                                           std::tuple{129, 256, true}, std::tuple{5, 4099, true}));

TEST(RmsNorm, RejectsMismatchedShapes) {
  auto be = make_cpu_backend();
  Tensor x = be->zeros(DType::F32, {3, 8}), w = be->zeros(DType::F32, {7});
  EXPECT_THROW(be->rmsnorm(x, w, 1e-6f, x), Error);
  Tensor w_ok = be->zeros(DType::F32, {8}), y_bad = be->zeros(DType::F32, {8, 3});
  EXPECT_THROW(be->rmsnorm(x, w_ok, 1e-6f, y_bad), Error);
  Tensor y_overlap = x.rows(1, 3).reshape({2, 8});
  Tensor x_first = x.rows(0, 2);
  EXPECT_THROW(be->rmsnorm(x_first, w_ok, 1e-6f, y_overlap), Error);
}

struct RopeTables {
  int64_t positions, half;
  std::vector<float> cos, sin;
};

// The tables transformers builds: angle = pos * theta^(-2i/head_dim).
RopeTables rope_tables(int64_t positions, int64_t head_dim) {
  RopeTables t{positions, head_dim / 2, {}, {}};
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < t.half; ++i) {
      const double angle = double(p) * std::pow(10000.0, -2.0 * double(i) / double(head_dim));
      t.cos.push_back(float(std::cos(angle)));
      t.sin.push_back(float(std::sin(angle)));
    }
  return t;
}

class RopeTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(RopeTest, MatchesFloat64) {
  const auto [tokens, n_heads, head_dim] = GetParam();
  auto be = make_cpu_backend();
  Rng rng(tokens * 10 + n_heads + head_dim);
  const RopeTables tab = rope_tables(300, head_dim);
  const int64_t row = n_heads * head_dim, half = head_dim / 2;
  const auto x = rng.normal(tokens * row);
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (auto& p : pos) p = rng.integer(0, int32_t(tab.positions - 1));
  std::vector<double> ref(x.size());
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < n_heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = t * row + h * head_dim + i, b = a + half, c = pos[t] * half + i;
        ref[a] = double(x[a]) * tab.cos[c] - double(x[b]) * tab.sin[c];
        ref[b] = double(x[b]) * tab.cos[c] + double(x[a]) * tab.sin[c];
      }
  Tensor xt = be->upload(host_f32({tokens, row}, x));
  be->rope(xt, n_heads, head_dim, be->upload(host_f32({tab.positions, half}, tab.cos)),
           be->upload(host_f32({tab.positions, half}, tab.sin)), be->upload(host_i32(pos)));
  std::ostringstream what;
  what << "rope tokens=" << tokens << " heads=" << n_heads << " head_dim=" << head_dim;
  expect_normwise(values_of(*be, xt), ref, kRopeTol, what.str());
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(std::tuple{1, 1, 2}, std::tuple{5, 3, 6},
                                           std::tuple{17, 2, 10}, std::tuple{64, 4, 64},
                                           std::tuple{3, 32, 128}));

TEST(Rope, RejectsOutOfRangePositionsAndBadShapes) {
  auto be = make_cpu_backend();
  const RopeTables tab = rope_tables(8, 4);
  Tensor cos = host_f32({8, 2}, tab.cos), sin = host_f32({8, 2}, tab.sin);
  Tensor x = be->zeros(DType::F32, {3, 8});
  EXPECT_NO_THROW(be->rope(x, 2, 4, cos, sin, host_i32({0, 7, 3})));
  EXPECT_THROW(be->rope(x, 2, 4, cos, sin, host_i32({0, 8, 3})), Error);
  EXPECT_THROW(be->rope(x, 2, 4, cos, sin, host_i32({0, -1, 3})), Error);
  EXPECT_THROW(be->rope(x, 2, 4, cos, sin, host_i32({0, 1})), Error);      // 2 positions, 3 tokens
  EXPECT_THROW(be->rope(x, 4, 2, cos, sin, host_i32({0, 1, 2})), Error);   // tables for head_dim 4
  EXPECT_THROW(be->rope(x, 3, 4, cos, sin, host_i32({0, 1, 2})), Error);   // 3*4 != 8
  Tensor x_odd = be->zeros(DType::F32, {3, 6});
  EXPECT_THROW(be->rope(x_odd, 2, 3, cos, sin, host_i32({0, 1, 2})), Error);  // odd head_dim
  Tensor pos_f32 = host_f32({3}, {0, 1, 2});
  EXPECT_THROW(be->rope(x, 2, 4, cos, sin, pos_f32), Error);
}

TEST(SiluMul, MatchesFloat64IncludingAliasedOutputs) {
  auto be = make_cpu_backend();
  for (int64_t n : {1, 7, 1000, 40000}) {
    Rng rng(n);
    auto gate = rng.normal(n, 4.0f);
    const auto up = rng.normal(n);
    if (n >= 4) gate[0] = 100.0f, gate[1] = -100.0f, gate[2] = 1e4f, gate[3] = -1e4f;
    std::vector<double> ref(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      ref[i] = double(gate[i]) / (1.0 + std::exp(-double(gate[i]))) * double(up[i]);
    for (int alias = 0; alias < 3; ++alias) {  // out separate, out = gate, out = up
      Tensor g = be->upload(host_f32({n}, gate)), u = be->upload(host_f32({n}, up));
      Tensor out = alias == 0 ? be->zeros(DType::F32, {n}) : alias == 1 ? g : u;
      be->silu_mul(g, u, out);
      std::ostringstream what;
      what << "silu_mul n=" << n << " alias=" << alias;
      expect_elementwise(values_of(*be, out), ref, kSiluMulTol, 1e-6, what.str());
    }
  }
  Tensor a = be->zeros(DType::F32, {4, 2}), b = be->zeros(DType::F32, {2, 4});
  EXPECT_THROW(be->silu_mul(a, b, a), Error);
}

TEST(AddInplace, IsExactFloatAddition) {
  auto be = make_cpu_backend();
  for (int64_t n : {1, 13, 50001}) {
    Rng rng(n);
    const auto x = rng.normal(n), y = rng.normal(n, 10.0f);
    Tensor xt = be->upload(host_f32({n}, x));
    be->add_inplace(xt, be->upload(host_f32({n}, y)));
    const auto got = values_of(*be, xt);
    expect_sane(got, "add_inplace");
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], x[i] + y[i]) << "element " << i;
  }
  Tensor a = be->zeros(DType::F32, {4}), b = be->zeros(DType::F32, {5});
  EXPECT_THROW(be->add_inplace(a, b), Error);
}

std::vector<double> log_softmax_ref(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, double(x[r * cols + j]));
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(x[r * cols + j]) - mx);
    for (int64_t j = 0; j < cols; ++j) y[r * cols + j] = double(x[r * cols + j]) - mx - std::log(sum);
  }
  return y;
}

class LogSoftmaxTest
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, float, bool>> {};

TEST_P(LogSoftmaxTest, MatchesFloat64AndNormalizes) {
  const auto [rows, cols, magnitude, in_place] = GetParam();
  auto be = make_cpu_backend();
  Rng rng(rows * 1000 + cols);
  const auto x = rng.uniform(rows * cols, -magnitude, magnitude);
  Tensor xt = be->upload(host_f32({rows, cols}, x));
  Tensor y = in_place ? xt : be->zeros(DType::F32, {rows, cols});
  be->log_softmax(xt, y);
  const auto got = values_of(*be, y);
  std::ostringstream what;
  what << "log_softmax rows=" << rows << " cols=" << cols << " magnitude=" << magnitude;
  expect_elementwise(got, log_softmax_ref(x, rows, cols), kLogSoftmaxTol, 1.0, what.str());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(got[r * cols + j]));
    EXPECT_NEAR(sum, 1.0, 1e-5) << what.str() << " row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LogSoftmaxTest,
    ::testing::Values(std::tuple{1, 1, 1.0f, false}, std::tuple{3, 2, 5.0f, true},
                      std::tuple{7, 7, 10.0f, false}, std::tuple{17, 1000, 20.0f, true},
                      std::tuple{5, 4096, 1e4f, false}, std::tuple{3, 4097, 1e4f, true},
                      std::tuple{65, 513, 3.0f, false}));

TEST(LogSoftmax, MinusInfinityLogitsStayMinusInfinity) {
  auto be = make_cpu_backend();
  Tensor x = be->upload(host_f32({1, 4}, {-INFINITY, 0.0f, -INFINITY, 0.0f}));
  be->log_softmax(x, x);
  const auto got = values_of(*be, x);
  EXPECT_EQ(got[0], -INFINITY);
  EXPECT_EQ(got[2], -INFINITY);
  EXPECT_NEAR(got[1], -std::log(2.0), 1e-7);
  EXPECT_NEAR(got[3], -std::log(2.0), 1e-7);
}

TEST(LogSoftmax, RejectsMismatchedShapes) {
  auto be = make_cpu_backend();
  Tensor x = be->zeros(DType::F32, {3, 8}), y = be->zeros(DType::F32, {8, 3});
  EXPECT_THROW(be->log_softmax(x, y), Error);
  Tensor x1 = be->zeros(DType::F32, {24});
  EXPECT_THROW(be->log_softmax(x1, x1), Error);
}

}  // namespace
}  // namespace qshard::test
