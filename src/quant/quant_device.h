// The quantizers on the device a Backend computes on: the GPU versions (quant/cuda) when
// `backend` is the CUDA backend, the CPU reference otherwise. The pipeline calls these,
// so --device cuda moves GPTQ and RTN to the GPU without the pipeline knowing CUDA.
#pragma once

#include <string>

#include "core/tensor.h"
#include "quant/gptq.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {

class Backend;

GptqResult gptq_quantize_on(Backend& backend, const Tensor& weight, const Tensor& hessian,
                            const Scheme& scheme, const GptqOptions& options,
                            const std::string& name);

QuantizedLinear rtn_quantize_on(Backend& backend, const Tensor& weight, const Scheme& scheme,
                                const ClipSearch& clip, const std::string& name);

}  // namespace qshard
