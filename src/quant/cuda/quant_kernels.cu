// GPU quantization kernels: RTN groups, the pieces of GPTQ's inverse factor that
// cuSOLVER does not do, and the lazy-batch column loop. Compiled with -fmad=false (see
// scheme_device.cuh) so the per-element arithmetic is the CPU reference's.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "quant/cuda/quant_kernels.h"
#include "quant/cuda/scheme_device.cuh"

namespace qshard::cuda {

namespace {

constexpr int kThreads = 256;

#define QS_GRID_STRIDE(i, n)                                                  \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void amax_finite_kernel(const float* w, int64_t n, float* amax, int* bad) {
  float m = 0.0f;
  int nonfinite = 0;
  QS_GRID_STRIDE(i, n) {
    const float v = w[i];
    if (!isfinite(v)) nonfinite = 1;
    else m = fmaxf(m, fabsf(v));
  }
  m = warp_max(m);
  nonfinite = __any_sync(kFullMask, nonfinite);
  if ((threadIdx.x & 31) == 0) {
    // Non-negative floats order like their bit patterns as ints.
    atomicMax(reinterpret_cast<int*>(amax), __float_as_int(m));
    if (nonfinite) atomicOr(bad, kFlagNonFinite);
  }
}

__global__ void rtn_groups_kernel(const float* w, int64_t rows, int64_t cols, int64_t G,
                                  DevFormat f, DevClip clip, float ts, uint8_t* codes,
                                  float* scales, float* zeros, int* flags) {
  const DevScheme s(f);
  const int64_t ng = cols / G;
  QS_GRID_STRIDE(idx, rows * ng) {
    const int64_t r = idx / ng, g = idx % ng;
    const float* x = w + r * cols + g * G;
    const GP p = fit_group_dev(s, x, G, 1, ts, clip, flags);
    scales[idx] = p.scale;
    if (zeros) zeros[idx] = p.zero;
    if (codes) {
      uint8_t* c = codes + r * cols + g * G;
      for (int64_t i = 0; i < G; ++i) c[i] = s.quantize(x[i], p, ts, flags);
    }
  }
}

__global__ void zero_dead_kernel(float* w, int64_t rows, int64_t cols, const uint8_t* dead) {
  QS_GRID_STRIDE(i, rows * cols) {
    if (dead[i % cols]) w[i] = 0.0f;
  }
}

__global__ void permute_kernel(const float* src, float* dst, int64_t rows, int64_t cols,
                               const int32_t* perm) {
  QS_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, j = i % cols;
    dst[i] = src[r * cols + perm[j]];
  }
}

__global__ void unpermute_codes_kernel(const uint8_t* src, uint8_t* dst, int64_t rows,
                                       int64_t cols, const int32_t* perm) {
  QS_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, j = i % cols;
    dst[r * cols + perm[j]] = src[i];
  }
}

// x: i (contiguous in a), y: k, both grid-strided.
__global__ void build_reversed_kernel(const float* h, const int32_t* perm, const uint8_t* dead,
                                      int64_t d, double damp_abs, float* a, float* diag) {
  for (int64_t k = blockIdx.y; k < d; k += gridDim.y) {
    const int64_t pk = perm[d - 1 - k];
    const float* hrow = h + pk * d;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < d;
         i += int64_t(gridDim.x) * blockDim.x) {
      float v = hrow[perm[d - 1 - i]];
      if (i == k) {
        const double dv = (dead[pk] ? 1.0 : double(v)) + damp_abs;
        v = float(dv);
        diag[k] = v;
      }
      a[i + k * d] = v;
    }
  }
}

__global__ void check_pivots_kernel(const float* l, const float* diag, int64_t d, int* bad) {
  QS_GRID_STRIDE(k, d) {
    const double v = double(l[k + k * d]);
    if (!(v * v > 1e-6 * double(diag[k]))) atomicOr(bad, 1);
  }
}

__global__ void reverse_kernel(float* a, int64_t n) {
  QS_GRID_STRIDE(p, n / 2) {
    const float t = a[p];
    a[p] = a[n - 1 - p];
    a[n - 1 - p] = t;
  }
}

__global__ void check_upper_kernel(const float* a, int64_t d, int* bad) {
  QS_GRID_STRIDE(idx, d * d) {
    const int64_t r = idx % d, c = idx / d;
    if (r <= c && !isfinite(a[idx])) atomicOr(bad, 1);
  }
}

__global__ void copy_u_block_kernel(const float* u, int64_t d, int64_t i1, int64_t nb, float* ublk) {
  QS_GRID_STRIDE(idx, nb * nb) {
    const int64_t t = idx / nb, c = idx % nb;
    ublk[idx] = c >= t ? u[(i1 + t) + (i1 + c) * d] : 0.0f;
  }
}

