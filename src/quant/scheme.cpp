// The scheme table. One rounding rule everywhere an element is rounded to a grid:
// round-half-to-even (std::nearbyint under the default FE_TONEAREST mode), as PyTorch's
// round() does for GPTQ's quant.py. E2M1 and MX element ties go to the even code (e.g.
// MXFP4 5.0 -> 4, 2.5 -> 2, 0.25 -> 0); E4M3 scale encoding is RNE as well.
#include "quant/scheme.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/iq4.h"

namespace qshard {

namespace {

[[noreturn]] void fail_nonfinite() { fail_input("weight contains NaN/Inf"); }

inline void check_finite(float x) {
  if (!std::isfinite(x)) fail_nonfinite();
}

// max |x_i| over a strided group, refusing non-finite values.
float group_amax(const float* x, int64_t n, int64_t stride) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    check_finite(v);
    amax = std::max(amax, std::fabs(v));
  }
  return amax;
}

// floor(log2(a)) for finite a > 0, exact (subnormals included).
int floor_log2(float a) {
  int ex = 0;
  std::frexp(a, &ex);  // a = f * 2^ex, f in [0.5, 1)
  return ex - 1;
}

// ---------------------------------------------------------------- INTk (GPTQ quant.py)
class IntScheme final : public Scheme {
 public:
  explicit IntScheme(const QuantFormat& f) : f_(f), maxq_((1 << f.bits) - 1) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                  float /*tensor_scale*/) const override {
    float xmin = 0.0f, xmax = 0.0f;  // the range always contains 0
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i * stride];
      check_finite(v);
      xmin = std::min(xmin, v);
      xmax = std::max(xmax, v);
    }
    if (f_.symmetric) {
      xmax = std::max(-xmin, xmax);
      if (xmin < 0) xmin = -xmax;  // quirk: no negative value keeps xmin = 0
    }
    if (xmin == 0.0f && xmax == 0.0f) {
      xmin = -1.0f;
      xmax = 1.0f;
    }
    if (shrink != 1.0f) {
      xmin *= shrink;
      xmax *= shrink;
    }
    // fp32 arithmetic as quant.py does in torch: this matters at structural ties (the
    // extremes of a symmetric group sit exactly at ±maxq/2 steps). A range too wide for
    // fp32 (±FLT_MAX) is computed in double instead.
    GroupParams p;
    p.scale = (xmax - xmin) / float(maxq_);
    if (!std::isfinite(p.scale)) p.scale = float((double(xmax) - double(xmin)) / maxq_);
    // Keep the step positive for groups of subnormal magnitude.
    if (!(p.scale > 0.0f)) p.scale = std::numeric_limits<float>::denorm_min();
    if (f_.symmetric)
      p.zero = float((maxq_ + 1) / 2);
    else
      p.zero = std::nearbyint(-xmin / p.scale);
    return p;
  }

  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    const float q = std::nearbyint(x / p.scale) + p.zero;  // fp32, as torch
    return uint8_t(std::clamp(q, 0.0f, float(maxq_)));
  }

  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    return p.scale * (float(code) - p.zero);
  }

 private:
  QuantFormat f_;
  int maxq_;
};

// ------------------------------------------------- MX shared exponent (OCP, formats.md F.3)
// e = floor(log2(shrink·amax)) − emax_elem, clamped to [−127, 127]; amax = 0 uses
// log2(FLT_MIN) = −126 as microxcaling does. Returned as the float 2^e.
float mx_scale(float amax, float shrink, int emax_elem) {
  const float a = amax * shrink;
  int e = (a > 0.0f ? floor_log2(a) : -126) - emax_elem;
  e = std::clamp(e, -127, 127);
  return std::ldexp(1.0f, e);
}

// ------------------------------------------------- MXINTd: k·2^(E−(d−2)), |k| ≤ 2^(d−1)−1
class MXIntScheme final : public Scheme {
 public:
  explicit MXIntScheme(const QuantFormat& f)
      : f_(f), kmax_((1 << (f.bits - 1)) - 1), frac_(f.bits - 2), mask_((1u << f.bits) - 1) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                  float) const override {
    GroupParams p;
    p.scale = mx_scale(group_amax(x, n, stride), shrink, /*emax_elem=*/0);
    return p;
  }

  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    // x / 2^e · 2^(d−2): exact in double (power-of-two scale), then RNE.
    double v = double(x) / double(p.scale) * double(1 << frac_);
    double k = std::clamp(std::nearbyint(v), double(-kmax_), double(kmax_));
    return uint8_t(uint32_t(int32_t(k)) & mask_);
  }

  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    int32_t k = int32_t(code & mask_);
    if (k & (1 << (f_.bits - 1))) k -= (1 << f_.bits);  // sign-extend
    return std::ldexp(float(k), -frac_) * p.scale;
  }

 private:
  QuantFormat f_;
  int kmax_, frac_;
  uint32_t mask_;
};

