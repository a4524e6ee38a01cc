// Launchers of the CUDA backend's own kernels on raw device pointers, all on `stream`.
// cuda_backend.cpp validates Tensors and calls these; they trust their arguments
// (dense row-major buffers, sizes already checked) and check their launches.
// Shared by g++ (C++20) and nvcc (C++17) translation units.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qshard::cuda {

// Element types the device converter reads (the float dtypes of checkpoints).
enum class SrcType : int { F32 = 0, BF16 = 1, F16 = 2 };

// dst[i] = float(src[i]).
void convert_to_f32(SrcType type, const void* src, float* dst, int64_t n, cudaStream_t stream);
// dst[i] = bf16(src[i]), round to nearest even (core/dtype.h f32_to_bf16).
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n, cudaStream_t stream);
// y[m, n] = bias[n] for every row (linear seeds y with the bias, GEMM adds with beta 1).
void fill_rows(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream);

// See kernels/backend.h for each op's semantics; x may equal y where the Backend allows.
void rmsnorm(const float* x, const float* weight, float eps, float* y, int64_t rows,
             int64_t dim, cudaStream_t stream);
void rope(float* x, int64_t tokens, int64_t n_heads, int64_t head_dim, const float* cos,
          const float* sin, const int32_t* positions, cudaStream_t stream);
void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream);
void log_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream);

// Head sizes the attention kernel handles (one warp holds a query row in registers).
constexpr int64_t kAttentionMaxHeadDim = 256;
// Causal GQA attention; q,out[batch*seqlen, n_heads*head_dim], k,v[.., n_kv_heads*head_dim].
void attention(const float* q, const float* k, const float* v, float* out, int64_t batch,
               int64_t seqlen, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
               float scale, cudaStream_t stream);

}  // namespace qshard::cuda