__global__ void mirror_upper_kernel(float* s, int64_t d) {
  QS_GRID_STRIDE(idx, d * d) {
    const int64_t i = idx % d, j = idx / d;  // element (i, j) at s[i + j·d]
    if (i < j) s[j + i * d] = s[idx];
  }
}

// ---- GPTQ lazy batch ------------------------------------------------------------------
// One warp per 32 rows, one row per lane. The batch's columns live in shared memory
// transposed, tile[t·kPitch + lane] (the CPU's tile layout; the pitch 33 keeps both the
// column-wise compute and the row-wise coalesced load/store free of bank conflicts).
// Lanes are independent through the column loop, so the only synchronization is the
// __syncwarp around the cooperative load and store.
constexpr int kRows = 32;
constexpr int kPitch = kRows + 1;

__global__ void gptq_block_kernel(GptqBlockArgs a) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x;
  const int64_t nb = a.nb;
  float* tile = smem;
  float* qb = tile + nb * kPitch;  // MicroBlock only: the block's dequantized values
  uint8_t* cb = reinterpret_cast<uint8_t*>(a.mode == kMicroBlock ? qb + nb * kPitch : qb);
  const int64_t r0 = int64_t(blockIdx.x) * kRows;
  const int64_t r = r0 + lane;

  for (int k = 0; k < kRows && r0 + k < a.o; ++k) {  // row k: lanes along columns
    const float* src = a.W + (r0 + k) * a.d + a.i1;
    for (int64_t t = lane; t < nb; t += 32) tile[t * kPitch + k] = src[t];
  }
  __syncwarp();

  if (r < a.o) {
    const DevScheme s(a.format);
    const float ts = a.tensor_scale;
    const int64_t G = a.G;
    GP p{a.cur_scale[r], a.cur_zero[r]};
    auto store = [&](int64_t g, const GP& q) {
      a.scales[r * a.ng + g] = q.scale;
      if (a.zeros) a.zeros[r * a.ng + g] = q.zero;
    };
    double loss = 0;
    for (int64_t t = 0; t < nb; ++t) {
      const int64_t j = a.i1 + t;
      float* col = tile + t * kPitch + lane;
      const float u = a.ublk[t * nb + t];
      uint8_t code;
      float qv;
      if (a.mode == kMicroBlock) {
        if (t % G == 0) {  // the whole block from the current (updated) weights
          p = fit_group_dev(s, col, G, kPitch, ts, a.clip, a.flags);
          store(j / G, p);
          for (int64_t s2 = t; s2 < t + G; ++s2) {
            const int64_t at = s2 * kPitch + lane;
            cb[at] = s.quantize(tile[at], p, ts, a.flags);
            qb[at] = s.dequantize(cb[at], p, ts);
          }
        }
        code = cb[t * kPitch + lane];
        qv = qb[t * kPitch + lane];
      } else {
        if (a.mode == kDynamic && j % G == 0) {  // stale global W (the reference's quirk)
          p = fit_group_dev(s, a.W + r * a.d + j, G, 1, ts, a.clip, a.flags);
          store(j / G, p);
        } else if (a.mode == kBlockColumnwise && t % G == 0) {  // updated W1
          p = fit_group_dev(s, col, G, kPitch, ts, a.clip, a.flags);
          store(j / G, p);
        } else if (a.mode == kStatic) {
          const int64_t g = a.perm[j] / G;
          p.scale = a.scales[r * a.ng + g];
          if (a.zeros) p.zero = a.zeros[r * a.ng + g];
        }
        code = s.quantize(*col, p, ts, a.flags);
        qv = s.dequantize(code, p, ts);
      }
      const float err = (*col - qv) / u;
      loss += double(err) * double(err);
      cb[t * kPitch + lane] = code;
      // W1[:, t+1:] −= err · U[j, j+1:i2] (this lane's row); column t then holds err.
      const float* urow = a.ublk + t * nb;
#pragma unroll 4
      for (int64_t s2 = t + 1; s2 < nb; ++s2) tile[s2 * kPitch + lane] -= err * urow[s2];
      *col = err;
    }
    a.loss_rows[r] += loss / 2;
    a.cur_scale[r] = p.scale;
    a.cur_zero[r] = p.zero;
  }
  __syncwarp();

  for (int k = 0; k < kRows && r0 + k < a.o; ++k) {
    float* e = a.E + (r0 + k) * a.B;
    uint8_t* c = a.codes_p + (r0 + k) * a.d + a.i1;
    for (int64_t t = lane; t < nb; t += 32) {
      e[t] = tile[t * kPitch + k];
      c[t] = cb[t * kPitch + k];
    }
  }
}

}  // namespace

