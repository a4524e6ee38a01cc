// GPTQ, RTN and the Hessian sum on one GPU, producing what the CPU reference in
// quant/gptq.cpp, quant/rtn.cpp and quant/hessian.cpp produces (same QuantizedLinear
// layout and conventions; codes identical up to summation-order ties, see
// tests/kernels/test_cuda_backend.cpp). Only built with CUDA (QSHARD_HAVE_CUDA); the
// pipeline reaches these through quant/quant_device.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "quant/gptq.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {

namespace cuda {
class CudaContext;
}

// weight: [out, in], hessian: [in, in] — host tensors of any float dtype, or F32
// tensors on ctx's device. Same checks and messages as gptq_quantize.
GptqResult gptq_quantize_cuda(cuda::CudaContext& ctx, const Tensor& weight, const Tensor& hessian,
                              const Scheme& scheme, const GptqOptions& options,
                              const std::string& name);

// RTN of a host or device weight; same result as rtn_quantize.
QuantizedLinear rtn_quantize_cuda(cuda::CudaContext& ctx, const Tensor& weight,
                                  const Scheme& scheme, const ClipSearch& clip,
                                  const std::string& name);

// Σ xxᵀ of device activations in fp32 (cuBLAS SSYRK, plain fp32 as the CPU's SSYRK).
class CudaHessian {
 public:
  CudaHessian(std::shared_ptr<cuda::CudaContext> ctx, int64_t in_features);
  // x: F32 [tokens, in_features] on ctx's device.
  void add(const Tensor& x);
  int64_t tokens() const { return tokens_; }
  // The sum with both triangles filled: a device tensor, or a host copy.
  Tensor sum_device();
  Tensor download();

 private:
  std::shared_ptr<cuda::CudaContext> ctx_;
  Tensor sum_;  // column-major upper triangle until sum_device() mirrors it
  int64_t tokens_ = 0;
};

}  // namespace qshard
