// Elementwise kernels: dtype conversion, bias rows, RoPE, SiLU·mul, residual add.
// Grid-stride loops over int64 indices; consecutive threads touch consecutive elements.
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"

namespace qshard::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
  return __uint_as_float(uint32_t(h) << 16);
}

__global__ void convert_kernel(int type, const void* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (type == int(SrcType::BF16))
      dst[i] = bf16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
    else if (type == int(SrcType::F16))
      dst[i] = __half2float(static_cast<const __half*>(src)[i]);
    else
      dst[i] = static_cast<const float*>(src)[i];
  }
}

// core/dtype.h f32_to_bf16, bit for bit (quiet NaN, then round to nearest even).
__global__ void to_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t u = __float_as_uint(src[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      dst[i] = uint16_t((u >> 16) | 0x40);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      dst[i] = uint16_t(u >> 16);
    }
  }
}

__global__ void fill_rows_kernel(float* y, const float* bias, int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = bias[i % n];
}

// One thread per (token, head, i < half): the pair (i, i + half) is read and written by
// that thread only. __fmul_rn keeps nvcc from fusing into an FMA, so the result is the
// CPU backend's bit for bit.
__global__ void rope_kernel(float* x, int64_t tokens, int64_t n_heads, int64_t head_dim,
                            const float* cos, const float* sin, const int32_t* positions) {
  const int64_t half = head_dim / 2;
  const int64_t total = tokens * n_heads * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t th = idx / half;  // token * n_heads + head
    const int64_t t = th / n_heads;
    const int64_t row = int64_t(positions[t]) * half + i;
    const float c = cos[row], s = sin[row];
    float* p = x + th * head_dim + i;
    const float x1 = p[0], x2 = p[half];
    p[0] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    p[half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
  }
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

}  // namespace

void convert_to_f32(SrcType type, const void* src, float* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  convert_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(int(type), src, dst, n);
  QS_CUDA_LAUNCH_CHECK(convert_kernel);
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  to_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(src, dst, n);
  QS_CUDA_LAUNCH_CHECK(to_bf16_kernel);
}

void fill_rows(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  fill_rows_kernel<<<grid_for(m * n, kThreads), kThreads, 0, stream>>>(y, bias, m, n);
  QS_CUDA_LAUNCH_CHECK(fill_rows_kernel);
}

void rope(float* x, int64_t tokens, int64_t n_heads, int64_t head_dim, const float* cos,
          const float* sin, const int32_t* positions, cudaStream_t stream) {
  const int64_t total = tokens * n_heads * (head_dim / 2);
  if (total <= 0) return;
  rope_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(x, tokens, n_heads, head_dim,
                                                                  cos, sin, positions);
  QS_CUDA_LAUNCH_CHECK(rope_kernel);
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(gate, up, out, n);
  QS_CUDA_LAUNCH_CHECK(silu_mul_kernel);
}

void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  QS_CUDA_LAUNCH_CHECK(add_kernel);
}

}  // namespace qshard::cuda
