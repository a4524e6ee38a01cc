// Activation fake-quantization (quantize, then dequantize in place of the GEMM's
// epilogue). The arithmetic follows the engines bit for bit where one exists:
//  - int8: vLLM's dynamic_scaled_int8_quant (csrc/quantization/compressed_tensors/
//    int8_quant_kernels.cu): absmax per token, scale = absmax / 127.0f, codes
//    cvt.rni.sat(x * (127.0f / absmax)) (round half to even, saturate to [-128, 127]),
//    value = code * scale as the W8A8 GEMM's epilogue applies it.
//  - mxint8: the MX shared-exponent rule of quant/scheme.cpp (formats.md F.3 with
//    emax_elem = 0): E = floor(log2(amax)) clamped to [-127, 127], k = RNE(x / 2^E · 64)
//    clamped to ±127, value k · 2^(E−6). A row whose length is not a multiple of 32 ends
//    in a shorter block. tests/kernels checks this against the Scheme table itself.
// A row holding NaN or Inf comes out all NaN: no scale describes it, and a NaN in the
// logits is easier to trace than a silently finite row.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"

namespace qshard::cpu {

namespace {

constexpr int64_t kParallelMin = int64_t(1) << 15;

float abs_max(const float* x, int64_t n) {
  float m = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    finite &= std::isfinite(a);
    m = std::max(m, a);
  }
  return finite ? m : std::numeric_limits<float>::quiet_NaN();
}

void fill_nan(float* y, int64_t n) { std::fill(y, y + n, std::numeric_limits<float>::quiet_NaN()); }

// cvt.rni.sat.s8.f32: round half to even, saturate to [-128, 127], NaN -> 0. The NaN
// and saturation cases matter when 127 / absmax overflows (a row of subnormals): vLLM
// then turns 0 into 0 and everything else into ±absmax.
inline float cvt_rni_sat_s8(float v) {
  if (std::isnan(v)) return 0.0f;
  return std::clamp(std::nearbyint(v), -128.0f, 127.0f);
}

void int8_row(const float* x, float* y, int64_t n) {
  const float amax = abs_max(x, n);
  if (std::isnan(amax)) return fill_nan(y, n);
  if (amax == 0.0f) return std::fill(y, y + n, 0.0f);  // vLLM: 0 * inf = NaN -> code 0
  const float scale = amax / 127.0f;
  const float inv = 127.0f / amax;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = cvt_rni_sat_s8(x[i] * inv) * scale;
  }
}

void mxint8_block(const float* x, float* y, int64_t n) {
  const float amax = abs_max(x, n);
  if (std::isnan(amax)) return fill_nan(y, n);
  int e = -126;  // amax = 0: microxcaling's log2(FLT_MIN); every element is 0 anyway
  if (amax > 0.0f) {
    std::frexp(amax, &e);
    e -= 1;  // floor(log2(amax)), exact for subnormals too
  }
  e = std::clamp(e, -127, 127);
  for (int64_t i = 0; i < n; ++i) {
    // x / 2^e · 2^6 is exact (a power-of-two scaling of a value below 2^(e+1)).
    const float k = std::clamp(std::nearbyint(std::ldexp(x[i], 6 - e)), -127.0f, 127.0f);
    y[i] = std::ldexp(k, e - 6);
  }
}

}  // namespace

void fake_quant_activations(const float* x, float* y, int64_t rows, int64_t cols, ActFormat f) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    switch (f) {
      case ActFormat::None:
        if (yr != xr) std::copy(xr, xr + cols, yr);
        break;
      case ActFormat::Int8:
        int8_row(xr, yr, cols);
        break;
      case ActFormat::MXInt8:
        for (int64_t c = 0; c < cols; c += kMXInt8Block)
          mxint8_block(xr + c, yr + c, std::min(kMXInt8Block, cols - c));
        break;
    }
  }
}

}  // namespace qshard::cpu
