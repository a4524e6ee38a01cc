// Ranges and rounding fitted against ℓ = tr(E H Eᵀ), E = W − Ŵ, by exact coordinate
// descent. Both descents keep the residual product R = E·H (out × in) current, so the
// change of ℓ for a move d on the columns S of one row is d H_SS dᵀ + 2 d·R_S and is
// evaluated without touching the other columns; an accepted move updates R by d·H_S,:.
#include "quant/awq_joint.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"

namespace qshard {

namespace {

std::vector<float> shrink_factors(const JointOptions& o) {
  std::vector<float> c;
  const double step = std::max(1e-3, double(o.range_step));
  for (int i = 0;; ++i) {
    const double v = 1.0 - i * step;
    if (v < double(o.min_shrink) - 1e-9 || v <= 0.0) break;
    c.push_back(float(v));
  }
  return c;
}

// Both ends move independently only where the format has a zero point.
bool two_sided(const Scheme& scheme) { return scheme.format().has_zero_point(); }

struct GroupStats {
  float lo, hi, amax;
};

GroupStats stats_of(const float* x, int64_t n) {
  GroupStats s{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), 0.0f};
  for (int64_t j = 0; j < n; ++j) {
    s.lo = std::min(s.lo, x[j]);
    s.hi = std::max(s.hi, x[j]);
    s.amax = std::max(s.amax, std::fabs(x[j]));
  }
  return s;
}

// The clamp range of shrink indices (il, ih).
void range_of(const GroupStats& st, bool two, const std::vector<float>& c, int il, int ih, float& lo,
              float& hi) {
  if (two) {
    lo = st.lo * c[size_t(il)];
    hi = st.hi * c[size_t(ih)];
  } else {
    hi = st.amax * c[size_t(ih)];
    lo = -hi;
  }
}

// Σ_j p_j d_j in double.
double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += double(a[j]) * b[j];
  return s;
}

// The descents' inner loops are elementwise axpys (no reassociation; ISO C++ mode does not
// contract to FMA), cloned for AVX-512 and AVX2 as gptq.cpp's tile update: every clone,
// and any thread count, gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define QS_JOINT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define QS_JOINT_CLONES
#endif

// y += a·x
QS_JOINT_CLONES void axpy(float* __restrict y, const float* __restrict x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// prod = M·d for a symmetric n×n M (column sweeps: fixed summation order).
QS_JOINT_CLONES void sym_matvec(const float* __restrict m, const float* __restrict d, int64_t n,
                                float* __restrict prod) {
  for (int64_t a = 0; a < n; ++a) prod[a] = 0.0f;
  for (int64_t b = 0; b < n; ++b) {
    const float db = d[b];
    if (db == 0.0f) continue;
    const float* col = m + b * n;  // row b = column b
    for (int64_t a = 0; a < n; ++a) prod[a] += col[a] * db;
  }
}

// dᵀ M d in double (prod: n floats of scratch).
double quad_form(const float* m, const float* d, int64_t n, float* prod) {
  sym_matvec(m, d, n, prod);
  return dot(prod, d, n);
}

void gram_block(const float* h, int64_t d, int64_t g0, int64_t G, std::vector<float>& out) {
  out.resize(size_t(G * G));
  for (int64_t a = 0; a < G; ++a)
    for (int64_t b = 0; b < G; ++b) out[size_t(a * G + b)] = h[(g0 + a) * d + g0 + b];
}

}  // namespace

float joint_damp(const JointOptions& options, int64_t in_features, double tokens) {
  return options.damp + (tokens > 0 ? float(double(options.damp_per_dim) * double(in_features) / tokens) : 0.0f);
}

Tensor damped_hessian(const Tensor& h, float damp) {
  if (damp <= 0.0f) return h;
  const int64_t d = h.dim(0);
  Tensor out = Tensor::zeros(DType::F32, {d, d});
  std::copy_n(h.data<float>(), d * d, out.data<float>());
  float* p = out.data<float>();
  double mean = 0;
  for (int64_t i = 0; i < d; ++i) mean += p[i * d + i];
  mean /= double(d);
  // A zero diagonal (dead channels only) gets an absolute floor so the fits stay defined.
  const float add = mean > 0 ? float(double(damp) * mean) : damp;
  for (int64_t i = 0; i < d; ++i) p[i * d + i] += add;
  return out;
}

