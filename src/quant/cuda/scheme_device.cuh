// The scheme table's rows (quant/scheme.cpp) and fit_group (quant/rtn.cpp) as __device__
// functions, written to give the CPU reference's bits: the same operations in the same
// order, std::min/std::max's exact semantics (signed zeros included), RNE through rint,
// double where the CPU uses double. The including .cu is compiled with -fmad=false, so
// nvcc never fuses a multiply and an add that the CPU rounds separately.
// Differences that remain: CUDA's pow (clip search error, ≤ 2 ulp) is not glibc's, so a
// clip search can pick another shrink factor where two candidates' errors tie to the last
// bit; the tests count such flips against a budget instead of demanding identity.
#pragma once

#include <cstdint>

#include "quant/cuda/quant_kernels.h"

namespace qshard::cuda {

struct GP {
  float scale = 1.0f;
  float zero = 0.0f;
};

// std::min / std::max exactly: the first argument wins ties (so −0 and +0 keep order).
__device__ __forceinline__ float std_min(float a, float b) { return (b < a) ? b : a; }
__device__ __forceinline__ float std_max(float a, float b) { return (a < b) ? b : a; }

__device__ __forceinline__ void raise_flag(int* flags, int f) {
  if (flags) atomicOr(flags, f);
}

// floor(log2(a)) for finite a > 0, exact (frexp, subnormals included).
__device__ __forceinline__ int floor_log2_dev(float a) {
  int ex = 0;
  frexpf(a, &ex);
  return ex - 1;
}

__device__ __forceinline__ float group_amax_dev(const float* x, int64_t n, int64_t stride,
                                                int* flags) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!isfinite(v)) raise_flag(flags, kFlagNonFinite);
    amax = std_max(amax, fabsf(v));
  }
  return amax;
}

__device__ __forceinline__ float mx_scale_dev(float amax, float shrink, int emax_elem) {
  const float a = amax * shrink;
  int e = (a > 0.0f ? floor_log2_dev(a) : -126) - emax_elem;
  e = e < -127 ? -127 : (e > 127 ? 127 : e);
  return ldexpf(1.0f, e);
}

__device__ __forceinline__ uint8_t e2m1_encode_dev(double v) {
  const double a = fabs(v);
  uint8_t m;
  if (a <= 0.25) m = 0;
  else if (a < 0.75) m = 1;
  else if (a <= 1.25) m = 2;
  else if (a < 1.75) m = 3;
  else if (a <= 2.5) m = 4;
  else if (a < 3.5) m = 5;
  else if (a <= 5.0) m = 6;
  else m = 7;
  return uint8_t((signbit(v) ? 0x8 : 0x0) | m);
}

__device__ __forceinline__ float e2m1_decode_dev(uint8_t code) {
  const uint8_t i = code & 0x7;
  // {0, .5, 1, 1.5, 2, 3, 4, 6}
  const float m = i < 4 ? 0.5f * float(i) : (i == 7 ? 6.0f : float(i - 2));
  return (code & 0x8) ? -m : m;
}

__device__ __forceinline__ uint8_t encode_e4m3_dev(float x) {
  if (isnan(x)) return 0x7F;
  const uint8_t sign = signbit(x) ? 0x80 : 0x00;
  const float a = fabsf(x);
  if (a >= 448.0f) return sign | 0x7E;
  if (a == 0.0f) return sign;
  const int E = floor_log2_dev(a);
  if (E < -6) {
    const int q = int(rint(ldexp(double(a), 9)));
    return uint8_t(sign | q);
  }
  int q = int(rint(ldexp(double(a), 3 - E)));
  int e = E;
  if (q == 16) {
    q = 8;
    ++e;
  }
  const int code = ((e + 7) << 3) | (q - 8);
  return uint8_t(sign | (code < 0x7E ? code : 0x7E));
}

__device__ __forceinline__ float decode_e4m3_dev(uint8_t v) {
  const bool neg = v & 0x80u;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  float r;
  if (exp == 0xf && mant == 0x7) r = __int_as_float(0x7fc00000);
  else if (exp == 0) r = ldexpf(float(mant), -9);
  else r = ldexpf(1.0f + float(mant) / 8.0f, exp - 7);
  return neg ? -r : r;
}

// One row of the scheme table, chosen by format.family.
struct DevScheme {
  DevFormat f;
  int maxq, kmax, frac;
  uint32_t mask;

