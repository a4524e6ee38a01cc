// Causal GQA attention, correct first: one warp per (window, head, query) with an online
// (streaming) softmax over the keys 0..query, so no score matrix is materialized. Each
// lane holds head_dim/32 elements of the query and of the output accumulator; a key row
// is read by the 32 lanes together (coalesced) and the dot product is a warp butterfly.
// A tiled (flash-style) kernel is the next step once this one is validated on a device.
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"

namespace qshard::cuda {

namespace {

constexpr int kPerLane = int(kAttentionMaxHeadDim / 32);  // head_dim <= 256
constexpr int kWarpsPerBlock = 4;                         // 4 consecutive queries a block

__global__ void attention_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                 const float* __restrict__ v, float* __restrict__ out,
                                 int64_t seqlen, int64_t n_heads, int64_t n_kv_heads,
                                 int64_t head_dim, float scale) {
  const int lane = threadIdx.x;  // blockDim = (32, kWarpsPerBlock)
  const int64_t query = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  const int64_t head = blockIdx.y, win = blockIdx.z;
  // Whole warps leave together, and nothing below synchronizes beyond the warp.
  if (query >= seqlen) return;
  const int64_t ldq = n_heads * head_dim, ldkv = n_kv_heads * head_dim;
  const int64_t kv_head = head / (n_heads / n_kv_heads);
  const float* qrow = q + (win * seqlen + query) * ldq + head * head_dim;
  const float* kbase = k + win * seqlen * ldkv + kv_head * head_dim;
  const float* vbase = v + win * seqlen * ldkv + kv_head * head_dim;

  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    qv[i] = d < head_dim ? qrow[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = 0; j <= query; ++j) {
    const float* krow = kbase + j * ldkv;
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < head_dim) part += qv[i] * krow[d];
    }
    const float s = warp_sum(part) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * corr + p;
    const float* vrow = vbase + j * ldkv;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < head_dim) acc[i] = acc[i] * corr + p * vrow[d];
    }
    m = m_new;
  }
  float* orow = out + (win * seqlen + query) * ldq + head * head_dim;
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < head_dim) orow[d] = acc[i] * inv;
  }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float* out, int64_t batch,
               int64_t seqlen, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
               float scale, cudaStream_t stream) {
  if (batch <= 0 || seqlen <= 0) return;
  const int64_t qblocks = (seqlen + kWarpsPerBlock - 1) / kWarpsPerBlock;
  // Grid limits: x < 2^31, y and z <= 65535 (checked by the backend before calling).
  const dim3 grid{unsigned(qblocks), unsigned(n_heads), unsigned(batch)};
  const dim3 block{32, kWarpsPerBlock};
  attention_kernel<<<grid, block, 0, stream>>>(q, k, v, out, seqlen, n_heads, n_kv_heads,
                                               head_dim, scale);
  QS_CUDA_LAUNCH_CHECK(attention_kernel);
}

}  // namespace qshard::cuda
