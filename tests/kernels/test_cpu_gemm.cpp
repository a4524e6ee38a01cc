// linear and attention against plain float64 loops.
#include <cmath>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "tests/kernels/cpu_test_util.h"

namespace qshard::test {
namespace {

// fp32 GEMM error grows like sqrt(K) times the unit roundoff (6e-8) for random inputs;
// this leaves ~10x headroom over what OpenBLAS shows.
double linear_tol(int64_t k) { return 1e-6 * std::sqrt(double(std::max<int64_t>(k, 1))); }
// Scores (a head_dim dot product), the softmax (exp to ~2 ulp) and a convex
// combination of v rows: a few ulps of the output's scale.
constexpr double kAttentionTol = 1e-5;

std::vector<double> linear_ref(const std::vector<float>& x, const std::vector<float>& w,
                               const std::vector<float>* bias, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias ? double((*bias)[j]) : 0.0;
      for (int64_t l = 0; l < k; ++l) acc += double(x[i * k + l]) * double(w[j * k + l]);
      y[i * n + j] = acc;
    }
  return y;
}

class LinearTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, bool>> {};

TEST_P(LinearTest, MatchesFloat64) {
  const auto [m, n, k, with_bias] = GetParam();
  auto be = make_cpu_backend();
  Rng rng(1000 + m * 7 + n * 13 + k);
  const auto x = rng.normal(m * k), w = rng.normal(n * k, 0.1f), b = rng.normal(n);
  Tensor xt = be->upload(host_f32({m, k}, x)), wt = be->upload(host_f32({n, k}, w));
  Tensor bt = be->upload(host_f32({n}, b));
  Tensor y = be->zeros(DType::F32, {m, n});
  be->linear(xt, wt, with_bias ? &bt : nullptr, y);
  std::ostringstream what;
  what << "linear m=" << m << " n=" << n << " k=" << k << " bias=" << with_bias;
  expect_normwise(values_of(*be, y), linear_ref(x, w, with_bias ? &b : nullptr, m, n, k),
                  linear_tol(k), what.str());
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(std::tuple{1, 1, 1, false}, std::tuple{1, 1, 1, true},
                                           std::tuple{7, 13, 5, true}, std::tuple{33, 17, 64, false},
                                           std::tuple{129, 96, 256, true},
                                           std::tuple{5, 3, 0, true},  // K = 0: y = bias
                                           std::tuple{64, 768, 257, false},
                                           // split over threads by rows / by columns
                                           std::tuple{600, 40, 200, true},
                                           std::tuple{5, 1000, 500, true}));

// A row's output bits must not depend on how many rows the call has or where the row
// sits: the pipeline hands a Linear rows batched and split over ranks (an MoE expert its
// routed rows), and identical bytes at every rank count rest on it. OpenBLAS rounds a row
// differently by the GEMM's M (its SkylakeX small-matrix path below an M·N·K bound, tail
// kernels on other cores): 1 and 2 ranks of rand-mixtral once differed by one expert.
TEST(Linear, RowBitsDoNotDependOnTheRowCount) {
  auto be = make_cpu_backend();
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{48, 64}, {64, 48}, {1100, 96}}) {
    const int64_t m = 600;
    Rng rng(77 + n);
    const auto x = rng.normal(m * k), w = rng.normal(n * k, 0.1f), b = rng.normal(n);
    const Tensor wt = be->upload(host_f32({n, k}, w)), bt = be->upload(host_f32({n}, b));
    Tensor all = be->zeros(DType::F32, {m, n});
    be->linear(be->upload(host_f32({m, k}, x)), wt, &bt, all);
    const std::vector<float> ref = values_of(*be, all);
    for (const auto& [begin, rows] : {std::pair<int64_t, int64_t>{0, 1}, {3, 7}, {11, 25}, {17, 100}, {40, 256},
                                      {0, 257}, {1, 299}, {5, 595}}) {
      const std::vector<float> part(x.begin() + begin * k, x.begin() + (begin + rows) * k);
      Tensor y = be->zeros(DType::F32, {rows, n});
      be->linear(be->upload(host_f32({rows, k}, part)), wt, &bt, y);
      const std::vector<float> got = values_of(*be, y);
      int64_t differ = 0;
      for (int64_t i = 0; i < rows * n; ++i) differ += got[size_t(i)] != ref[size_t(begin * n + i)];
      EXPECT_EQ(differ, 0) << "rows [" << begin << ", " << begin + rows << ") of " << m << ", n=" << n << " k=" << k;
    }
  }
}

