// GPTQ against a plain float64 re-implementation of the reference gptq.py / quant.py
// (algorithms.md §1.2–1.6), written here independently of src/quant.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "quant/gptq.h"
#include "quant/gptq_error.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {
namespace {

using Mat = std::vector<double>;  // row-major

// ---------------------------------------------------------------- seeded test layers
struct Layer {
  int64_t out = 0, in = 0, tokens = 0;
  std::vector<float> w;  // [out, in]
  std::vector<float> x;  // [tokens, in]
  Mat h64;               // 2/n · XᵀX in double
};

// Correlated activations: X = Z + F·Aᵀ (a rank-8 shared component), a few outlier
// channels ×12, optionally one dead (all-zero) channel. Weights ~ N(0, 0.02²) with a few
// large entries.
Layer make_layer(int64_t out, int64_t in, int64_t tokens, uint32_t seed, int dead_col = -1) {
  Layer L;
  L.out = out, L.in = in, L.tokens = tokens;
  std::mt19937 g(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int r = 8;
  std::vector<double> A(static_cast<size_t>(in * r));
  for (auto& v : A) v = nd(g) * 0.7;
  L.x.resize(size_t(tokens * in));
  std::vector<double> f(r);
  for (int64_t t = 0; t < tokens; ++t) {
    for (auto& v : f) v = nd(g);
    for (int64_t c = 0; c < in; ++c) {
      double v = nd(g);
      for (int k = 0; k < r; ++k) v += f[size_t(k)] * A[size_t(c * r + k)];
      if (c % 61 == 7) v *= 12.0;  // outlier channels
      if (c == dead_col) v = 0.0;
      L.x[size_t(t * in + c)] = float(v);
    }
  }
  L.w.resize(size_t(out * in));
  for (auto& v : L.w) v = float(nd(g) * 0.02);
  for (int k = 0; k < 6; ++k) L.w[size_t((k * 7919) % (out * in))] = float(0.15 * (k % 2 ? -1 : 1));
  L.h64.assign(size_t(in * in), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xr = L.x.data() + t * in;
    for (int64_t i = 0; i < in; ++i) {
      const double xi = xr[i];
      if (xi == 0) continue;
      double* hr = L.h64.data() + i * in;
      for (int64_t j = 0; j < in; ++j) hr[j] += xi * double(xr[j]);
    }
  }
  for (auto& v : L.h64) v *= 2.0 / double(tokens);
  return L;
}

Tensor to_tensor(const std::vector<float>& v, Shape s) {
  Tensor t = Tensor::zeros(DType::F32, std::move(s));
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

Tensor hessian_of(const Layer& L) {
  HessianAccumulator acc(L.in);
  // Two uneven batches, to exercise accumulation.
  const int64_t split = L.tokens / 3;
  std::vector<float> a(L.x.begin(), L.x.begin() + split * L.in);
  std::vector<float> b(L.x.begin() + split * L.in, L.x.end());
  acc.add(to_tensor(a, {split, L.in}));
  acc.add(to_tensor(b, {L.tokens - split, L.in}));
  EXPECT_EQ(acc.tokens(), L.tokens);
  return acc.normalized();
}

// ‖(W − Q)Xᵀ‖² / ‖WXᵀ‖² = tr(ΔHΔᵀ)/tr(WHWᵀ).
double recon_error(const Layer& L, const std::vector<double>& q) {
  double num = 0, den = 0;
  std::vector<double> dr(static_cast<size_t>(L.in)), wr(static_cast<size_t>(L.in));
  for (int64_t r = 0; r < L.out; ++r) {
    for (int64_t c = 0; c < L.in; ++c) {
      wr[size_t(c)] = L.w[size_t(r * L.in + c)];
      dr[size_t(c)] = wr[size_t(c)] - q[size_t(r * L.in + c)];
    }
    for (int64_t i = 0; i < L.in; ++i) {
      const double* hr = L.h64.data() + i * L.in;
      double sd = 0, sw = 0;
      for (int64_t j = 0; j < L.in; ++j) sd += hr[j] * dr[size_t(j)], sw += hr[j] * wr[size_t(j)];
      num += dr[size_t(i)] * sd;
      den += wr[size_t(i)] * sw;
    }
  }
  return num / den;
}

// Dequantize with the scheme row directly (independent of QuantizedLinear::dequantize).
std::vector<double> decode(const QuantizedLinear& q, const Scheme& scheme) {
  const int64_t ng = q.n_groups();
  std::vector<double> out(static_cast<size_t>(q.out_features * q.in_features));
  for (int64_t r = 0; r < q.out_features; ++r)
    for (int64_t c = 0; c < q.in_features; ++c) {
      const int64_t g = q.g_idx[size_t(c)];
      GroupParams p;
      p.scale = q.scales[size_t(r * ng + g)];
      p.zero = q.zeros.empty() ? 0.0f : q.zeros[size_t(r * ng + g)];
      out[size_t(r * q.in_features + c)] =
          scheme.dequantize(q.codes[size_t(r * q.in_features + c)], p, q.tensor_scale);
    }
  return out;
}

// ---------------------------------------------------------------- float64 reference
// quant.py Quantizer, per row of the slice it is given.
struct RefQuantizer {
  int bits = 4;
  bool sym = true;
  std::vector<double> scale, zero;  // per row
  double maxq() const { return double((1 << bits) - 1); }
  void find_params(const Mat& w, int64_t ld, int64_t rows, int64_t c0, int64_t n) {
    scale.assign(size_t(rows), 0);
    zero.assign(size_t(rows), 0);
    for (int64_t r = 0; r < rows; ++r) {
      double xmin = 0, xmax = 0;
      for (int64_t j = c0; j < c0 + n; ++j) {
        xmin = std::min(xmin, w[size_t(r * ld + j)]);
        xmax = std::max(xmax, w[size_t(r * ld + j)]);
      }
      if (sym) {
        xmax = std::max(std::fabs(xmin), xmax);
        if (xmin < 0) xmin = -xmax;
      }
      if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
      const double s = (xmax - xmin) / maxq();
      scale[size_t(r)] = s;
      zero[size_t(r)] = sym ? (maxq() + 1) / 2 : std::nearbyint(-xmin / s);
    }
  }
  double code(double x, int64_t r) const {
    return std::clamp(std::nearbyint(x / scale[size_t(r)]) + zero[size_t(r)], 0.0, maxq());
  }
  double deq(double code, int64_t r) const { return scale[size_t(r)] * (code - zero[size_t(r)]); }
};

Mat chol_lower(const Mat& a, int64_t n) {
  Mat l(static_cast<size_t>(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double s = a[size_t(j * n + j)];
    for (int64_t k = 0; k < j; ++k) s -= l[size_t(j * n + k)] * l[size_t(j * n + k)];
    if (!(s > 0)) throw std::runtime_error("reference: not positive definite");
    const double d = std::sqrt(s);
    l[size_t(j * n + j)] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k) t -= l[size_t(i * n + k)] * l[size_t(j * n + k)];
      l[size_t(i * n + j)] = t / d;
    }
  }
  return l;
}

// torch.cholesky_inverse(L) = (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹.
Mat cholesky_inverse(const Mat& l, int64_t n) {
  Mat li(static_cast<size_t>(n * n), 0.0);  // L⁻¹, lower
  for (int64_t c = 0; c < n; ++c) {
    li[size_t(c * n + c)] = 1.0 / l[size_t(c * n + c)];
    for (int64_t i = c + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = c; k < i; ++k) s += l[size_t(i * n + k)] * li[size_t(k * n + c)];
      li[size_t(i * n + c)] = -s / l[size_t(i * n + i)];
    }
  }
  Mat inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = std::max(i, j); k < n; ++k) s += li[size_t(k * n + i)] * li[size_t(k * n + j)];
      inv[size_t(i * n + j)] = s;
    }
  return inv;
}