  __device__ explicit DevScheme(const DevFormat& fmt)
      : f(fmt),
        maxq((1 << fmt.bits) - 1),
        kmax((1 << (fmt.bits - 1)) - 1),
        frac(fmt.bits - 2),
        mask((1u << fmt.bits) - 1) {}

  __device__ GP fit(const float* x, int64_t n, int64_t stride, float shrink, float ts,
                    int* flags) const {
    GP p;
    switch (f.family) {
      case 0: {  // Int (GPTQ quant.py)
        float xmin = 0.0f, xmax = 0.0f;
        for (int64_t i = 0; i < n; ++i) {
          const float v = x[i * stride];
          if (!isfinite(v)) raise_flag(flags, kFlagNonFinite);
          xmin = std_min(xmin, v);
          xmax = std_max(xmax, v);
        }
        if (f.symmetric) {
          xmax = std_max(-xmin, xmax);
          if (xmin < 0) xmin = -xmax;
        }
        if (xmin == 0.0f && xmax == 0.0f) {
          xmin = -1.0f;
          xmax = 1.0f;
        }
        if (shrink != 1.0f) {
          xmin *= shrink;
          xmax *= shrink;
        }
        p.scale = (xmax - xmin) / float(maxq);
        if (!isfinite(p.scale)) p.scale = float((double(xmax) - double(xmin)) / maxq);
        if (!(p.scale > 0.0f)) p.scale = __int_as_float(1);  // denorm_min
        p.zero = f.symmetric ? float((maxq + 1) / 2) : rintf(-xmin / p.scale);
        return p;
      }
      case 1:  // MXInt
        p.scale = mx_scale_dev(group_amax_dev(x, n, stride, flags), shrink, 0);
        return p;
      case 2:  // MXFP4
        p.scale = mx_scale_dev(group_amax_dev(x, n, stride, flags), shrink, 2);
        return p;
      default: {  // NVFP4
        const double amax = double(group_amax_dev(x, n, stride, flags)) * shrink;
        uint8_t code = encode_e4m3_dev(float(amax / 6.0 / double(ts)));
        if (code == 0) code = 1;
        p.scale = decode_e4m3_dev(code);
        return p;
      }
    }
  }

  __device__ uint8_t quantize(float x, const GP& p, float ts, int* flags) const {
    if (!isfinite(x)) raise_flag(flags, kFlagNonFinite);
    switch (f.family) {
      case 0: {
        const float q = rintf(x / p.scale) + p.zero;
        const float hi = float(maxq);
        return uint8_t(q < 0.0f ? 0.0f : (hi < q ? hi : q));
      }
      case 1: {
        const double v = double(x) / double(p.scale) * double(1 << frac);
        double k = rint(v);
        k = k < double(-kmax) ? double(-kmax) : (double(kmax) < k ? double(kmax) : k);
        return uint8_t(uint32_t(int32_t(k)) & mask);
      }
      case 2: return e2m1_encode_dev(double(x) / double(p.scale));
      default: return e2m1_encode_dev(double(x) / (double(p.scale) * double(ts)));
    }
  }

  __device__ float dequantize(uint8_t code, const GP& p, float ts) const {
    switch (f.family) {
      case 0: return p.scale * (float(code) - p.zero);
      case 1: {
        int32_t k = int32_t(code & mask);
        if (k & (1 << (f.bits - 1))) k -= (1 << f.bits);
        return ldexpf(float(k), -frac) * p.scale;
      }
      case 2: return e2m1_decode_dev(code) * p.scale;
      default: return e2m1_decode_dev(code) * p.scale * ts;
    }
  }
};

// rtn.cpp fit_group: the plain fit, then (clip search) each shrink factor's pow-norm
// error, keeping the first minimum.
__device__ GP fit_group_dev(const DevScheme& s, const float* x, int64_t n, int64_t stride,
                            float ts, const DevClip& clip, int* flags) {
  GP best = s.fit(x, n, stride, 1.0f, ts, flags);
  if (!clip.enabled) return best;
  auto error_of = [&](const GP& p) {
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i * stride];
      const float r = s.dequantize(s.quantize(v, p, ts, flags), p, ts);
      err += pow(fabs(double(r) - double(v)), double(clip.norm));
    }
    return err;
  };
  double best_err = error_of(best);
  for (int i = 1; i < clip.steps; ++i) {
    const float shrink = float(1.0 - double(i) / clip.grid);
    const GP p = s.fit(x, n, stride, shrink, ts, flags);
    const double err = error_of(p);
    if (err < best_err) {
      best_err = err;
      best = p;
    }
  }
  return best;
}

}  // namespace qshard::cuda
