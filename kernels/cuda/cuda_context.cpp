#include "kernels/cuda/cuda_context.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "core/error.h"

namespace qshard::cuda {

int usable_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky "no device" error
    return 0;
  }
  return n;
}

std::shared_ptr<CudaContext> CudaContext::create(int device) {
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    fail_input("--device cuda: no usable CUDA device (", cudaGetErrorString(rc),
               "); run on a GPU machine or use --device cpu");
  }
  if (device < 0 || device >= n)
    fail_input("--device cuda:", device, ": this machine has ", n, " CUDA device(s) (0..", n - 1,
               ")");
  std::shared_ptr<CudaContext> ctx(new CudaContext());
  ctx->self_ = ctx;
  ctx->device_ = device;
  QS_CUDA_CHECK(cudaSetDevice(device));
  QS_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking));
  QS_CUBLAS_CHECK(cublasCreate(&ctx->cublas_));
  QS_CUBLAS_CHECK(cublasSetStream(ctx->cublas_, ctx->stream_));
  // Plain fp32 unless an op asks for tensor cores through its compute type: the
  // quantizers compare against the fp32 CPU reference.
  QS_CUBLAS_CHECK(cublasSetMathMode(ctx->cublas_, CUBLAS_DEFAULT_MATH));
  QS_CUSOLVER_CHECK(cusolverDnCreate(&ctx->cusolver_));
  QS_CUSOLVER_CHECK(cusolverDnSetStream(ctx->cusolver_, ctx->stream_));
  QS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&ctx->pool_, device));
  // Keep freed blocks in the pool instead of returning them at every sync: the pool is
  // then the caching allocator.
  uint64_t keep = UINT64_MAX;
  QS_CUDA_CHECK(cudaMemPoolSetAttribute(ctx->pool_, cudaMemPoolAttrReleaseThreshold, &keep));
  ctx->reset_peak();
  return ctx;
}

CudaContext::~CudaContext() {
  // Destructors must not throw: report and go on.
  if (stream_ && cudaStreamSynchronize(stream_) != cudaSuccess)
    std::fprintf(stderr, "qshard: warning: CUDA stream failed while shutting down: %s\n",
                 cudaGetErrorString(cudaGetLastError()));
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

Tensor CudaContext::empty(DType dtype, Shape shape) {
  for (int64_t d : shape) QS_ASSERT(d >= 0, "negative dimension in ", shape_str(shape));
  // A zero-size tensor still gets a (small) buffer: a null data pointer means "undefined".
  const size_t bytes = std::max<size_t>(size_t(shape_numel(shape)) * dtype_size(dtype), 256);
  void* p = nullptr;
  const cudaError_t rc = cudaMallocFromPoolAsync(&p, bytes, pool_, stream_);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    fail("CUDA out of memory allocating ", bytes, " bytes for a ", dtype_name(dtype), " ",
         shape_str(shape), " tensor on device ", device_, " (", cudaGetErrorString(rc),
         "; pool in use ", peak_bytes(), " bytes at peak)");
  }
  std::shared_ptr<CudaContext> keep = self_.lock();
  std::shared_ptr<void> owner(p, [keep](void* q) {
    if (cudaFreeAsync(q, keep->stream_) != cudaSuccess)
      std::fprintf(stderr, "qshard: warning: cudaFreeAsync failed: %s\n",
                   cudaGetErrorString(cudaGetLastError()));
  });
  return Tensor::view(dtype, std::move(shape), p, std::move(owner), Device::Cuda);
}

Tensor CudaContext::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  QS_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream_));
  return t;
}

void CudaContext::sync() { QS_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

size_t CudaContext::peak_bytes() const {
  uint64_t v = 0;
  QS_CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &v));
  return size_t(v);
}

void CudaContext::reset_peak() {
  uint64_t zero = 0;  // the only value this attribute accepts: resets to the current use
  QS_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &zero));
}

size_t CudaContext::device_used_bytes() const {
  size_t free_b = 0, total_b = 0;
  QS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

}  // namespace qshard::cuda
