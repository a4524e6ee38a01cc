// GPTQ as in IST-DASLab gptq.py `fasterquant` (algorithms.md §1.4–1.6), plus the MX/NVFP4
// microblock variant of §7.3.
//
// Layout and threading: the working weight W is fp32 row-major [out, in] in (act-order
// permuted) column order. Given U, rows are independent through the whole loop, so each
// OpenMP thread runs every lazy batch on its own slice of rows: the column steps on tiles
// of 16 rows held transposed (a column's rank-1 update is one 16-lane vector op per later
// column), then the batch GEMM on its rows with single-threaded OpenBLAS — no barrier per
// batch and no OpenBLAS worker threads competing with the OpenMP ones.
//
// Inverse factor, in fp32 like the reference (LAPACK SPOTRF + STRTRI): U = upper Cholesky
// factor of H⁻¹ without forming H⁻¹. With J the reversal permutation, chol(J·H·J) = L gives
// H = R·Rᵀ with R = J·L·J upper, so H⁻¹ = R⁻ᵀR⁻¹ and U = R⁻¹ = J·L⁻¹·J: the unique Cholesky
// factor with positive diagonal, the same U as the reference's chol → cholesky_inverse →
// chol(upper), for 2/3·d³ flops instead of 4/3·d³.
#include <cblas.h>
#include <lapacke.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <numeric>
#include <optional>
#include <vector>

#include "core/error.h"
#include "quant/kquant.h"
#include "core/log.h"
#include "quant/gptq.h"