struct RefOut {
  std::vector<double> q;    // dequantized, original order [out, in]
  std::vector<int> codes;   // original order
  double loss = 0;
};

// gptq.py fasterquant, line by line, in double.
RefOut ref_gptq(const Layer& L, int bits, bool sym, int64_t groupsize, bool actorder,
                bool static_groups, int64_t blocksize = 128, double percdamp = 0.01) {
  const int64_t rows = L.out, cols = L.in;
  Mat W(L.w.begin(), L.w.end());
  Mat H = L.h64;
  RefQuantizer quant;
  quant.bits = bits, quant.sym = sym;
  if (groupsize == -1) quant.find_params(W, cols, rows, 0, cols);
  for (int64_t j = 0; j < cols; ++j)
    if (H[size_t(j * cols + j)] == 0) {
      H[size_t(j * cols + j)] = 1;
      for (int64_t r = 0; r < rows; ++r) W[size_t(r * cols + j)] = 0;
    }
  std::vector<RefQuantizer> groups;
  if (static_groups && groupsize != -1)
    for (int64_t i = 0; i < cols; i += groupsize) {
      groups.push_back(quant);
      groups.back().find_params(W, cols, rows, i, groupsize);
    }
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  if (actorder) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return H[size_t(a * cols + a)] > H[size_t(b * cols + b)];
    });
    Mat W2(W.size()), H2(H.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) W2[size_t(r * cols + j)] = W[size_t(r * cols + perm[size_t(j)])];
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j)
        H2[size_t(i * cols + j)] = H[size_t(perm[size_t(i)] * cols + perm[size_t(j)])];
    W.swap(W2);
    H.swap(H2);
  }
  double mean = 0;
  for (int64_t j = 0; j < cols; ++j) mean += H[size_t(j * cols + j)];
  mean /= double(cols);
  for (int64_t j = 0; j < cols; ++j) H[size_t(j * cols + j)] += percdamp * mean;
  const Mat Hinv = cholesky_inverse(chol_lower(H, cols), cols);
  const Mat Lh = chol_lower(Hinv, cols);  // U = Lhᵀ
  auto U = [&](int64_t i, int64_t j) { return Lh[size_t(j * cols + i)]; };

  Mat Q(static_cast<size_t>(rows * cols), 0.0);
  std::vector<int> C(static_cast<size_t>(rows * cols), 0);
  RefOut out;
  for (int64_t i1 = 0; i1 < cols; i1 += blocksize) {
    const int64_t i2 = std::min(i1 + blocksize, cols), count = i2 - i1;
    Mat W1(static_cast<size_t>(rows * count)), Err1(size_t(rows * count), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < count; ++t) W1[size_t(r * count + t)] = W[size_t(r * cols + i1 + t)];
    for (int64_t i = 0; i < count; ++i) {
      const int64_t j = i1 + i;
      if (groupsize != -1) {
        if (!static_groups) {
          if (j % groupsize == 0) quant.find_params(W, cols, rows, j, groupsize);
        } else {
          quant = groups[size_t((actorder ? perm[size_t(j)] : j) / groupsize)];
        }
      }
      const double d = U(j, j);
      for (int64_t r = 0; r < rows; ++r) {
        const double w = W1[size_t(r * count + i)];
        const double code = quant.code(w, r);
        const double q = quant.deq(code, r);
        Q[size_t(r * cols + j)] = q;
        C[size_t(r * cols + j)] = int(code);
        out.loss += (w - q) * (w - q) / (d * d) / 2;
        const double err = (w - q) / d;
        for (int64_t s = i; s < count; ++s) W1[size_t(r * count + s)] -= err * U(j, i1 + s);
        Err1[size_t(r * count + i)] = err;
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = i2; c < cols; ++c) {
        double s = 0;
        for (int64_t t = 0; t < count; ++t) s += Err1[size_t(r * count + t)] * U(i1 + t, c);
        W[size_t(r * cols + c)] -= s;
      }
  }
  out.q.assign(size_t(rows * cols), 0);
  out.codes.assign(size_t(rows * cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      out.q[size_t(r * cols + perm[size_t(j)])] = Q[size_t(r * cols + j)];
      out.codes[size_t(r * cols + perm[size_t(j)])] = C[size_t(r * cols + j)];
    }
  return out;
}

QuantFormat int_format(int bits, int64_t group, bool sym) {
  return QuantFormat::parse("int" + std::to_string(bits), group, sym);
}

double rtn_error(const Layer& L, const Scheme& scheme) {
  const QuantizedLinear r = rtn_quantize(to_tensor(L.w, {L.out, L.in}), scheme, ClipSearch{}, "rtn");
  // RTN leaves the zero points of a symmetric Int format implicit.
  QuantizedLinear rr = r;
  if (scheme.format().family == FormatFamily::Int && rr.zeros.empty())
    rr.zeros.assign(rr.scales.size(), float(1 << (scheme.format().bits - 1)));
  return recon_error(L, decode(rr, scheme));
}

// ---------------------------------------------------------------- parity with reference
struct Case {
  const char* label;
  int64_t out, in;
  int bits;
  int64_t group;
  bool sym, act_order, static_groups;
  int64_t block;
  int dead_col;
};

class GptqParity : public ::testing::TestWithParam<Case> {};

TEST_P(GptqParity, MatchesFloat64Reference) {
  const Case& k = GetParam();
  const Layer L = make_layer(k.out, k.in, 1024, 1234u + uint32_t(k.in + k.group), k.dead_col);
  const QuantFormat fmt = int_format(k.bits, k.group, k.sym);
  const auto scheme = Scheme::make(fmt);
  GptqOptions opt;
  opt.act_order = k.act_order;
  opt.static_groups = k.static_groups;
  opt.block_size = k.block;
  const GptqResult res = gptq_quantize(to_tensor(L.w, {L.out, L.in}), hessian_of(L), *scheme, opt,
                                       k.label);
  const RefOut ref = ref_gptq(L, k.bits, k.sym, k.group, k.act_order, k.static_groups, k.block);

  int64_t same = 0;
  for (size_t i = 0; i < ref.codes.size(); ++i) same += int(res.q.codes[i]) == ref.codes[i];
  const double agree = double(same) / double(ref.codes.size());
  const double e_ours = recon_error(L, decode(res.q, *scheme));
  const double e_ref = recon_error(L, ref.q);
  const double e_rtn = rtn_error(L, *scheme);
  RecordProperty("agreement", std::to_string(agree));
  std::printf("[%s] codes agree %.4f%%  err ours %.6g ref %.6g rtn %.6g (ratio %.3f)  loss %.6g/%.6g\n",
              k.label, 100 * agree, e_ours, e_ref, e_rtn, e_ours / e_rtn, res.loss, ref.loss);
  EXPECT_GE(agree, 0.99);
  EXPECT_NEAR(e_ours, e_ref, 0.01 * e_ref);
  EXPECT_NEAR(res.loss, ref.loss, 0.01 * ref.loss);
  EXPECT_LE(e_ours, 0.8 * e_rtn);
  EXPECT_EQ(res.damp_escalations, 0);
  EXPECT_DOUBLE_EQ(res.damp_used, 0.01);

  // The container agrees with itself: QuantizedLinear::dequantize == the scheme decode.
  const Tensor dq = res.q.dequantize();
  const std::vector<double> mine = decode(res.q, *scheme);
  for (size_t i = 0; i < mine.size(); ++i) ASSERT_EQ(double(dq.data<float>()[i]), mine[i]) << i;
  if (k.dead_col >= 0)
    for (int64_t r = 0; r < L.out; ++r) {
      const int64_t g = res.q.g_idx[size_t(k.dead_col)];
      GroupParams p{res.q.scales[size_t(r * res.q.n_groups() + g)],
                    res.q.zeros[size_t(r * res.q.n_groups() + g)]};
      EXPECT_EQ(res.q.codes[size_t(r * L.in + k.dead_col)], scheme->quantize(0.0f, p, 1.0f));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Layers, GptqParity,
    ::testing::Values(
        Case{"w4_g128_sym", 96, 256, 4, 128, true, false, false, 128, -1},
        Case{"w4_g32_asym_quirk", 96, 256, 4, 32, false, false, false, 128, -1},
        Case{"w4_g128_b64_asym", 96, 256, 4, 128, false, false, false, 64, -1},
        Case{"w4_perchannel_asym_act", 64, 320, 4, -1, false, true, false, 128, -1},
        Case{"w4_perchannel_sym", 64, 320, 4, -1, true, false, false, 128, 11},
        Case{"w4_g32_sym_act_dead", 64, 320, 4, 32, true, true, false, 128, 5},
        Case{"w4_g64_asym_act", 64, 320, 4, 64, false, true, false, 128, -1},
        Case{"w4_g128_asym_act_static", 96, 256, 4, 128, false, true, true, 128, 3},
        Case{"w3_g64_sym_static", 64, 320, 3, 64, true, false, true, 128, -1},
        Case{"w8_g32_asym", 96, 256, 8, 32, false, false, false, 128, -1}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.label); });

// ---------------------------------------------------------------- Hessian accumulator
TEST(Hessian, AccumulatesRawSumAndNormalizes) {
  const Layer L = make_layer(4, 48, 100, 7u);
  HessianAccumulator acc(48);
  // One 3-D batch [2, 30, 48] and one 2-D batch [40, 48].
  std::vector<float> a(L.x.begin(), L.x.begin() + 60 * 48), b(L.x.begin() + 60 * 48, L.x.end());
  acc.add(to_tensor(a, {2, 30, 48}));
  acc.add(to_tensor(b, {40, 48}));
  EXPECT_EQ(acc.tokens(), 100);
  const float* s = acc.sum().data<float>();
  const Tensor hn = acc.normalized();
  for (int64_t i = 0; i < 48; ++i)
    for (int64_t j = 0; j < 48; ++j) {
      const double want = L.h64[size_t(i * 48 + j)] * 100 / 2;
      EXPECT_EQ(s[i * 48 + j], s[j * 48 + i]);
      EXPECT_NEAR(s[i * 48 + j], want, 1e-4 * (std::fabs(want) + 10));
      EXPECT_NEAR(hn.data<float>()[i * 48 + j], L.h64[size_t(i * 48 + j)],
                  1e-4 * (std::fabs(L.h64[size_t(i * 48 + j)]) + 0.1));
    }
  EXPECT_THROW(acc.add(Tensor::zeros(DType::F32, {3, 47})), InputError);
  HessianAccumulator empty(8);
  EXPECT_THROW(empty.normalized(), InputError);
}

// ---------------------------------------------------------------- robustness
TEST(Gptq, RankDeficientHessianEscalatesDamping) {
  // 24 tokens for 256 inputs: H has rank 24; with zero damping it is singular (and, after
  // fp32 rounding, indefinite).
  const Layer L = make_layer(32, 256, 24, 99u);
  const auto scheme = Scheme::make(int_format(4, 128, true));
  GptqOptions opt;
  opt.damp = 0.0;
  const GptqResult res = gptq_quantize(to_tensor(L.w, {L.out, L.in}), hessian_of(L), *scheme, opt,
                                       "model.layers.0.mlp.up_proj");
  EXPECT_GE(res.damp_escalations, 1);
  EXPECT_GE(res.damp_used, 0.01);
  EXPECT_TRUE(std::isfinite(res.loss));
  const std::vector<double> q = decode(res.q, *scheme);
  for (double v : q) ASSERT_TRUE(std::isfinite(v));
  for (uint8_t c : res.q.codes) ASSERT_LT(c, 16);
  EXPECT_LT(recon_error(L, q), rtn_error(L, *scheme));
}

TEST(Gptq, RefusesNonFiniteInputsNamingTheTensor) {
  const Layer L = make_layer(8, 64, 128, 5u);
  const auto scheme = Scheme::make(int_format(4, 32, true));
  std::vector<float> w = L.w;
  w[17] = std::nanf("");
  try {
    gptq_quantize(to_tensor(w, {8, 64}), hessian_of(L), *scheme, GptqOptions{}, "blk.3.attn_q");
    FAIL() << "NaN weight accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.3.attn_q"), std::string::npos) << e.what();
  }
  Tensor h = hessian_of(L);
  h.data<float>()[65] = INFINITY;
  try {
    gptq_quantize(to_tensor(L.w, {8, 64}), h, *scheme, GptqOptions{}, "blk.4.attn_k");
    FAIL() << "Inf Hessian accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.4.attn_k"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gptq_quantize(to_tensor(L.w, {8, 64}), Tensor::zeros(DType::F32, {32, 32}), *scheme,
                             GptqOptions{}, "x"),
               InputError);
}

