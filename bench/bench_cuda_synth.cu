// Seeded synthetic tensors generated on the GPU (bench_cuda_layer): 128 × 2048 tokens of
// 8192 features is 8.6 GB of fp32, too much to make on the host and copy.
#include <cmath>

#include "bench/bench_cuda_synth.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace qshard::bench {

namespace {

__device__ __forceinline__ uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void fill_kernel(float* p, int64_t n, uint64_t seed, float stddev, int64_t cols,
                            int64_t outlier_every, float outlier_scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix(seed ^ mix(uint64_t(i)));
    // Box-Muller from two 24-bit uniforms in (0, 1].
    const float u1 = (float((r >> 40) & 0xffffff) + 1.0f) / 16777216.0f;
    const float u2 = float((r >> 8) & 0xffffff) / 16777216.0f;
    float v = stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    if (outlier_every > 0 && (i % cols) % outlier_every == 7) v *= outlier_scale;
    p[i] = v;
  }
}

}  // namespace

void fill_normal(float* p, int64_t n, uint64_t seed, float stddev, int64_t cols,
                 int64_t outlier_every, float outlier_scale, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<cuda::grid_for(n, 256), 256, 0, stream>>>(p, n, seed, stddev, cols, outlier_every,
                                                          outlier_scale);
  QS_CUDA_LAUNCH_CHECK(fill_kernel);
}

}  // namespace qshard::bench