namespace qshard {
namespace {

// 1 if p[0, n) holds a NaN/Inf (exponent bits all ones), branch-free so it vectorises.
inline uint32_t any_nonfinite(const float* p, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, p + i, sizeof b);
    bad |= uint32_t((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad;
}

bool all_finite(const float* p, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  uint32_t bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
  for (int64_t c = 0; c < n; c += kChunk) bad |= any_nonfinite(p + c, std::min(kChunk, n - c));
  return bad == 0;
}

// U (upper, H⁻¹ = UᵀU) of Hp + damp·I, where Hp[i][k] = H[perm i][perm k] with dead
// diagonals set to 1, returned column-major in `u` (d×d; the strictly lower part of the
// column-major matrix is unspecified). False if H + damp·I is not numerically positive
// definite: the Cholesky fails, a pivot is below 1e-6 of its diagonal (the column is a
// combination of earlier ones to within fp32 rounding — with the default damping
// 0.01·mean(diag) that needs one diagonal entry above 10⁴× the mean), or the inverse
// is not finite.
bool inverse_factor(const float* h, const std::vector<int64_t>& perm,
                    const std::vector<uint8_t>& dead, int64_t d, double damp_abs,
                    std::vector<float>& u) {
  // a = J·Hp·J column-major: a[i + k·d] = Hp[d−1−i][d−1−k] = Hp[d−1−k][d−1−i] (symmetric),
  // so column k of a is row d−1−k of Hp read backwards.
  float* a = u.data();
  std::vector<double> diag(static_cast<size_t>(d));
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < d; ++k) {
    const int64_t pk = perm[size_t(d - 1 - k)];
    const float* hrow = h + pk * d;
    float* col = a + k * d;
    for (int64_t i = 0; i < d; ++i) col[i] = hrow[perm[size_t(d - 1 - i)]];
    const double dv = (dead[size_t(pk)] ? 1.0 : double(col[k])) + damp_abs;
    col[k] = float(dv);
    diag[size_t(k)] = double(col[k]);
  }
  const lapack_int n32 = lapack_int(d);
  if (LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', n32, a, n32) != 0) return false;
  for (int64_t k = 0; k < d; ++k) {
    const double l = double(a[k + k * d]);
    if (!(l * l > 1e-6 * diag[size_t(k)])) return false;
  }
  if (LAPACKE_strtri_work(LAPACK_COL_MAJOR, 'L', 'N', n32, a, n32) != 0) return false;
  // a now holds L⁻¹ (lower). U = J·L⁻¹·J, i.e. U[r][c] = L⁻¹[d−1−r][d−1−c], which is the
  // whole buffer reversed: a[d²−1−(r + c·d)] = a[(d−1−r) + (d−1−c)·d]. Reverse in place,
  // then check the upper triangle (column c: rows 0..c) for finiteness.
  const int64_t n = d * d;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n / 2; ++p) std::swap(a[p], a[n - 1 - p]);
  uint32_t bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
  for (int64_t c = 0; c < d; ++c) bad |= any_nonfinite(a + c * d, c + 1);
  return bad == 0;
}

enum class Mode { PerChannel, Dynamic, Static, MicroBlock, BlockColumnwise };

constexpr int64_t kTile = 16;  // rows per tile: one AVX-512 vector of fp32

// tile[s][k] −= err[k]·u[s] for s < n, k < kTile: the intra-batch rank-1 update of a tile
// of rows stored transposed, one 16-lane vector per later column (GCC vector extension,
// lowered to what each clone has). Cloned for AVX-512 and AVX2 since the build targets
// baseline x86-64; ISO C++ mode does not contract to FMA, so every clone gives the same bits.
typedef float VecTile __attribute__((vector_size(kTile * sizeof(float)), aligned(4), may_alias));
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void rank1_tile(float* tile, const float* err, const float* u, int64_t n) {
  const VecTile e = *reinterpret_cast<const VecTile*>(err);
  for (int64_t s = 0; s < n; ++s) {
    VecTile* row = reinterpret_cast<VecTile*>(tile + s * kTile);
    *row -= e * u[s];
  }
}

// OpenBLAS runs single-threaded inside our OpenMP threads for the main loop; its previous
// thread count is restored afterwards.
class BlasSingleThread {
 public:
  BlasSingleThread() : prev_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~BlasSingleThread() { openblas_set_num_threads(prev_); }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int prev_;
};

}  // namespace

GptqResult gptq_quantize(const Tensor& weight_in, const Tensor& hessian_in, const Scheme& scheme,
                         const GptqOptions& options, const std::string& name) {
  // GGML types: scales fitted as llama-quantize does with an imatrix (the importance of
  // column c = H_cc, the calibration inputs' squared sum). K-quants: the super-block fit,
  // held fixed while GPTQ chooses the codes. 32-blocks: each block's fit from the updated
  // weights when GPTQ reaches it (tiny model Q4_0 KLD 0.00535, against 0.00588 with the
  // fit held fixed from the original weights and 0.00562 with the unweighted fit).
  if (scheme.format().is_ggml() && !options.fixed_groups && !options.block_importance &&
      hessian_in.device() == Device::Host && hessian_in.ndim() == 2 && weight_in.ndim() == 2 &&
      hessian_in.dim(0) == weight_in.dim(1)) {
    const int64_t d = hessian_in.dim(0);
    const Tensor h = hessian_in.dtype() == DType::F32 ? hessian_in : hessian_in.to_f32();
    std::vector<float> importance(static_cast<size_t>(d));
    for (int64_t c = 0; c < d; ++c) importance[size_t(c)] = std::max(0.0f, h.data<float>()[c * d + c]);
    GptqOptions with = options;
    if (scheme.format().family == FormatFamily::GgmlBlock || scheme.format().family == FormatFamily::GgmlIQ4NL) {
      with.block_importance = &importance;
      return gptq_quantize(weight_in, hessian_in, scheme, with, name);
    }
    QuantizedLinear fit = kquant_rtn(weight_in, scheme.format(), name, importance);
    std::vector<GroupParams> fixed(fit.scales.size());
    for (size_t i = 0; i < fixed.size(); ++i) {
      fixed[i].scale = fit.scales[i];
      if (!fit.zeros.empty()) fixed[i].zero = fit.zeros[i];
    }
    with.fixed_groups = &fixed;
    with.static_groups = true;
    GptqResult r = gptq_quantize(weight_in, hessian_in, scheme, with, name);
    r.q.super_scales = std::move(fit.super_scales);
    return r;
  }
  const double t_start = wall_seconds();
  const QuantFormat& fmt = scheme.format();
  if (weight_in.device() != Device::Host || hessian_in.device() != Device::Host)
    fail_input("GPTQ of ", name, ": weight and Hessian must be host tensors");
  if (weight_in.ndim() != 2) fail_input("GPTQ of ", name, ": weight must be 2-D, got ", shape_str(weight_in.shape()));
  const int64_t o = weight_in.dim(0), d = weight_in.dim(1);
  if (hessian_in.ndim() != 2 || hessian_in.dim(0) != d || hessian_in.dim(1) != d)
    fail_input("GPTQ of ", name, ": Hessian of shape ", shape_str(hessian_in.shape()),
               " does not match ", d, " input features");
  if (o <= 0 || d <= 0) fail_input("GPTQ of ", name, ": empty weight");
  if (options.block_size <= 0) fail_input("GPTQ of ", name, ": block size must be positive");
  if (!(options.damp >= 0) || !std::isfinite(options.damp))
    fail_input("GPTQ of ", name, ": damping must be a finite non-negative number");
  fmt.check_divides(d, name);
  const bool is_int = fmt.family == FormatFamily::Int;
  const bool zp = fmt.stores_zeros();  // Int zero points, GGML _1 minima
  const bool per_channel = is_int && fmt.group_size == -1;
  if (!is_int && options.act_order && !options.static_groups)
    fail_input("GPTQ of ", name, ": act-order with ", fmt.describe(),
               " needs static groups: act-order permutes the columns, so the ",
               fmt.group_width(d), " consecutive columns of one shared scale would be "
               "quantized at scattered steps and their block scale could not be fitted from "
               "updated weights when the block starts; use --static-groups (scales fitted "
               "before the loop) or drop act-order");

  const Tensor weight = weight_in.dtype() == DType::F32 ? weight_in : weight_in.to_f32();
  const Tensor hessian = hessian_in.dtype() == DType::F32 ? hessian_in : hessian_in.to_f32();
  const float* w0 = weight.data<float>();
  const float* h = hessian.data<float>();
  if (!all_finite(w0, o * d)) fail_input("GPTQ of ", name, ": weight has NaN or Inf values");
  if (!all_finite(h, d * d)) fail_input("GPTQ of ", name, ": Hessian has NaN or Inf values");

  const int64_t G = fmt.group_width(d);
  const int64_t ng = fmt.n_groups(d);
  const float ts = scheme.tensor_scale(w0, o * d);
  const ClipSearch& clip = options.clip;

  Mode mode;
  if (per_channel) mode = Mode::PerChannel;
  else if (options.static_groups || options.fixed_groups) mode = Mode::Static;
  else if (is_int) mode = Mode::Dynamic;
  else mode = options.block_gptq == BlockGptq::Microblock ? Mode::MicroBlock : Mode::BlockColumnwise;
  // MX blocks must not straddle two lazy batches (§7.3), so a block's columns are all in
  // the tile when it starts: round B up to a multiple of G.
  int64_t B = options.block_size;
  if (mode == Mode::MicroBlock || mode == Mode::BlockColumnwise) B = (B + G - 1) / G * G;

  GptqResult res;
  QuantizedLinear& q = res.q;
  q.format = fmt;
  q.out_features = o;
  q.in_features = d;
  q.codes.assign(size_t(o * d), 0);
  q.scales.assign(size_t(o * ng), 0.0f);
  if (zp) q.zeros.assign(size_t(o * ng), 0.0f);
  q.g_idx.assign(size_t(d), 0);
  q.tensor_scale = ts;
  auto store = [&](int64_t r, int64_t g, const GroupParams& p) {
    q.scales[size_t(r * ng + g)] = p.scale;
    if (zp) q.zeros[size_t(r * ng + g)] = p.zero;
  };

  // 1. Per-channel parameters on the original full row.
  std::vector<GroupParams> cur(static_cast<size_t>(o));
  const std::vector<GroupParams>* fixed = options.fixed_groups;
  if (fixed)
    QS_ASSERT(int64_t(fixed->size()) == o * ng, "GPTQ of ", name, ": ", fixed->size(),
              " fixed group parameters for ", o, "x", ng, " groups");
  if (mode == Mode::PerChannel && fixed) {
    for (int64_t r = 0; r < o; ++r) cur[size_t(r)] = (*fixed)[size_t(r)];
    for (int64_t r = 0; r < o; ++r) store(r, 0, cur[size_t(r)]);
  } else if (mode == Mode::PerChannel) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < o; ++r) {
      cur[size_t(r)] = fit_group(scheme, w0 + r * d, d, 1, ts, clip);
    }
    for (int64_t r = 0; r < o; ++r) store(r, 0, cur[size_t(r)]);
  }

  double t_factor = 0, t_loop = 0;
  // 2. Dead inputs.
  std::vector<uint8_t> dead(static_cast<size_t>(d), 0);
  int64_t n_dead = 0;
  for (int64_t j = 0; j < d; ++j)
    if (h[j * d + j] == 0.0f) dead[size_t(j)] = 1, ++n_dead;

  // 3. Static groups: fitted after dead-zeroing, before permutation.
  auto dead_zeroed_row = [&](int64_t r, float* dst) {
    const float* src = w0 + r * d;
    for (int64_t j = 0; j < d; ++j) dst[j] = dead[size_t(j)] ? 0.0f : src[j];
  };
  if (mode == Mode::Static && fixed) {
    for (int64_t r = 0; r < o; ++r)
      for (int64_t g = 0; g < ng; ++g) store(r, g, (*fixed)[size_t(r * ng + g)]);
  } else if (mode == Mode::Static) {
#pragma omp parallel
    {
      std::vector<float> row(static_cast<size_t>(d));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < o; ++r) {
        dead_zeroed_row(r, row.data());
        for (int64_t g = 0; g < ng; ++g) store(r, g, fit_group(scheme, row.data() + g * G, G, 1, ts, clip));
      }
    }
  }

  // GGML 32-blocks' weighted fit: the importance and each row's mean square (the original row).
  const std::vector<float>* imp = mode == Mode::BlockColumnwise ? options.block_importance : nullptr;
  std::vector<float> sigma2(imp ? size_t(o) : 0);
  for (int64_t r = 0; imp && r < o; ++r) {
    float s2 = 0;
    for (int64_t j = 0; j < d; ++j) s2 += w0[r * d + j] * w0[r * d + j];
    sigma2[size_t(r)] = s2 / float(d);
  }

  // 4. Act-order permutation: descending diag H (dead diagonals count as 1), stable.
  std::vector<int64_t> perm(static_cast<size_t>(d));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  std::vector<double> hdiag(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) hdiag[size_t(j)] = dead[size_t(j)] ? 1.0 : double(h[j * d + j]);
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hdiag[size_t(a)] > hdiag[size_t(b)]; });

  // Working weight in permuted order, dead columns zeroed.
  std::vector<float> W(static_cast<size_t>(o * d));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < o; ++r) {
    const float* src = w0 + r * d;
    float* dst = W.data() + r * d;
    for (int64_t j = 0; j < d; ++j) {
      const int64_t c = perm[size_t(j)];
      dst[j] = dead[size_t(c)] ? 0.0f : src[c];
    }
  }

  // 5./6. Damping and the inverse factor, escalating the damping if H is not PD.
  double mean_diag = 0;
  for (double v : hdiag) mean_diag += v;
  mean_diag /= double(d);
  double damp = options.damp;
  const double t_f0 = wall_seconds();
  // Up to d = 1024 the factorisation is faster on one core than waking OpenBLAS's workers.
  std::optional<BlasSingleThread> small_guard;
  if (d <= 1024) small_guard.emplace();
  GptqFactorCache* cache = options.factor_cache;
  const bool reuse = cache && cache->U && cache->hessian == h && cache->damp == options.damp &&
                     cache->act_order == options.act_order && int64_t(cache->U->size()) == d * d;
  std::shared_ptr<const std::vector<float>> u_shared =
      reuse ? cache->U : std::make_shared<std::vector<float>>(static_cast<size_t>(d * d));
  // column-major: U[r][c] = U[r + c·d]
  std::vector<float>& U = const_cast<std::vector<float>&>(*u_shared);  // written only when not reused
  if (reuse) {
    damp = cache->damp_used;
    res.damp_escalations = cache->escalations;
  }
  for (; !reuse;) {
    if (inverse_factor(h, perm, dead, d, damp * mean_diag, U)) break;
    if (damp >= 1.0)
      fail_input("GPTQ of ", name, ": Hessian is not positive definite even with damping ", damp,
                 " × mean(diag H); its calibration statistics are broken");
    const double next = std::min(1.0, std::max(damp * 10.0, 0.01));
    log_warn("GPTQ of ", name, ": Hessian + ", damp, "·mean(diag)·I is not positive definite; "
             "retrying with damping ", next);
    damp = next;
    ++res.damp_escalations;
  }
  res.damp_used = damp;
  res.damp_abs = damp * mean_diag;
  if (cache && !reuse)
    *cache = GptqFactorCache{h, options.damp, options.act_order, u_shared, damp, res.damp_abs, res.damp_escalations};
  t_factor = wall_seconds() - t_f0;

  // Main loop (§1.5), codes written in permuted order first. Rows are independent through
  // the whole loop (given U), so each thread runs every lazy batch — columns and the batch
  // GEMM — on its own contiguous slice of rows with single-threaded BLAS: no barrier per
  // batch and no OpenBLAS worker threads competing with OpenMP's. Inside a thread, rows go
  // in tiles of kTile with the batch stored transposed (tile[t][k] = W1[row k][column t]),
  // so the rank-1 update of one column is one vector op per later column and the tile's
  // rows are quantized independently (latency overlaps).
  std::vector<uint8_t> codes_p(static_cast<size_t>(o * d));
  std::vector<float> E(static_cast<size_t>(o * B));
  double loss = 0;
  const double t_l0 = wall_seconds();
  const int64_t n_tiles = (o + kTile - 1) / kTile;

  auto run_tiles = [&](int64_t tile0, int64_t tile1) -> double {
    double loss_rows = 0;
    std::vector<float> tile(static_cast<size_t>(B * kTile)), qb(static_cast<size_t>(B * kTile));
    std::vector<uint8_t> cb(static_cast<size_t>(B * kTile));
    std::vector<float> ublk(static_cast<size_t>(B * B));  // U[i1:i2, i1:i2] row-major
    std::vector<GroupParams> p(kTile);
    const int64_t r_begin = tile0 * kTile, r_end = std::min(o, tile1 * kTile);
    for (int64_t i1 = 0; i1 < d; i1 += B) {
      const int64_t i2 = std::min(i1 + B, d), nb = i2 - i1;
      for (int64_t c = 0; c < nb; ++c)  // column c of the block, rows 0..c (contiguous in U)
        for (int64_t s = 0; s <= c; ++s) ublk[size_t(s * nb + c)] = U[size_t((i1 + s) + (i1 + c) * d)];
      for (int64_t r0 = r_begin; r0 < r_end; r0 += kTile) {
        const int64_t nr = std::min(kTile, r_end - r0);
        std::fill(tile.begin(), tile.end(), 0.0f);
        for (int64_t k = 0; k < nr; ++k) {
          const float* wr = W.data() + (r0 + k) * d + i1;
          for (int64_t t = 0; t < nb; ++t) tile[size_t(t * kTile + k)] = wr[t];
          p[size_t(k)] = cur[size_t(r0 + k)];
        }
        float err[kTile] = {};
        double lr = 0;
        for (int64_t t = 0; t < nb; ++t) {
          const int64_t j = i1 + t;
          float* col = tile.data() + t * kTile;
          const float u = ublk[size_t(t * nb + t)];
          for (int64_t k = 0; k < nr; ++k) {
            const int64_t r = r0 + k;
            GroupParams& pk = p[size_t(k)];
            uint8_t code;
            float qv;
            if (mode == Mode::MicroBlock) {
              if (t % G == 0) {  // the whole block from the current (updated) weights
                pk = fit_group(scheme, col + k, G, kTile, ts, clip);
                store(r, j / G, pk);
                for (int64_t s = t; s < t + G; ++s) {
                  const size_t at = size_t(s * kTile + k);
                  cb[at] = scheme.quantize(tile[at], pk, ts);
                  qb[at] = scheme.dequantize(cb[at], pk, ts);
                }
              }
              code = cb[size_t(t * kTile + k)];
              qv = qb[size_t(t * kTile + k)];
            } else {
              if (mode == Mode::Dynamic && j % G == 0) {  // stale global W (the quirk)
                pk = fit_group(scheme, W.data() + r * d + j, G, 1, ts, clip);
                store(r, j / G, pk);
              } else if (mode == Mode::BlockColumnwise && t % G == 0) {  // updated W1
                pk = imp ? ggml_block_weighted_fit_one(fmt, col + k, kTile, imp->data() + j, sigma2[size_t(r)])
                         : fit_group(scheme, col + k, G, kTile, ts, clip);
                store(r, j / G, pk);
              } else if (mode == Mode::Static) {
                const int64_t g = perm[size_t(j)] / G;
                pk = GroupParams{};
                pk.scale = q.scales[size_t(r * ng + g)];
                if (zp) pk.zero = q.zeros[size_t(r * ng + g)];
              }
              code = scheme.quantize(col[k], pk, ts);
              qv = scheme.dequantize(code, pk, ts);
            }
            const float diff = col[k] - qv;
            err[k] = diff / u;
            lr += double(err[k]) * double(err[k]);
            E[size_t(r * B + t)] = err[k];
            codes_p[size_t(r * d + j)] = code;
          }
          // W1[:, t+1:] −= err ⊗ U[j, j+1:i2] for the tile (column t itself is done).
          rank1_tile(tile.data() + (t + 1) * kTile, err, ublk.data() + t * nb + t + 1, nb - t - 1);
        }
        loss_rows += lr / 2;
        for (int64_t k = 0; k < nr; ++k) cur[size_t(r0 + k)] = p[size_t(k)];
      }
      // W[:, i2:] −= E · U[i1:i2, i2:]  (U column-major), one GEMM per row tile: BLAS's
      // rounding of a row depends on the GEMM's M, and a tile is the same call whatever
      // the thread or rank split (ranks get whole tiles: row_parallel.cpp).
      for (int64_t r0 = r_begin; i2 < d && r0 < r_end; r0 += kTile)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(std::min(kTile, r_end - r0)),
                    int(d - i2), int(nb), -1.0f, E.data() + r0 * B, int(B), U.data() + i1 + i2 * d,
                    int(d), 1.0f, W.data() + r0 * d + i2, int(d));
    }
    return loss_rows;
  };

  const int threads = int(std::min<int64_t>(omp_get_max_threads(), n_tiles));
  if (threads <= 1) {
    loss = run_tiles(0, n_tiles);
  } else {
    BlasSingleThread guard;
    std::exception_ptr error;
#pragma omp parallel num_threads(threads) reduction(+ : loss)
    {
      const int64_t n = omp_get_num_threads(), k = omp_get_thread_num();
      try {
        loss += run_tiles(n_tiles * k / n, n_tiles * (k + 1) / n);
      } catch (...) {
#pragma omp critical(qshard_gptq_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }
  t_loop = wall_seconds() - t_l0;
  res.loss = loss;

  // Back to the original column order; g_idx.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < o; ++r) {
    const uint8_t* src = codes_p.data() + r * d;
    uint8_t* dst = q.codes.data() + r * d;
    for (int64_t j = 0; j < d; ++j) dst[perm[size_t(j)]] = src[j];
  }
  for (int64_t j = 0; j < d; ++j) {
    const int64_t c = perm[size_t(j)];
    q.g_idx[size_t(c)] = int32_t(mode == Mode::Dynamic ? j / G : c / G);
  }
  log_debug("GPTQ of ", name, ": ", o, "x", d, " in ", wall_seconds() - t_start, " s (inverse factor ",
            t_factor, " s, main loop ", t_loop, " s)");
  if (n_dead > 0) log_debug("GPTQ of ", name, ": ", n_dead, " dead input columns");
  return res;
}

}  // namespace qshard