GroupRanges joint_block_ranges(const Tensor& w, const Tensor& h, const Scheme& scheme,
                               const ExportNumerics& numerics, const JointOptions& options) {
  const int64_t out = w.dim(0), in = w.dim(1);
  const QuantFormat& fmt = scheme.format();
  const int64_t G = fmt.group_width(in), ng = fmt.n_groups(in);
  const float* p = w.data<float>();
  const float ts = scheme.tensor_scale(p, out * in);
  const std::vector<float> c = shrink_factors(options);
  const bool two = two_sided(scheme);
  std::vector<std::vector<float>> hgg(static_cast<size_t>(ng));
  for (int64_t g = 0; g < ng; ++g) gram_block(h.data<float>(), in, g * G, G, hgg[size_t(g)]);
  GroupRanges best;
  best.lo.resize(size_t(out * ng));
  best.hi.resize(size_t(out * ng));
  // Blocks of rows in one parallel region; per block and group the residuals of every
  // (row, candidate), their products with H_gg in one single-threaded SGEMM, the choice per
  // row. One fork/join per call (one per candidate dominated on loaded machines), and no
  // BLAS threads competing with ours. SGEMM computes each product row the same way in any
  // block, so the choice does not depend on the thread count.
  const int64_t nc = int64_t(c.size()), kBlock = 32;
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel
  {
    std::vector<float> tmp(static_cast<size_t>(G)), delta(size_t(kBlock * nc * G)), prod(size_t(kBlock * nc * G));
#pragma omp for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < out; r0 += kBlock) {
      const int64_t nr = std::min(kBlock, out - r0);
      for (int64_t g = 0; g < ng; ++g) {
        for (int64_t r = 0; r < nr; ++r) {
          const float* x = p + (r0 + r) * in + g * G;
          const GroupStats st = stats_of(x, G);
          for (int64_t i = 0; i < nc; ++i) {
            float lo, hi;
            range_of(st, two, c, int(i), int(i), lo, hi);
            group_residual(scheme, x, G, lo, hi, ts, numerics, tmp.data(), delta.data() + (r * nc + i) * G);
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nr * nc), int(G), int(G), 1.0f, delta.data(),
                    int(G), hgg[size_t(g)].data(), int(G), 0.0f, prod.data(), int(G));
        for (int64_t r = 0; r < nr; ++r) {
          const GroupStats st = stats_of(p + (r0 + r) * in + g * G, G);
          const size_t k = size_t((r0 + r) * ng + g);
          double best_err = std::numeric_limits<double>::infinity();
          for (int64_t i = 0; i < nc; ++i) {
            const int64_t o = (r * nc + i) * G;
            const double e = dot(prod.data() + o, delta.data() + o, G);
            if (e < best_err) {
              best_err = e;
              range_of(st, two, c, int(i), int(i), best.lo[k], best.hi[k]);
            }
          }
        }
      }
    }
  }
  openblas_set_num_threads(blas_threads);
  return best;
}