// ------------------------------------------------- E2M1 elements (MXFP4, NVFP4)
constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Nearest E2M1 code, ties to the even magnitude index, saturating at 6. Bit 3 carries
// the sign of x (so −0 and small negatives that round to zero give code 8, i.e. −0).
uint8_t e2m1_encode(double v) {
  const double a = std::fabs(v);
  uint8_t m;
  if (a <= 0.25) m = 0;        // tie 0.25 -> 0 (even)
  else if (a < 0.75) m = 1;    // tie 0.75 -> 1.0 (index 2)
  else if (a <= 1.25) m = 2;   // tie 1.25 -> 1.0
  else if (a < 1.75) m = 3;    // tie 1.75 -> 2.0 (index 4)
  else if (a <= 2.5) m = 4;    // tie 2.5 -> 2.0
  else if (a < 3.5) m = 5;     // tie 3.5 -> 4.0 (index 6)
  else if (a <= 5.0) m = 6;    // tie 5.0 -> 4.0
  else m = 7;                  // (5, inf) -> 6, saturating
  return uint8_t((std::signbit(v) ? 0x8 : 0x0) | m);
}

inline float e2m1_decode(uint8_t code) {
  const float m = kE2M1[code & 0x7];
  return (code & 0x8) ? -m : m;
}

class MXFP4Scheme final : public Scheme {
 public:
  explicit MXFP4Scheme(const QuantFormat& f) : f_(f) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                  float) const override {
    GroupParams p;
    p.scale = mx_scale(group_amax(x, n, stride), shrink, /*emax_elem=*/2);
    return p;
  }
  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    return e2m1_encode(double(x) / double(p.scale));
  }
  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    return e2m1_decode(code) * p.scale;
  }

 private:
  QuantFormat f_;
};

// ------------------------------------------------- NVFP4 (formats.md F.5)
class NVFP4Scheme final : public Scheme {
 public:
  explicit NVFP4Scheme(const QuantFormat& f) : f_(f) {}
  const QuantFormat& format() const override { return f_; }

  float tensor_scale(const float* w, int64_t n) const override {
    const float amax = group_amax(w, n, 1);
    if (amax == 0.0f) return 1.0f;
    return float(double(amax) / (6.0 * 448.0));
  }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                  float tensor_scale) const override {
    const double amax = double(group_amax(x, n, stride)) * shrink;
    // E4M3(amax/6/s_tensor); a block that would round to scale 0 (all zeros, or tiny
    // against the tensor) keeps the smallest subnormal 2^-9 so the scale stays positive.
    uint8_t code = encode_e4m3(float(amax / 6.0 / double(tensor_scale)));
    if (code == 0) code = 1;
    GroupParams p;
    p.scale = f8e4m3_to_f32(code);
    return p;
  }
  uint8_t quantize(float x, const GroupParams& p, float tensor_scale) const override {
    check_finite(x);
    return e2m1_encode(double(x) / (double(p.scale) * double(tensor_scale)));
  }
  float dequantize(uint8_t code, const GroupParams& p, float tensor_scale) const override {
    return e2m1_decode(code) * p.scale * tensor_scale;
  }

 private:
  QuantFormat f_;
};

