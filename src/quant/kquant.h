// llama.cpp's K-quants (formats.md E.5): 256-element super-blocks with an FP16 scale d (and
// FP16 dmin for the types with minima) over sub-blocks whose integer scales (and minima)
// are part of the fit. In a QuantizedLinear a sub-block is a group: scales/zeros hold the
// decoded products d·sc and dmin·m (exact in fp32: an 11-bit mantissa times a ≤ 8-bit
// integer), super_scales the FP16 d and dmin themselves, from which the GGUF writer
// recovers sc = scale/d exactly.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/quantized.h"

namespace qshard {

constexpr int64_t kQK_K = 256;  // QK_K: elements per super-block

// llama.cpp's quantizer, operation for operation in fp32: without `importance` the
// reference path (quantize_row_q{4,5,6}_K_ref, llama-quantize without an imatrix: equal
// bytes); with it ([in] non-negative column weights, e.g. mean squared calibration
// activations = an imatrix) the imatrix path (quantize_row_q{4,5,6}_K_impl), whose scale
// and min codes are fitted to the weighted error. weight: host [out, in], in % 256 == 0.
QuantizedLinear kquant_rtn(const Tensor& weight, const QuantFormat& format, const std::string& name,
                           const std::vector<float>& importance = {});

}  // namespace qshard