TEST(Linear, RejectsMismatchedShapes) {
  auto be = make_cpu_backend();
  Tensor x = be->zeros(DType::F32, {4, 8}), w = be->zeros(DType::F32, {3, 7});
  Tensor y = be->zeros(DType::F32, {4, 3});
  EXPECT_THROW(be->linear(x, w, nullptr, y), Error);
  Tensor w_ok = be->zeros(DType::F32, {3, 8}), y_bad = be->zeros(DType::F32, {4, 4});
  EXPECT_THROW(be->linear(x, w_ok, nullptr, y_bad), Error);
  Tensor bias_bad = be->zeros(DType::F32, {4});
  EXPECT_THROW(be->linear(x, w_ok, &bias_bad, y), Error);
  Tensor x_bf16 = Tensor::zeros(DType::BF16, {4, 8});
  EXPECT_THROW(be->linear(x_bf16, w_ok, nullptr, y), Error);
  // y written while x is still being read.
  Tensor sq = be->zeros(DType::F32, {4, 4}), w_sq = be->zeros(DType::F32, {4, 4});
  EXPECT_THROW(be->linear(sq, w_sq, nullptr, sq), Error);
}

std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, const AttentionShape& s,
                                  float scale) {
  const int64_t d = s.head_dim, ldq = s.n_heads * d, ldkv = s.n_kv_heads * d;
  const int64_t group = s.n_heads / s.n_kv_heads;
  std::vector<double> out(size_t(s.batch * s.seqlen * ldq));
  std::vector<double> p(size_t(s.seqlen));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.n_heads; ++h)
      for (int64_t i = 0; i < s.seqlen; ++i) {
        const int64_t qi = (b * s.seqlen + i) * ldq + h * d;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t kj = (b * s.seqlen + j) * ldkv + (h / group) * d;
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) dot += double(q[qi + c]) * double(k[kj + c]);
          p[j] = dot * double(scale);
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0.0;
          for (int64_t j = 0; j <= i; ++j)
            acc += p[j] * double(v[(b * s.seqlen + j) * ldkv + (h / group) * d + c]);
          out[qi + c] = acc / sum;
        }
      }
  return out;
}

struct AttentionCase {
  AttentionShape shape;
  std::vector<float> q, k, v;
  float scale;
};

AttentionCase make_case(const AttentionShape& s, uint64_t seed) {
  Rng rng(seed);
  const int64_t tokens = s.batch * s.seqlen;
  // Scores of a few units, as in a trained model, so the softmax is neither flat nor
  // one-hot.
  return {s, rng.normal(tokens * s.n_heads * s.head_dim, 1.5f),
          rng.normal(tokens * s.n_kv_heads * s.head_dim, 1.5f),
          rng.normal(tokens * s.n_kv_heads * s.head_dim), 1.0f / std::sqrt(float(s.head_dim))};
}

std::vector<float> run_attention(Backend& be, const AttentionCase& c) {
  const AttentionShape& s = c.shape;
  const int64_t tokens = s.batch * s.seqlen;
  Tensor q = be.upload(host_f32({tokens, s.n_heads * s.head_dim}, c.q));
  Tensor k = be.upload(host_f32({tokens, s.n_kv_heads * s.head_dim}, c.k));
  Tensor v = be.upload(host_f32({tokens, s.n_kv_heads * s.head_dim}, c.v));
  Tensor out = be.zeros(DType::F32, {tokens, s.n_heads * s.head_dim});
  be.attention(q, k, v, s, c.scale, out);
  return values_of(be, out);
}