JointResult joint_refine(const Tensor& w, const Tensor& h, const Scheme& scheme,
                         const ExportNumerics& numerics, const GroupRanges* start,
                         const JointOptions& options, const std::string& name) {
  const int64_t out = w.dim(0), in = w.dim(1);
  const QuantFormat& fmt = scheme.format();
  const int64_t G = fmt.group_width(in), ng = fmt.n_groups(in);
  const float* p = w.data<float>();
  const float* hp = h.data<float>();
  const float ts = scheme.tensor_scale(p, out * in);
  const std::vector<float> c = shrink_factors(options);
  const bool two = two_sided(scheme);
  const int nc = int(c.size());

  // Current shrink indices per (row, group): the candidate closest to the start range.
  std::vector<int> il(size_t(out * ng), 0), ih(size_t(out * ng), 0);
  if (start && !start->empty()) {
    for (int64_t r = 0; r < out; ++r)
      for (int64_t g = 0; g < ng; ++g) {
        const GroupStats st = stats_of(p + r * in + g * G, G);
        const size_t k = size_t(r * ng + g);
        auto nearest = [&](float want, float base) {
          int bi = 0;
          float bd = std::numeric_limits<float>::infinity();
          for (int i = 0; i < nc; ++i) {
            const float dv = std::fabs(base * c[size_t(i)] - want);
            if (dv < bd) bd = dv, bi = i;
          }
          return bi;
        };
        if (two) {
          il[k] = nearest(start->lo[k], st.lo);
          ih[k] = nearest(start->hi[k], st.hi);
        } else {
          ih[k] = il[k] = nearest(start->hi[k], st.amax);
        }
      }
  }
  auto ranges_now = [&] {
    GroupRanges gr;
    gr.lo.resize(size_t(out * ng));
    gr.hi.resize(size_t(out * ng));
    for (int64_t r = 0; r < out; ++r)
      for (int64_t g = 0; g < ng; ++g) {
        const size_t k = size_t(r * ng + g);
        range_of(stats_of(p + r * in + g * G, G), two, c, il[k], ih[k], gr.lo[k], gr.hi[k]);
      }
    return gr;
  };

  JointResult res;
  // E and R = E·H for the start.
  std::vector<float> E(size_t(out * in)), R(size_t(out * in));
  {
    const GroupRanges gr = ranges_now();
    const QuantizedLinear q0 = quantize_ranged(w, scheme, &gr, numerics, name);
    const Tensor w0 = dequantize_exported(q0, numerics);
    for (int64_t i = 0; i < out * in; ++i) E[size_t(i)] = p[i] - w0.data<float>()[i];
  }
  auto refresh_r = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), int(in), 1.0f, E.data(), int(in),
                hp, int(in), 0.0f, R.data(), int(in));
  };
  auto loss_now = [&] {
    double s = 0;
    for (int64_t i = 0; i < out * in; ++i) s += double(R[size_t(i)]) * E[size_t(i)];
    return s;
  };
  refresh_r();
  res.loss_start = loss_now();

  // J2: exact coordinate descent over each group's range with the cross-group terms. Row r
  // of R = E·H depends on row r of E only, so rows descend independently (in parallel,
  // each serially: the result does not depend on the thread count).
  std::vector<std::vector<float>> hgg(static_cast<size_t>(ng));
  for (int64_t g = 0; g < ng; ++g) gram_block(hp, in, g * G, G, hgg[size_t(g)]);
  if (options.range_sweeps > 0) {
#pragma omp parallel
    {
      std::vector<float> tmp(static_cast<size_t>(G)), dl(static_cast<size_t>(G)), D(static_cast<size_t>(G)),
          P(static_cast<size_t>(G)), Dbest(static_cast<size_t>(G));
#pragma omp for schedule(dynamic, 4)
      for (int64_t r = 0; r < out; ++r) {
        float* e = E.data() + r * in;
        float* rr = R.data() + r * in;
        for (int sweep = 0; sweep < options.range_sweeps; ++sweep) {
          int64_t moves = 0;
          for (int64_t g = 0; g < ng; ++g) {
            const size_t k = size_t(r * ng + g);
            const float* x = p + r * in + g * G;
            const GroupStats st = stats_of(x, G);
            double best = 0.0;
            int bl = -1, bh = -1;
            // Candidates: one end moved (both together when one-sided).
            const int n_moves = two ? 2 * nc : nc;
            for (int m = 0; m < n_moves; ++m) {
              const int cl = two ? (m < nc ? m : il[k]) : m;
              const int ch = two ? (m < nc ? ih[k] : m - nc) : m;
              if (cl == il[k] && ch == ih[k]) continue;
              float lo, hi;
              range_of(st, two, c, cl, ch, lo, hi);
              group_residual(scheme, x, G, lo, hi, ts, numerics, tmp.data(), dl.data());
              for (int64_t j = 0; j < G; ++j) D[size_t(j)] = dl[size_t(j)] - e[g * G + j];
              const double dv = quad_form(hgg[size_t(g)].data(), D.data(), G, P.data()) +
                                2.0 * dot(rr + g * G, D.data(), G);
              // Relative threshold: float noise must not count as progress.
              if (dv < best - 1e-9 * std::fabs(dv)) {
                best = dv;
                bl = cl;
                bh = ch;
                std::copy(D.begin(), D.end(), Dbest.begin());
              }
            }
            if (bl < 0) continue;
            il[k] = bl;
            ih[k] = bh;
            // E_g += d; R_r += d·H[g rows, :]
            for (int64_t j = 0; j < G; ++j) {
              const float d = Dbest[size_t(j)];
              e[g * G + j] += d;
              if (d != 0.0f) axpy(rr, hp + (g * G + j) * in, d, in);
            }
            ++moves;
          }
          if (moves == 0) break;
        }
      }
    }
  }
  refresh_r();  // drop the float drift of the incremental updates
  res.loss_ranges = loss_now();
  res.ranges = ranges_now();
  res.q = quantize_ranged(w, scheme, &res.ranges, numerics, name);
  res.loss_final = options.rounding_sweeps > 0 ? refine_rounding(res.q, w, h, numerics, options.rounding_sweeps)
                                               : res.loss_ranges;
  return res;
}