TEST(Gptq, BrokenHessianIsRefusedAfterEscalation) {
  const Layer L = make_layer(8, 64, 128, 5u);
  const auto scheme = Scheme::make(int_format(4, 32, true));
  Tensor h = Tensor::zeros(DType::F32, {64, 64});
  for (int64_t i = 0; i < 64; ++i) h.data<float>()[i * 65] = -1.0f;  // negative definite
  try {
    gptq_quantize(to_tensor(L.w, {8, 64}), h, *scheme, GptqOptions{}, "blk.9.ffn_down");
    FAIL() << "negative definite Hessian accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.9.ffn_down"), std::string::npos) << e.what();
  }
}

TEST(Gptq, SameResultWithOneOrTwoThreads) {
  const Layer L = make_layer(80, 256, 512, 31u);  // 80 rows: 5 tiles, uneven split
  const auto scheme = Scheme::make(int_format(4, 64, false));
  const Tensor h = hessian_of(L);
  GptqOptions opt;
  opt.act_order = true;
  const int prev = omp_get_max_threads();
  omp_set_num_threads(1);
  const GptqResult one = gptq_quantize(to_tensor(L.w, {80, 256}), h, *scheme, opt, "t1");
  omp_set_num_threads(2);
  const GptqResult two = gptq_quantize(to_tensor(L.w, {80, 256}), h, *scheme, opt, "t2");
  omp_set_num_threads(prev);
  EXPECT_EQ(one.q.codes, two.q.codes);
  EXPECT_EQ(one.q.scales, two.q.scales);
  EXPECT_EQ(one.q.zeros, two.q.zeros);
  EXPECT_EQ(one.q.g_idx, two.q.g_idx);
}