// ------------------------------------------------- llama.cpp's 32-blocks (formats.md E.5)
// The fit and rounding of ggml-quants.c's quantize_row_q{4,5}_{0,1}_ref and q8_0_ref,
// operation for operation in fp32 (so that RTN equals llama-quantize without an imatrix):
//   _0: d = max/−2^(b−1) with max the signed value of largest |x| (Q8_0: d = amax/127,
//       q = roundf(x/d)); q = trunc(x·id + 2^(b−1) + 0.5), clamped;
//   _1: d = (max − min)/(2^b − 1), m = min; q = trunc((x − min)·id + 0.5), clamped.
// d and m are stored as FP16 and dequantization uses those; quantization uses the
// unrounded id = 1/d and min, as llama.cpp does (GroupParams::inv, qmin).
class GgmlBlockScheme final : public Scheme {
 public:
  explicit GgmlBlockScheme(const QuantFormat& f)
      : f_(f), maxq_((1 << f.bits) - 1), half_(1 << (f.bits - 1)) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink,
                  float) const override {
    GroupParams p;
    float d = 0.0f;
    if (f_.bits == 8) {
      d = group_amax(x, n, stride) * shrink / 127.0f;
    } else if (f_.symmetric) {
      float amax = 0.0f, max = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i * stride];
        check_finite(v);
        if (amax < std::fabs(v)) {
          amax = std::fabs(v);
          max = v;
        }
      }
      d = max * shrink / float(-half_);
    } else {
      float min = std::numeric_limits<float>::max(), max = -min;
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i * stride];
        check_finite(v);
        min = std::min(min, v);
        max = std::max(max, v);
      }
      if (shrink != 1.0f) min *= shrink, max *= shrink;
      d = (max - min) / float(maxq_);
      p.qmin = min;
      p.zero = f16_to_f32(f32_to_f16(min));
    }
    p.inv = d != 0.0f ? 1.0f / d : 0.0f;
    p.scale = f16_to_f32(f32_to_f16(d));
    return p;
  }

  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    const bool exact = p.inv != 0.0f;
    const float id = exact ? p.inv : (p.scale != 0.0f ? 1.0f / p.scale : 0.0f);
    if (f_.bits == 8) {
      const float q = std::round(x * id);  // roundf: ties away from zero
      return uint8_t(std::clamp(q, -128.0f, 127.0f) + 128.0f);
    }
    float v;
    if (f_.symmetric) {
      const float xi = x * id;
      v = xi + (float(half_) + 0.5f);
    } else {
      const float xi = (x - (exact ? p.qmin : p.zero)) * id;
      v = xi + 0.5f;
    }
    // (int8_t) truncation for v > −1 is floor then the clamp; GPTQ's updated weights can
    // leave the block's range, where llama.cpp's cast would wrap, so clamp both ends.
    return uint8_t(std::clamp(std::floor(v), 0.0f, float(maxq_)));
  }

  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    if (f_.symmetric) return float(int(code) - half_) * p.scale;
    return float(code) * p.scale + p.zero;
  }

 private:
  QuantFormat f_;
  int maxq_, half_;
};

// ------------------------------------------------- llama.cpp's K-quants (quant/kquant.h)
// Rounding with a sub-block's decoded parameters, as the last pass of
// quantize_row_q{4,5,6}_K_ref: Q4_K/Q5_K q = nearest((x + dmin·m)/(d·sc)), w = d·sc·q − dmin·m;
// Q3_K/Q6_K q = nearest(x/(d·sc)) + h, w = d·sc·(q − h), h = 2^(bits−1) (4, 32). The parameters themselves are fitted
// per 256-element super-block (kquant_rtn), never per group: GPTQ takes them fixed.
class GgmlKScheme final : public Scheme {
 public:
  explicit GgmlKScheme(const QuantFormat& f) : f_(f), maxq_((1 << f.bits) - 1), half_(1 << (f.bits - 1)) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float*, int64_t, int64_t, float, float) const override {
    fail_input("--format ", f_.name(), ": its scales are fitted per 256-element super-block, "
               "which this method's per-group fit cannot do; use --method rtn, gptq, awq or "
               "awq-joint (with or without +gptq)");
  }

  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    if (p.scale == 0.0f) return f_.symmetric ? uint8_t(half_) : uint8_t(0);
    const float v = f_.symmetric ? x / p.scale : (x + p.zero) / p.scale;
    const float l = std::nearbyint(v) + (f_.symmetric ? float(half_) : 0.0f);
    return uint8_t(std::clamp(l, 0.0f, float(maxq_)));
  }

  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    if (f_.symmetric) return p.scale * float(int(code) - half_);
    return p.scale * float(code) - p.zero;
  }

 private:
  QuantFormat f_;
  int maxq_, half_;
};

// ------------------------------------------------- llama.cpp's IQ4_NL / IQ4_XS (quant/iq4.h)
// w = scale·kvalues_iq4nl[q]; q = the value nearest x/scale (best_index_int8), with
// llama.cpp's unrounded 1/d where the fit gives it (inv). IQ4_NL's fit is its 32-block
// scale search; IQ4_XS's scales come from the super-block fit (iq4_rtn), which GPTQ holds.
class GgmlIQ4Scheme final : public Scheme {
 public:
  explicit GgmlIQ4Scheme(const QuantFormat& f) : f_(f) {}
  const QuantFormat& format() const override { return f_; }

  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink, float) const override {
    if (f_.family == FormatFamily::GgmlIQ4XS)
      fail_input("--format iq4_xs: its scales are fitted per 256-element super-block, which this "
                 "method's per-group fit cannot do; use --method rtn, gptq, awq or awq-joint "
                 "(with or without +gptq)");
    QS_ASSERT(n == 32, "iq4_nl block of ", n);
    GroupParams p = iq4nl_fit_one(x, stride, nullptr);
    if (shrink != 1.0f) {  // a clip search's narrower range: the same search's d, shrunk
      const float d = p.inv != 0.0f ? shrink / p.inv : 0.0f;
      p.scale = f16_to_f32(f32_to_f16(d));
      p.inv = d != 0.0f ? 1.0f / d : 0.0f;
    }
    return p;
  }

  uint8_t quantize(float x, const GroupParams& p, float) const override {
    check_finite(x);
    const float id = p.inv != 0.0f ? p.inv : (p.scale != 0.0f ? 1.0f / p.scale : 0.0f);
    return uint8_t(iq4_best_index(id * x));
  }

  float dequantize(uint8_t code, const GroupParams& p, float) const override {
    return p.scale * float(kIq4Values[code & 0xF]);
  }

 private:
  QuantFormat f_;
};

}  // namespace

