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
#include "quant/scheme.h"

namespace qshard {

constexpr int64_t kQK_K = 256;  // QK_K: elements per super-block

// llama.cpp's quantizer, operation for operation in fp32: without `importance` the
// reference path (quantize_row_q{4,5,6}_K_ref, llama-quantize without an imatrix: equal
// bytes); with it ([in] non-negative column weights, e.g. mean squared calibration
// activations = an imatrix) the imatrix path (quantize_row_q{3,4,5,6}_K_impl), whose scale
// and min codes are fitted to the weighted error. weight: host [out, in], in % 256 == 0.
// IQ4_NL / IQ4_XS go to iq4_rtn (quant/iq4.h), so that callers holding a super-block fit
// fixed (GPTQ, the AWQ family) take every GGML type whose scales llama.cpp fits per block.
QuantizedLinear kquant_rtn(const Tensor& weight, const QuantFormat& format, const std::string& name,
                           const std::vector<float>& importance = {});

// llama.cpp's imatrix path for one 32-block (quantize_row_q{4,5}_{0,1}_impl): d (and m)
// fitted to the error weighted by qw·sqrt(σ² + x²), σ² the row's mean square, for the 32
// values x[0], x[stride], ... with importance qw[0..31] (make_qx_quants for Q4_0/Q5_0,
// make_qkx3_quants for Q4_1/Q5_1), stored FP16. llama.cpp ignores an imatrix for Q8_0;
// here it gets make_qx_quants with nmax 128, weighted the same way. IQ4_NL: iq4nl_fit_one
// (σ² from the block itself, as its impl). inv = 0: quantize() uses the stored values.
GroupParams ggml_block_weighted_fit_one(const QuantFormat& format, const float* x, int64_t stride,
                                        const float* qw, float sigma2);

}  // namespace qshard