TEST(Gptq, ClipSearchFitsGroupsAndStillBeatsRtn) {
  const Layer L = make_layer(32, 256, 512, 41u);
  const auto scheme = Scheme::make(int_format(3, 128, false));
  GptqOptions opt;
  opt.clip.enabled = true;
  const GptqResult res = gptq_quantize(to_tensor(L.w, {32, 256}), hessian_of(L), *scheme, opt, "clip");
  const QuantizedLinear r = rtn_quantize(to_tensor(L.w, {32, 256}), *scheme, opt.clip, "clip");
  const double e = recon_error(L, decode(res.q, *scheme));
  const double e_rtn = recon_error(L, decode(r, *scheme));
  std::printf("clip search: gptq %.6g rtn %.6g\n", e, e_rtn);
  EXPECT_LT(e, 0.8 * e_rtn);
}

// ---------------------------------------------------------------- g_idx
TEST(Gptq, GIdxActOrderDynamicVersusStatic) {
  const Layer L = make_layer(32, 256, 512, 21u);
  const auto scheme = Scheme::make(int_format(4, 64, false));
  const Tensor h = hessian_of(L);
  GptqOptions opt;
  opt.act_order = true;
  const GptqResult dyn = gptq_quantize(to_tensor(L.w, {32, 256}), h, *scheme, opt, "dyn");
  // Columns sorted by descending diag H (stable); g_idx[c] = pos(c) / G.
  std::vector<int64_t> perm(256);
  std::iota(perm.begin(), perm.end(), int64_t(0));
  const float* hd = h.data<float>();
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int64_t a, int64_t b) { return hd[a * 257] > hd[b * 257]; });
  std::vector<int> count(4, 0);
  for (int64_t j = 0; j < 256; ++j) {
    EXPECT_EQ(dyn.q.g_idx[size_t(perm[size_t(j)])], j / 64);
    ++count[size_t(dyn.q.g_idx[size_t(j)])];
  }
  for (int c : count) EXPECT_EQ(c, 64);
  EXPECT_TRUE(dyn.q.has_act_order_g_idx());
  // The outlier channels (c % 61 == 7) have the largest diag: they lead group 0.
  EXPECT_EQ(dyn.q.g_idx[7], 0);
  EXPECT_EQ(dyn.q.g_idx[68], 0);

  opt.static_groups = true;
  const GptqResult st = gptq_quantize(to_tensor(L.w, {32, 256}), h, *scheme, opt, "static");
  for (int64_t c = 0; c < 256; ++c) EXPECT_EQ(st.q.g_idx[size_t(c)], c / 64);
  EXPECT_FALSE(st.q.has_act_order_g_idx());
  const double e_dyn = recon_error(L, decode(dyn.q, *scheme));
  const double e_st = recon_error(L, decode(st.q, *scheme));
  const double e_rtn = rtn_error(L, *scheme);
  std::printf("act-order dynamic %.6g static %.6g rtn %.6g\n", e_dyn, e_st, e_rtn);
  EXPECT_LT(e_dyn, 0.8 * e_rtn);
  EXPECT_LT(e_st, 0.8 * e_rtn);
}