std::unique_ptr<Scheme> Scheme::make(const QuantFormat& format) {
  switch (format.family) {
    case FormatFamily::Int:
      QS_ASSERT(format.bits >= 2 && format.bits <= 8, "int bits ", format.bits);
      return std::make_unique<IntScheme>(format);
    case FormatFamily::MXInt:
      QS_ASSERT(format.bits >= 3 && format.bits <= 8, "mxint bits ", format.bits);
      return std::make_unique<MXIntScheme>(format);
    case FormatFamily::MXFP4: return std::make_unique<MXFP4Scheme>(format);
    case FormatFamily::NVFP4: return std::make_unique<NVFP4Scheme>(format);
    case FormatFamily::GgmlBlock:
      QS_ASSERT(format.bits == 4 || format.bits == 5 || format.bits == 8, "ggml bits ", format.bits);
      return std::make_unique<GgmlBlockScheme>(format);
    case FormatFamily::GgmlK:
      QS_ASSERT(format.bits >= 2 && format.bits <= 6, "k-quant bits ", format.bits);
      return std::make_unique<GgmlKScheme>(format);
    case FormatFamily::GgmlIQ4NL:
    case FormatFamily::GgmlIQ4XS: return std::make_unique<GgmlIQ4Scheme>(format);
  }
  QS_ASSERT(false, "unhandled format family");
}

float Scheme::tensor_scale(const float* w, int64_t n) const {
  for (int64_t i = 0; i < n; ++i) check_finite(w[i]);
  return 1.0f;
}

std::vector<uint8_t> pack_codes(const std::vector<uint8_t>& codes, int bits) {
  QS_ASSERT(bits >= 1 && bits <= 8, "bits ", bits);
  std::vector<uint8_t> out((codes.size() * size_t(bits) + 7) / 8, 0);
  const uint32_t mask = (1u << bits) - 1;
  size_t bit = 0;
  for (uint8_t c : codes) {
    const uint32_t v = uint32_t(c) & mask;
    const size_t byte = bit >> 3, off = bit & 7;
    out[byte] |= uint8_t(v << off);
    if (off + size_t(bits) > 8) out[byte + 1] |= uint8_t(v >> (8 - off));
    bit += size_t(bits);
  }
  return out;
}

std::vector<uint8_t> unpack_codes(const std::vector<uint8_t>& packed, int bits, int64_t count) {
  QS_ASSERT(bits >= 1 && bits <= 8, "bits ", bits);
  QS_ASSERT(count >= 0 && packed.size() * 8 >= size_t(count) * size_t(bits),
            "packed stream too short: ", packed.size(), " bytes for ", count, " codes");
  std::vector<uint8_t> out(static_cast<size_t>(count));
  const uint32_t mask = (1u << bits) - 1;
  size_t bit = 0;
  for (auto& c : out) {
    const size_t byte = bit >> 3, off = bit & 7;
    uint32_t v = uint32_t(packed[byte]) >> off;
    if (off + size_t(bits) > 8) v |= uint32_t(packed[byte + 1]) << (8 - off);
    c = uint8_t(v & mask);
    bit += size_t(bits);
  }
  return out;
}

uint8_t encode_e8m0(float power_of_two) {
  if (std::isnan(power_of_two)) return 0xFF;
  int ex = 0;
  const float f = std::frexp(power_of_two, &ex);
  QS_ASSERT(f == 0.5f, "E8M0 needs a positive power of two, got ", power_of_two);
  const int e = ex - 1;
  QS_ASSERT(e >= -127 && e <= 127, "E8M0 exponent out of range: ", e);
  return uint8_t(e + 127);
}

float decode_e8m0(uint8_t code) {
  if (code == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, int(code) - 127);
}

uint8_t encode_e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (a >= 448.0f) return sign | 0x7E;  // saturate (no infinities in E4M3FN)
  if (a == 0.0f) return sign;
  const int E = floor_log2(a);
  if (E < -6) {
    // Subnormal: quantum 2^-9; q = 8 rolls into the smallest normal, code 0x08.
    const int q = int(std::nearbyint(std::ldexp(double(a), 9)));
    return uint8_t(sign | q);
  }
  int q = int(std::nearbyint(std::ldexp(double(a), 3 - E)));  // in [8, 16]
  int e = E;
  if (q == 16) {
    q = 8;
    ++e;
  }
  const int code = ((e + 7) << 3) | (q - 8);
  return uint8_t(sign | std::min(code, 0x7E));
}

}  // namespace qshard