class AttentionTest : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionTest, MatchesFloat64) {
  const AttentionShape s = GetParam();
  auto be = make_cpu_backend();
  const AttentionCase c = make_case(s, 77 + s.seqlen * 31 + s.n_heads);
  std::ostringstream what;
  what << "attention batch=" << s.batch << " seqlen=" << s.seqlen << " heads=" << s.n_heads
       << "/" << s.n_kv_heads << " head_dim=" << s.head_dim;
  expect_normwise(run_attention(*be, c), attention_ref(c.q, c.k, c.v, s, c.scale),
                  kAttentionTol, what.str());
}

// {batch, seqlen, n_heads, n_kv_heads, head_dim}: seqlen 1; GQA ratios 1, 2, 4;
// head_dim not a multiple of 8; seqlen across the 64-query tile edges; the tiny model;
// a seqlen long enough for larger tiles.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttentionShape{1, 1, 1, 1, 8}, AttentionShape{3, 1, 4, 2, 5},
                      AttentionShape{2, 5, 2, 2, 6}, AttentionShape{3, 17, 4, 2, 10},
                      AttentionShape{2, 70, 8, 2, 12}, AttentionShape{1, 129, 4, 1, 64},
                      AttentionShape{2, 64, 2, 1, 3}, AttentionShape{4, 256, 4, 2, 64},
                      AttentionShape{1, 600, 2, 1, 16}));  // 128-query tiles

// Each window must see only its own tokens: the batched result equals each window run
// alone, bit for bit, and changing one window's keys leaves the others untouched.
TEST(Attention, WindowsDoNotAttendAcrossEachOther) {
  const AttentionShape s{3, 70, 4, 2, 16};
  auto be = make_cpu_backend();
  AttentionCase c = make_case(s, 5);
  const std::vector<float> batched = run_attention(*be, c);

  const int64_t q_row = s.n_heads * s.head_dim, kv_row = s.n_kv_heads * s.head_dim;
  for (int64_t b = 0; b < s.batch; ++b) {
    AttentionCase one{{1, s.seqlen, s.n_heads, s.n_kv_heads, s.head_dim}, {}, {}, {}, c.scale};
    auto slice = [&](const std::vector<float>& all, int64_t row) {
      return std::vector<float>(all.begin() + b * s.seqlen * row,
                                all.begin() + (b + 1) * s.seqlen * row);
    };
    one.q = slice(c.q, q_row), one.k = slice(c.k, kv_row), one.v = slice(c.v, kv_row);
    EXPECT_EQ(run_attention(*be, one), slice(batched, q_row)) << "window " << b;
  }

  for (int64_t i = s.seqlen * kv_row; i < 2 * s.seqlen * kv_row; ++i) c.k[i] += 3.0f, c.v[i] = -c.v[i];
  const std::vector<float> changed = run_attention(*be, c);
  const size_t w = size_t(s.seqlen * q_row);
  EXPECT_TRUE(std::equal(changed.begin(), changed.begin() + w, batched.begin()));
  EXPECT_FALSE(std::equal(changed.begin() + w, changed.begin() + 2 * w, batched.begin() + w));
  EXPECT_TRUE(std::equal(changed.begin() + 2 * w, changed.end(), batched.begin() + 2 * w));
}

TEST(Attention, RejectsBadShapes) {
  auto be = make_cpu_backend();
  Tensor q = be->zeros(DType::F32, {8, 24}), kv = be->zeros(DType::F32, {8, 8});
  Tensor out = be->zeros(DType::F32, {8, 24});
  EXPECT_NO_THROW(be->attention(q, kv, kv, {2, 4, 3, 1, 8}, 0.5f, out));
  EXPECT_THROW(be->attention(q, kv, kv, {2, 4, 3, 2, 8}, 0.5f, out), Error);  // 3 % 2 != 0
  EXPECT_THROW(be->attention(q, kv, kv, {1, 4, 3, 1, 8}, 0.5f, out), Error);  // 4 tokens, not 8
  Tensor out_bad = be->zeros(DType::F32, {8, 16});
  EXPECT_THROW(be->attention(q, kv, kv, {2, 4, 3, 1, 8}, 0.5f, out_bad), Error);
  EXPECT_THROW(be->attention(q, kv, kv, {2, 4, 3, 0, 8}, 0.5f, out), Error);
}

}  // namespace
}  // namespace qshard::test