// ---------------------------------------------------------------- MX / NVFP4
struct MxCase {
  const char* name;
  int64_t block;
};

class GptqMx : public ::testing::TestWithParam<MxCase> {};

TEST_P(GptqMx, BeatsRtnOfTheSameFormat) {
  const MxCase& k = GetParam();
  const QuantFormat fmt = QuantFormat::parse(k.name, k.block, true);
  const auto scheme = Scheme::make(fmt);
  const Layer L = make_layer(64, 256, 1024, 77u);
  const Tensor h = hessian_of(L);
  GptqOptions opt;
  const GptqResult res = gptq_quantize(to_tensor(L.w, {64, 256}), h, *scheme, opt, "mx");
  const double e = recon_error(L, decode(res.q, *scheme));
  const double e_rtn = rtn_error(L, *scheme);
  EXPECT_TRUE(res.q.zeros.empty());
  EXPECT_EQ(res.q.scales.size(), size_t(64 * 256 / fmt.group_size));
  for (int64_t c = 0; c < 256; ++c) EXPECT_EQ(res.q.g_idx[size_t(c)], c / fmt.group_size);

  // Act-order needs static groups for block formats.
  opt.act_order = true;
  EXPECT_THROW(gptq_quantize(to_tensor(L.w, {64, 256}), h, *scheme, opt, "mx"), InputError);
  opt.static_groups = true;
  const GptqResult st = gptq_quantize(to_tensor(L.w, {64, 256}), h, *scheme, opt, "mx");
  const double e_st = recon_error(L, decode(st.q, *scheme));
  std::printf("[%s b%ld] gptq %.6g  act-order+static %.6g  rtn %.6g (ratio %.3f)\n", k.name,
              long(fmt.group_size), e, e_st, e_rtn, e / e_rtn);
  EXPECT_LT(e, 0.8 * e_rtn);
  EXPECT_LT(e_st, 0.8 * e_rtn);
  EXPECT_EQ(res.q.dequantize().numel(), 64 * 256);

  // The §7.3 microblock variant also beats RTN, and the column-wise default is no worse.
  GptqOptions micro;
  micro.block_gptq = BlockGptq::Microblock;
  const GptqResult mb = gptq_quantize(to_tensor(L.w, {64, 256}), h, *scheme, micro, "mx");
  const double e_mb = recon_error(L, decode(mb.q, *scheme));
  std::printf("[%s b%ld] microblock %.6g (ratio to rtn %.3f)\n", k.name, long(fmt.group_size), e_mb,
              e_mb / e_rtn);
  EXPECT_LT(e_mb, 0.9 * e_rtn);
  EXPECT_LE(e, 1.02 * e_mb);
}

