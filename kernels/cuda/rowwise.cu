// Row reductions: RMSNorm and log-softmax, one block per row. Each thread strides over
// the row (coalesced), partial sums in double as the CPU reference keeps them, then a
// block reduction. In the final pass each element is read and written by the same
// thread after the reduction's barrier, so y may alias x.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"

namespace qshard::cuda {

namespace {

constexpr int kRowThreads = 256;

struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__global__ void rmsnorm_kernel(const float* x, const float* weight, float eps, float* y,
                               int64_t dim) {
  __shared__ double scratch[32];
  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* yr = y + int64_t(blockIdx.x) * dim;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += double(xr[i]) * double(xr[i]);
  ss = block_reduce(ss, scratch, SumOp{});
  // fp32 from here, in transformers' order: (x * rsqrt(mean + eps)) * weight.
  const float mean = float(ss / double(dim));
  const float inv = 1.0f / sqrtf(mean + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    yr[i] = __fmul_rn(__fmul_rn(xr[i], inv), weight[i]);
}

__global__ void log_softmax_kernel(const float* x, float* y, int64_t cols) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const float* xr = x + int64_t(blockIdx.x) * cols;
  float* yr = y + int64_t(blockIdx.x) * cols;
  // fmaxf skips NaN as the CPU's std::max does; a NaN still makes the sum, and so the
  // whole row, NaN on both backends.
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, xr[j]);
  mx = block_reduce(mx, fscratch, MaxOp{});
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += double(expf(xr[j] - mx));
  sum = block_reduce(sum, dscratch, SumOp{});
  const float log_sum = float(log(sum));
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = (xr[j] - mx) - log_sum;
}

}  // namespace

void rmsnorm(const float* x, const float* weight, float eps, float* y, int64_t rows,
             int64_t dim, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  QS_CUDA_CHECK(rows <= 0x7fffffff ? cudaSuccess : cudaErrorInvalidValue);
  rmsnorm_kernel<<<unsigned(rows), kRowThreads, 0, stream>>>(x, weight, eps, y, dim);
  QS_CUDA_LAUNCH_CHECK(rmsnorm_kernel);
}

void log_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  QS_CUDA_CHECK(rows <= 0x7fffffff ? cudaSuccess : cudaErrorInvalidValue);
  log_softmax_kernel<<<unsigned(rows), kRowThreads, 0, stream>>>(x, y, cols);
  QS_CUDA_LAUNCH_CHECK(log_softmax_kernel);
}

}  // namespace qshard::cuda
