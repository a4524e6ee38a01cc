// The GEMM-shaped ops: linear and attention, both on OpenBLAS sgemm.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/blas_threads.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace qshard::cpu {

namespace {

// Every sgemm of a Linear has one shape, kRowTile x (a column chunk) x k, whatever the
// number of rows: BLAS's rounding of a row depends on the call's shape (OpenBLAS's
// SkylakeX kernels take a small-matrix path below an M·N·K bound, other cores have tail
// kernels per M), and the rows a Linear sees depend on how windows are batched and split
// over ranks — an MoE expert's routed rows most of all. With fixed tiles a row gets the
// same bits at every rank count (gptq.cpp's row tiles, for the same reason). A short last
// tile is zero-padded. Cost against one sgemm over all rows, single-threaded SkylakeX
// kernels on a loaded 2-core machine: +3% to +12% at 1024–4096 rows (W is repacked per
// tile; 64- or 128-row tiles cost 25–80%), and up to a whole tile's work for the padding.
constexpr int64_t kRowTile = 256;
// Columns in chunks fixed by n alone (never by the thread count), so small-M GEMMs with
// a wide W (lm_head) still spread over threads.
constexpr int64_t kColTile = 1024;

// y[rows, cols] (row stride ldy) = x[rows, k] · w[cols, k]ᵀ (+ bias), as one
// kRowTile-row sgemm.
void linear_tile(const float* x, const float* w, const float* bias, float* y, int64_t rows,
                 int64_t cols, int64_t k, int64_t ldy) {
  // Seeding y with the bias lets sgemm add it for free (beta = 1).
  auto seed = [&](float* out, int64_t ld, int64_t nrows) {
    if (bias)
      for (int64_t i = 0; i < nrows; ++i) std::copy(bias, bias + cols, out + i * ld);
  };
  const float beta = bias ? 1.0f : 0.0f;
  if (rows == kRowTile) {
    seed(y, ldy, rows);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(kRowTile), int(cols), int(k), 1.0f, x,
                int(k), w, int(k), beta, y, int(ldy));
    return;
  }
  std::vector<float> xs(size_t(kRowTile * k), 0.0f), ys(size_t(kRowTile * cols), 0.0f);
  std::copy(x, x + rows * k, xs.data());
  seed(ys.data(), cols, kRowTile);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(kRowTile), int(cols), int(k), 1.0f,
              xs.data(), int(k), w, int(k), beta, ys.data(), int(cols));
  for (int64_t i = 0; i < rows; ++i) std::copy_n(ys.data() + i * cols, cols, y + i * ldy);
}

}  // namespace

void linear(const float* x, const float* w, const float* bias, float* y, int64_t m,
            int64_t n, int64_t k) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // lda = 0 would make OpenBLAS's argument check complain
    for (int64_t i = 0; i < m; ++i)
      if (bias)
        std::copy(bias, bias + n, y + i * n);
      else
        std::fill(y + i * n, y + (i + 1) * n, 0.0f);
    return;
  }
  // Split over OpenMP threads ourselves rather than let OpenBLAS thread it: with two
  // pools on the same cores, OpenMP's workers (still spinning after the last row op)
  // steal cycles from OpenBLAS's; one pool for every op took the tiny decoder layer from
  // ~50 to ~27 ms on 2 cores. Tiles are handed out dynamically so a preempted core does
  // not stall the call; which thread runs a tile does not change its bits.
  const int64_t row_tiles = (m + kRowTile - 1) / kRowTile, col_tiles = (n + kColTile - 1) / kColTile;
  const int64_t tiles = row_tiles * col_tiles;
  SerialBlasScope serial_blas;
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1 && 2.0 * m * n * k > 4e6)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = (t / col_tiles) * kRowTile, c0 = (t % col_tiles) * kColTile;
    linear_tile(x + r0 * k, w + c0 * k, bias ? bias + c0 : nullptr, y + r0 * n + c0,
                std::min(kRowTile, m - r0), std::min(kColTile, n - c0), k, n);
  }
}

namespace {

// Query rows per GEMM tile. Tiling lets a tile skip the keys after its last query
// (causal), which saves ~3/8 of the flops at 4 tiles per window, and bounds the
// per-thread score buffer to tile × seqlen. Smaller tiles waste less of the masked
// triangle, larger ones run sgemm faster: 64 rows measured best at seqlen 256, 256
// rows at seqlen 2048 (head_dim 64/128, 2 cores), so aim for ~8 tiles a window.
int64_t query_tile(int64_t seqlen) {
  const int64_t eighth = (seqlen / 8 + 63) / 64 * 64;
  return std::clamp<int64_t>(eighth, 64, 256);
}

// p[0, valid) = softmax(p[0, valid)); p[valid, len) = 0 (the causal mask).
QS_MULTIVERSION
void masked_softmax_row(float* p, int64_t valid, int64_t len) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, p[j]);
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < valid; ++j) {
    const float e = exp_approx(p[j] - mx);
    p[j] = e;
    sum += double(e);
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < valid; ++j) p[j] *= inv;
  std::fill(p + valid, p + len, 0.0f);
}

}  // namespace

void attention(const float* q, const float* k, const float* v, const AttentionShape& s,
               float scale, float* out) {
  const int64_t d = s.head_dim, seq = s.seqlen;
  const int64_t ldq = s.n_heads * d, ldkv = s.n_kv_heads * d;
  const int64_t group = s.n_heads / s.n_kv_heads;
  const int64_t tile_rows = query_tile(seq);
  const int64_t tiles = (seq + tile_rows - 1) / tile_rows;
  const int64_t items = s.batch * s.n_heads * tiles;
  if (items == 0 || d == 0) return;

  // Many small GEMMs: parallelize over (window, head, tile), one sgemm per thread.
  SerialBlasScope serial_blas;
#pragma omp parallel
  {
    std::vector<float> scores(size_t(std::min(tile_rows, seq) * seq));
    // Dynamic: the last tile of a window has `tiles` times the work of the first.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      // Largest tiles (the last of each window) first, so the dynamic schedule ends
      // on small ones and both threads finish together.
      const int64_t pairs = s.batch * s.n_heads;
      const int64_t tile = tiles - 1 - item / pairs;
      const int64_t head = item % pairs % s.n_heads;
      const int64_t win = item % pairs / s.n_heads;
      const int64_t q0 = tile * tile_rows, q1 = std::min(seq, q0 + tile_rows);
      const int64_t rows = q1 - q0, keys = q1;
      const int64_t kv_head = head / group;
      const float* qp = q + (win * seq + q0) * ldq + head * d;
      const float* kp = k + win * seq * ldkv + kv_head * d;
      const float* vp = v + win * seq * ldkv + kv_head * d;
      float* op = out + (win * seq + q0) * ldq + head * d;

      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(keys), int(d),
                  scale, qp, int(ldq), kp, int(ldkv), 0.0f, scores.data(), int(keys));
      for (int64_t r = 0; r < rows; ++r)
        masked_softmax_row(scores.data() + r * keys, q0 + r + 1, keys);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(d), int(keys),
                  1.0f, scores.data(), int(keys), vp, int(ldkv), 0.0f, op, int(ldq));
    }
  }
}

}  // namespace qshard::cpu