void amax_and_finite(const float* w, int64_t n, float* amax, int* bad, cudaStream_t stream) {
  if (n <= 0) return;
  amax_finite_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(w, n, amax, bad);
  QS_CUDA_LAUNCH_CHECK(amax_finite_kernel);
}

void rtn_groups(const float* w, int64_t rows, int64_t cols, int64_t G, DevFormat f, DevClip clip,
                float ts, uint8_t* codes, float* scales, float* zeros, int* flags,
                cudaStream_t stream) {
  const int64_t n = rows * (cols / G);
  if (n <= 0) return;
  // Few threads per block: each thread is a whole group's work.
  constexpr int kGroupThreads = 128;
  rtn_groups_kernel<<<grid_for(n, kGroupThreads), kGroupThreads, 0, stream>>>(
      w, rows, cols, G, f, clip, ts, codes, scales, zeros, flags);
  QS_CUDA_LAUNCH_CHECK(rtn_groups_kernel);
}

void zero_dead_columns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  zero_dead_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(w, rows, cols, dead);
  QS_CUDA_LAUNCH_CHECK(zero_dead_kernel);
}

void permute_columns(const float* src, float* dst, int64_t rows, int64_t cols, const int32_t* perm,
                     cudaStream_t stream) {
  if (rows * cols <= 0) return;
  permute_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(src, dst, rows, cols, perm);
  QS_CUDA_LAUNCH_CHECK(permute_kernel);
}

void unpermute_codes(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols,
                     const int32_t* perm, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  unpermute_codes_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(src, dst, rows,
                                                                                   cols, perm);
  QS_CUDA_LAUNCH_CHECK(unpermute_codes_kernel);
}

void build_reversed_hessian(const float* h, const int32_t* perm, const uint8_t* dead, int64_t d,
                            double damp_abs, float* a, float* diag, cudaStream_t stream) {
  if (d <= 0) return;
  const dim3 grid{unsigned((d + kThreads - 1) / kThreads), unsigned(d < 65535 ? d : 65535), 1};
  build_reversed_kernel<<<grid, kThreads, 0, stream>>>(h, perm, dead, d, damp_abs, a, diag);
  QS_CUDA_LAUNCH_CHECK(build_reversed_kernel);
}

void check_pivots(const float* l, const float* diag, int64_t d, int* bad, cudaStream_t stream) {
  if (d <= 0) return;
  check_pivots_kernel<<<grid_for(d, kThreads), kThreads, 0, stream>>>(l, diag, d, bad);
  QS_CUDA_LAUNCH_CHECK(check_pivots_kernel);
}

void reverse_and_check_upper(float* a, int64_t d, int* bad, cudaStream_t stream) {
  const int64_t n = d * d;
  if (n <= 0) return;
  if (n > 1) {
    reverse_kernel<<<grid_for(n / 2, kThreads), kThreads, 0, stream>>>(a, n);
    QS_CUDA_LAUNCH_CHECK(reverse_kernel);
  }
  check_upper_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, d, bad);
  QS_CUDA_LAUNCH_CHECK(check_upper_kernel);
}

void copy_u_block(const float* u, int64_t d, int64_t i1, int64_t nb, float* ublk, cudaStream_t stream) {
  if (nb <= 0) return;
  copy_u_block_kernel<<<grid_for(nb * nb, kThreads), kThreads, 0, stream>>>(u, d, i1, nb, ublk);
  QS_CUDA_LAUNCH_CHECK(copy_u_block_kernel);
}

void mirror_upper(float* s, int64_t d, cudaStream_t stream) {
  if (d <= 1) return;
  mirror_upper_kernel<<<grid_for(d * d, kThreads), kThreads, 0, stream>>>(s, d);
  QS_CUDA_LAUNCH_CHECK(mirror_upper_kernel);
}

size_t gptq_block_shared_bytes(int64_t nb, int mode) {
  const size_t cells = size_t(nb) * kPitch;
  return cells * sizeof(float) * (mode == kMicroBlock ? 2 : 1) + cells;  // + the code bytes
}

void gptq_block(const GptqBlockArgs& args, cudaStream_t stream) {
  if (args.o <= 0 || args.nb <= 0) return;
  const size_t shared = gptq_block_shared_bytes(args.nb, args.mode);
  if (shared > 48 * 1024) {
    int device = 0, optin = 0;
    QS_CUDA_CHECK(cudaGetDevice(&device));
    QS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    QS_CUDA_CHECK(shared <= size_t(optin) ? cudaSuccess : cudaErrorInvalidValue);
    QS_CUDA_CHECK(cudaFuncSetAttribute(gptq_block_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
  }
  const unsigned blocks = unsigned((args.o + kRows - 1) / kRows);
  gptq_block_kernel<<<blocks, kRows, shared, stream>>>(args);
  QS_CUDA_LAUNCH_CHECK(gptq_block_kernel);
}

}  // namespace qshard::cuda
