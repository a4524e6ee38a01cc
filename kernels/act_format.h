// Activation number formats: how the input of a quantized Linear is rounded before the
// GEMM (W8A8 / W4A8 / MX simulation). Lives with the kernels because a Backend op takes
// it; weight formats (quant/format.h) sit above and are unrelated.
#pragma once

#include <cstdint>
#include <string>

namespace qshard {

enum class ActFormat {
  None,   // activations stay fp32
  Int8,   // per-token dynamic symmetric INT8: scale = max|x_row| / 127 (vLLM W8A8)
  MXInt8, // OCP MXINT8: blocks of 32 along the row, E8M0 shared exponent, k/64 elements
};

// Elements sharing one shared exponent in MXINT8 (the OCP block size).
inline constexpr int64_t kMXInt8Block = 32;

// --act-format NAME: none, int8, mxint8. InputError on anything else.
ActFormat parse_act_format(const std::string& name);
const char* act_format_name(ActFormat f);  // "none", "int8", "mxint8"

}  // namespace qshard
