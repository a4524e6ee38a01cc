// The scheme table: one row per number format, each with a reference fit (group
// parameters), quantize, dequantize and pack. Every quantizer (RTN, GPTQ, AWQ) and every
// backend is checked against these rows, never against itself.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "quant/format.h"
#include "quant/quantized.h"

namespace qshard {

struct GroupParams {
  float scale = 1.0f;  // see QuantizedLinear::scales
  float zero = 0.0f;   // Int: integer zero point; GGML _1 types: the FP16 minimum m
  // GGML block types: llama.cpp quantizes with the unrounded scale and minimum and stores
  // them rounded to FP16 (scale, zero above). inv = 1/d before rounding and qmin = the
  // unrounded minimum, so that RTN reproduces llama-quantize bit for bit; inv = 0 (the
  // parameters rebuilt from a QuantizedLinear) quantizes with the stored values.
  float inv = 0.0f;
  float qmin = 0.0f;
};

class Scheme {
 public:
  virtual ~Scheme() = default;
  static std::unique_ptr<Scheme> make(const QuantFormat& format);

  virtual const QuantFormat& format() const = 0;
  // Per-tensor parameter: NVFP4's amax/(6·448); 1 for every other format. Non-finite
  // weights are refused here with an InputError (callers name the tensor).
  virtual float tensor_scale(const float* w, int64_t n) const;
  // Parameters for one group of n values x[0], x[stride], ... . `shrink` in (0, 1]
  // narrows the range (clip search; 1 = the observed range).
  virtual GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                          float tensor_scale) const = 0;
  virtual uint8_t quantize(float x, const GroupParams& p, float tensor_scale) const = 0;
  virtual float dequantize(uint8_t code, const GroupParams& p, float tensor_scale) const = 0;
};

// Codes packed LSB-first into a byte stream, `bits` per code (the neutral "pack" of
// every row; exporters repack into their engines' word layouts).
std::vector<uint8_t> pack_codes(const std::vector<uint8_t>& codes, int bits);
std::vector<uint8_t> unpack_codes(const std::vector<uint8_t>& packed, int bits, int64_t count);

// Scale encodings stored by MX and NVFP4 containers.
uint8_t encode_e8m0(float power_of_two);  // 2^e -> e + 127
float decode_e8m0(uint8_t code);          // 0xFF -> NaN
uint8_t encode_e4m3(float x);             // round to nearest even, saturate to 448
// decode: f8e4m3_to_f32 in core/dtype.h

}  // namespace qshard
