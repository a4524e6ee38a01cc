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

void linear(const float* x, const float* w, const float* bias, float* y, int64_t m,
            int64_t n, int64_t k) {
  if (m == 0 || n == 0) return;
  // Seeding y with the bias lets sgemm add it for free (beta = 1) instead of a second
  // pass over y afterwards.
  float beta = 0.0f;
  if (bias) {
    for (int64_t i = 0; i < m; ++i) std::copy(bias, bias + n, y + i * n);
    beta = 1.0f;
  }
  if (k == 0) {  // lda = 0 would make OpenBLAS's argument check complain
    if (!bias) std::fill(y, y + m * n, 0.0f);
    return;
  }
  // Split the GEMM over OpenMP threads ourselves rather than let OpenBLAS thread it:
  // with two pools on the same cores, OpenMP's workers (still spinning after the last
  // row op) steal cycles from OpenBLAS's; one pool for every op took the tiny decoder
  // layer from ~50 to ~27 ms on 2 cores. Split the longer side of y into chunks of
  // >= kChunk rows (or columns), handed out dynamically so a preempted core does not
  // stall the call.
  constexpr int64_t kChunk = 128;
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks = threads == 1 ? 1 : std::clamp<int64_t>(extent / kChunk, 1, 4 * threads);
  const int64_t per = (extent + chunks - 1) / chunks;
  SerialBlasScope serial_blas;
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1 && 2.0 * m * n * k > 4e6)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b0 = c * per, b1 = std::min(extent, b0 + per);
    if (b0 >= b1) continue;
    if (split_rows)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(b1 - b0), int(n), int(k), 1.0f,
                  x + b0 * k, int(k), w, int(k), beta, y + b0 * n, int(n));
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(b1 - b0), int(k), 1.0f,
                  x, int(k), w + b0 * k, int(k), beta, y + b0, int(n));
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