INSTANTIATE_TEST_SUITE_P(Formats, GptqMx,
                         ::testing::Values(MxCase{"mxint4", 32}, MxCase{"mxint8", 32},
                                           MxCase{"mxint4", 128}, MxCase{"mxfp4", 32},
                                           MxCase{"nvfp4", 16}),
                         [](const ::testing::TestParamInfo<MxCase>& i) {
                           return std::string(i.param.name) + "_b" + std::to_string(i.param.block);
                         });

}  // namespace
}  // namespace qshard

// ---------------------------------------------------------------- error report
namespace qshard {
namespace {

// tr(ΔW H ΔWᵀ) in float64, the product the error report used to compute.
double direct_output_error(const Layer& L, const Tensor& w_hat, const Tensor& h) {
  double s = 0;
  std::vector<double> d(size_t(L.in));
  for (int64_t r = 0; r < L.out; ++r) {
    for (int64_t j = 0; j < L.in; ++j) d[size_t(j)] = double(L.w[size_t(r * L.in + j)]) - w_hat.data<float>()[r * L.in + j];
    for (int64_t i = 0; i < L.in; ++i) {
      double hi = 0;
      for (int64_t j = 0; j < L.in; ++j) hi += double(h.data<float>()[i * L.in + j]) * d[size_t(j)];
      s += d[size_t(i)] * hi;
    }
  }
  return s;
}

}  // namespace

// GPTQ's own error terms give the report's tr(ΔW H ΔWᵀ) (quant/gptq_error.h) to 1e-4
// relative: every GPTQ mode, a dead column, and a rank-deficient H whose damping escalated.
TEST(GptqOutputError, MatchesTheProductWithH) {
  struct Case {
    const char* what;
    QuantFormat format;
    bool act_order, static_groups, microblock;
    int dead;
    int64_t tokens;
    double damp;
  };
  const Case cases[] = {
      {"int4 g32 sym", QuantFormat::parse("int4", 32, true), false, false, false, -1, 512, 0.01},
      {"int4 g64 asym act-order, dead column", QuantFormat::parse("int4", 64, false), true, false, false, 5, 512, 0.01},
      {"int3 g32 static groups", QuantFormat::parse("int3", 32, true), true, true, false, -1, 512, 0.01},
      {"mxfp4", QuantFormat::parse("mxfp4", 32, true), false, false, false, -1, 512, 0.01},
      {"nvfp4 microblock", QuantFormat::parse("nvfp4", 16, true), false, false, true, -1, 512, 0.01},
      {"int4 g128, rank 48, escalated", QuantFormat::parse("int4", 128, true), false, false, false, -1, 48, 0.0},
  };
  for (const Case& c : cases) {
    const Layer L = make_layer(48, 256, c.tokens, 31u, c.dead);
    const Tensor h = hessian_of(L);
    const auto scheme = Scheme::make(c.format);
    GptqOptions opt;
    opt.act_order = c.act_order;
    opt.static_groups = c.static_groups;
    opt.damp = c.damp;
    opt.block_size = 64;
    if (c.microblock) opt.block_gptq = BlockGptq::Microblock;
    const GptqResult res = gptq_quantize(to_tensor(L.w, {L.out, L.in}), h, *scheme, opt, c.what);
    const Tensor w_hat = res.q.dequantize();
    const double want = direct_output_error(L, w_hat, h);
    const double got = gptq_output_error(L.w.data(), w_hat.data<float>(), L.out, L.in, h.data<float>(),
                                         L.in + 1, res.loss, res.damp_abs);
    EXPECT_GT(want, 0.0) << c.what;
    EXPECT_NEAR(got, want, 1e-4 * want) << c.what << " (relative " << (got - want) / want << ")";
  }
}

}  // namespace qshard

