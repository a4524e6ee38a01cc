// Launchers of the GPU quantization kernels on raw device pointers (all on `stream`),
// shared by nvcc (C++17) and the host code in gptq_cuda.cpp. Each mirrors a piece of
// the CPU reference: the scheme table (scheme.cpp), fit_group (rtn.cpp), GPTQ's inverse
// factor and lazy-batch loop (gptq.cpp). Callers validate sizes; launchers check launches.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qshard::cuda {

// A QuantFormat as plain ints (FormatFamily's values: Int 0, MXInt 1, MXFP4 2, NVFP4 3).
struct DevFormat {
  int family = 0;
  int bits = 4;
  int symmetric = 1;
};

// ClipSearch with the step count precomputed as rtn.cpp does.
struct DevClip {
  int enabled = 0;
  int steps = 0;  // shrink factors 1 − i/grid for i in [1, steps)
  int grid = 100;
  float norm = 2.4f;
};

// Flags a kernel raises instead of throwing (read back by the host).
enum DevFlag : int { kFlagNonFinite = 1 };

// max |w| over n values, and a non-zero *bad when any is NaN/Inf. amax and bad are
// device scalars the caller zeroes first.
void amax_and_finite(const float* w, int64_t n, float* amax, int* bad, cudaStream_t stream);

// RTN over row-major w[rows, cols] in groups of G consecutive columns (one thread per
// group, the CPU's order of operations): scales/zeros [rows, cols/G] (zeros may be null),
// codes [rows, cols] (null: fit only, as GPTQ's static groups and per-channel fits need).
void rtn_groups(const float* w, int64_t rows, int64_t cols, int64_t G, DevFormat f, DevClip clip,
                float tensor_scale, uint8_t* codes, float* scales, float* zeros, int* flags,
                cudaStream_t stream);

// w[r, j] = 0 where dead[j] (in place).
void zero_dead_columns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream);
// dst[r, j] = src[r, perm[j]].
void permute_columns(const float* src, float* dst, int64_t rows, int64_t cols,
                     const int32_t* perm, cudaStream_t stream);
// dst[r, perm[j]] = src[r, j] (codes back to the original column order).
void unpermute_codes(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols,
                     const int32_t* perm, cudaStream_t stream);

// a = J·Hp·J column-major with damping, as gptq.cpp inverse_factor builds it:
// a[i + k·d] = H[perm[d−1−k]][perm[d−1−i]], diagonal (dead ? 1 : H) + damp_abs;
// diag[k] = the damped diagonal as stored (fp32).
void build_reversed_hessian(const float* h, const int32_t* perm, const uint8_t* dead, int64_t d,
                            double damp_abs, float* a, float* diag, cudaStream_t stream);
// *bad != 0 when a Cholesky pivot l_kk has l² ≤ 1e-6·diag[k] (a numerically singular H).
void check_pivots(const float* l, const float* diag, int64_t d, int* bad, cudaStream_t stream);
// a[p] ↔ a[n−1−p] (U = J·L⁻¹·J), then *bad != 0 when the upper triangle is not finite.
void reverse_and_check_upper(float* a, int64_t d, int* bad, cudaStream_t stream);
// ublk[t·nb + c] = U[(i1+t) + (i1+c)·d] for c ≥ t (row-major copy of U's diagonal block).
void copy_u_block(const float* u, int64_t d, int64_t i1, int64_t nb, float* ublk, cudaStream_t stream);
// Column-major upper triangle of s (d×d) copied to the lower: s symmetric.
void mirror_upper(float* s, int64_t d, cudaStream_t stream);

enum GptqMode : int { kPerChannel = 0, kDynamic = 1, kStatic = 2, kMicroBlock = 3, kBlockColumnwise = 4 };

// One lazy batch of GPTQ over every row: columns [i1, i1+nb) of the permuted working
// weight W[o, d] quantized one at a time with the intra-batch updates; errors to E[o, B]
// (for the trailing GEMM the caller runs), codes to codes_p[o, d] (permuted order).
struct GptqBlockArgs {
  const float* W = nullptr;  // [o, d] row-major, permuted, read only here
  int64_t o = 0, d = 0, i1 = 0, nb = 0, B = 0;
  const float* ublk = nullptr;  // [nb, nb] row-major (copy_u_block)
  float* E = nullptr;           // [o, B]
  uint8_t* codes_p = nullptr;   // [o, d]
  float* scales = nullptr;      // [o, ng]
  float* zeros = nullptr;       // [o, ng] or null (not Int)
  int64_t ng = 0, G = 0;
  float* cur_scale = nullptr;   // [o]: the row's current group parameters, carried
  float* cur_zero = nullptr;    //      across batches (a group may span several)
  const int32_t* perm = nullptr;  // [d] (static groups: the group of permuted column j)
  int mode = kDynamic;
  DevFormat format;
  DevClip clip;
  float tensor_scale = 1.0f;
  double* loss_rows = nullptr;  // [o] accumulated Σ err²/2
  int* flags = nullptr;
};
// Dynamic shared memory the block kernel needs for nb columns; 0 if nb is too large
// for this device.
size_t gptq_block_shared_bytes(int64_t nb, int mode);
void gptq_block(const GptqBlockArgs& args, cudaStream_t stream);

}  // namespace qshard::cuda
