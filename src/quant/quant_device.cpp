#include "quant/quant_device.h"

#include "kernels/backend.h"
#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "quant/cuda/gptq_cuda.h"
#endif

namespace qshard {

GptqResult gptq_quantize_on(Backend& backend, const Tensor& weight, const Tensor& hessian,
                            const Scheme& scheme, const GptqOptions& options,
                            const std::string& name) {
#ifdef QSHARD_HAVE_CUDA
  // The GPU kernel fits its own group parameters; fixed ones (awq-joint+gptq) run on the
  // CPU reference until it takes them; so do llama.cpp's block types, which the GPU
  // kernels do not implement.
  const bool gpu_format = !scheme.format().is_ggml();
  if (CudaBackend* cuda = as_cuda_backend(backend); cuda && !options.fixed_groups && gpu_format)
    return gptq_quantize_cuda(cuda->context(), weight, hessian, scheme, options, name);
#endif
  (void)backend;
  return gptq_quantize(weight, hessian, scheme, options, name);
}

QuantizedLinear rtn_quantize_on(Backend& backend, const Tensor& weight, const Scheme& scheme,
                                const ClipSearch& clip, const std::string& name) {
#ifdef QSHARD_HAVE_CUDA
  if (CudaBackend* cuda = as_cuda_backend(backend); cuda && !scheme.format().is_ggml())
    return rtn_quantize_cuda(cuda->context(), weight, scheme, clip, name);
#endif
  (void)backend;
  return rtn_quantize(weight, scheme, clip, name);
}

}  // namespace qshard
