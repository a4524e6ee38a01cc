// The state every CUDA op shares: the device, one stream, the cuBLAS and cuSOLVER
// handles on it, and the stream-ordered memory pool tensors come from. Tensors hold a
// shared_ptr to their context, so the stream outlives every buffer freed on it.
#pragma once

#include <cstddef>
#include <memory>

#include "core/tensor.h"
#include "kernels/cuda/cuda_check.h"

namespace qshard::cuda {

class CudaContext {
 public:
  // Throws InputError with one line when no usable device is present.
  static std::shared_ptr<CudaContext> create(int device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  cusolverDnHandle_t cusolver() const { return cusolver_; }

  // Uninitialized device memory from the pool (cudaMallocAsync on our stream; freed
  // blocks stay cached in the pool, so a layer loop reuses them without cudaMalloc).
  Tensor empty(DType dtype, Shape shape);
  Tensor zeros(DType dtype, Shape shape);
  void sync();

  // High-water mark of pool memory in use since creation or the last reset_peak().
  size_t peak_bytes() const;
  void reset_peak();
  // Device memory in use by everyone (cudaMemGetInfo: total − free).
  size_t device_used_bytes() const;

 private:
  CudaContext() = default;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  std::weak_ptr<CudaContext> self_;
};

// The number of usable devices, 0 (never an error) when there is no driver or GPU.
int usable_device_count();

}  // namespace qshard::cuda
