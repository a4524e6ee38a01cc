// llama.cpp's non-linear 4-bit types (formats.md E.5, ggml-common.h block_iq4_nl /
// block_iq4_xs): each code q indexes the 16 values kvalues_iq4nl, w = scale·kvalues[q].
// IQ4_NL: one FP16 d per 32-block (scale = d). IQ4_XS: 256-element super-blocks with FP16
// d and a signed 6-bit code l per 32-element sub-block (scale = d·l, exact in fp32), from
// which the GGUF writer recovers l = scale/d. In a QuantizedLinear a 32-block is a group;
// IQ4_XS's super_scales hold (d, 0) per super-block as the K-quants' do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/quantized.h"
#include "quant/scheme.h"

namespace qshard {

extern const int8_t kIq4Values[16];  // kvalues_iq4nl

// best_index_int8 over kIq4Values: the index of the value nearest x (a tie goes to the
// upper value, as llama.cpp's binary search decides).
int iq4_best_index(float x);

// quantize_iq4_nl / quantize_iq4_xs (what llama-quantize calls, with or without an imatrix):
// quantize_row_iq4_nl_impl operation for operation in fp32, ntry 7, error weights
// importance·sqrt(σ² + x²) with σ² twice the (super-)block's mean square, or x² without
// `importance` ([in] non-negative column weights). weight: host [out, in].
QuantizedLinear iq4_rtn(const Tensor& weight, const QuantFormat& format, const std::string& name,
                        const std::vector<float>& importance = {});

// IQ4_NL's fit of one 32-block x[0], x[stride], ...: scale = FP16 d, inv = 1/d before
// rounding (quantize() rounds with it, as llama.cpp does); qw null: the x² weights.
GroupParams iq4nl_fit_one(const float* x, int64_t stride, const float* qw);

}  // namespace qshard