namespace qshard {

// A Linear reusing another's inverse factor of the same H (q/k/v, gate/up, lm_head
// chunks) gets the same bits as factoring it again, escalations included.
TEST(GptqFactorCache, ReuseGivesTheSameResult) {
  for (const double damp : {0.01, 0.0}) {  // 0 on a rank-48 H escalates
    const Layer a = make_layer(40, 256, 48, 7u), b = make_layer(24, 256, 48, 7u);
    const Tensor h = hessian_of(a);
    const auto scheme = Scheme::make(QuantFormat::parse("int4", 64, false));
    GptqOptions opt;
    opt.damp = damp;
    opt.act_order = true;
    GptqFactorCache cache;
    opt.factor_cache = &cache;
    const GptqResult first = gptq_quantize(to_tensor(a.w, {a.out, a.in}), h, *scheme, opt, "a");
    ASSERT_TRUE(cache.U);
    const GptqResult reused = gptq_quantize(to_tensor(b.w, {b.out, b.in}), h, *scheme, opt, "b");
    opt.factor_cache = nullptr;
    const GptqResult fresh = gptq_quantize(to_tensor(b.w, {b.out, b.in}), h, *scheme, opt, "b");
    EXPECT_EQ(reused.q.codes, fresh.q.codes);
    EXPECT_EQ(reused.q.scales, fresh.q.scales);
    EXPECT_EQ(reused.q.zeros, fresh.q.zeros);
    EXPECT_EQ(reused.loss, fresh.loss);
    EXPECT_EQ(reused.damp_escalations, fresh.damp_escalations);
    EXPECT_EQ(reused.damp_abs, fresh.damp_abs);
    EXPECT_EQ(first.damp_escalations, fresh.damp_escalations);
  }
}

}  // namespace qshard