double refine_rounding(QuantizedLinear& q, const Tensor& w, const Tensor& h, const ExportNumerics& numerics,
                       int sweeps) {
  const int64_t out = q.out_features, in = q.in_features;
  const int64_t G = q.format.group_width(in), ng = q.n_groups();
  const auto scheme = Scheme::make(q.format);
  const float* p = w.data<float>();
  const float* hp = h.data<float>();
  const Tensor w0 = dequantize_exported(q, numerics);
  std::vector<float> E(size_t(out * in)), R(size_t(out * in));
  for (int64_t i = 0; i < out * in; ++i) E[size_t(i)] = p[i] - w0.data<float>()[i];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), int(in), 1.0f, E.data(), int(in), hp,
              int(in), 0.0f, R.data(), int(in));
#pragma omp parallel
  {
    GroupGrid grid;
#pragma omp for schedule(dynamic, 4)
    for (int64_t r = 0; r < out; ++r) {
      float* e = E.data() + r * in;
      float* rr = R.data() + r * in;
      for (int sweep = 0; sweep < sweeps; ++sweep) {
        int64_t moves = 0;
        for (int64_t g = 0; g < ng; ++g) {
          grid.build(*scheme, group_params(q, r, g), q.tensor_scale, numerics.weight_dtype);
          const int nv = int(grid.vals.size());
          for (int64_t j = g * G; j < (g + 1) * G; ++j) {
            uint8_t& code = q.codes[size_t(r * in + j)];
            const int k = grid.rank_of[code];
            if (k < 0) continue;  // a code outside the grid (never produced): leave it
            const float cur = grid.vals[size_t(k)];
            const double hjj = hp[j * in + j];
            double best = 0;
            int bk = -1;
            for (int nb : {k - 1, k + 1}) {
              if (nb < 0 || nb >= nv) continue;
              const double de = double(cur) - grid.vals[size_t(nb)];  // e' = e + de
              const double dl = de * (2.0 * rr[j] + de * hjj);
              if (dl < best - 1e-12 * std::fabs(dl)) best = dl, bk = nb;
            }
            if (bk < 0) continue;
            const float de = cur - grid.vals[size_t(bk)];
            code = grid.code_at[size_t(bk)];
            e[j] += de;
            axpy(rr, hp + j * in, de, in);
            ++moves;
          }
        }
        if (moves == 0) break;
      }
    }
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), int(in), 1.0f, E.data(), int(in), hp,
              int(in), 0.0f, R.data(), int(in));
  double s = 0;
  for (int64_t i = 0; i < out * in; ++i) s += double(R[size_t(i)]) * E[size_t(i)];
  return s;
}

}  // namespace qshard
