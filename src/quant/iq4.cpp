// Port of ggml-quants.c's quantize_row_iq4_nl_impl (IQ4_NL and IQ4_XS). Expressions keep
// llama.cpp's operand order: the bytes must equal llama-quantize's.
#include "quant/iq4.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace qshard {

const int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

int iq4_best_index(float x) {
  const int8_t* val = kIq4Values;
  if (x <= val[0]) return 0;
  if (x >= val[15]) return 15;
  int ml = 0, mu = 15;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < val[mav]) mu = mav;
    else ml = mav;
  }
  return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

namespace {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS
constexpr int kNtry = 7;                // what quantize_iq4_nl / quantize_iq4_xs pass

inline float fp16_round(float x) { return f16_to_f32(f32_to_f16(x)); }

// σ² of the impl: twice the mean square of the n values at x[0], x[stride], ...
float iq4_sigma2(const float* x, int64_t stride, int n) {
  float sigma2 = 0;
  for (int j = 0; j < n; ++j) sigma2 += x[j * stride] * x[j * stride];
  return sigma2 * (2.f / float(n));
}

// One 32-block's scale search (the impl's per-block loop); 0 for a block below
// GROUP_MAX_EPS. xb: 32 contiguous values, weight: their error weights.
float block_scale(const float* xb, const float* weight) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) amax = ax, max = xb[j];
  }
  if (amax < kGroupMaxEps) return 0.0f;
  float d = -max / float(kIq4Values[0]);
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float q = kIq4Values[iq4_best_index(id * xb[j])];
    const float w = weight[j];
    sumqx += w * q * xb[j];
    sumq2 += w * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int itry = -kNtry; itry <= kNtry; ++itry) {
    id = float(itry + kIq4Values[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = kIq4Values[iq4_best_index(id * xb[j])];
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
  }
  return d;
}

void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

// One IQ4_NL block: codes, scale = FP16 d.
void nl_block(const float* x, const float* qw, uint8_t* codes, float* scale) {
  float weight[32];
  block_weights(x, qw, iq4_sigma2(x, 1, 32), weight);
  const float d = block_scale(x, weight);
  *scale = fp16_round(d);
  const float id = d ? 1 / d : 0;
  for (int j = 0; j < 32; ++j) codes[j] = uint8_t(iq4_best_index(id * x[j]));
}

// One IQ4_XS super-block: codes, the 8 sub-block scales d·l, super_scale = FP16 d.
void xs_block(const float* x, const float* qw, uint8_t* codes, float* scales, float* super_scale) {
  const float sigma2 = iq4_sigma2(x, 1, 256);
  float sub[8], weight[32];
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < 8; ++ib) {
    block_weights(x + 32 * ib, qw ? qw + 32 * ib : nullptr, sigma2, weight);
    sub[ib] = block_scale(x + 32 * ib, weight);
    const float abs_d = std::fabs(sub[ib]);
    if (abs_d > amax_scale) amax_scale = abs_d, max_scale = sub[ib];
  }
  const float d = -max_scale / 32;  // -0.0 for an all-zero super-block, as llama.cpp stores it
  const float dh = fp16_round(d);
  super_scale[0] = dh, super_scale[1] = 0.0f;
  const float id = d ? 1 / d : 0.f;
  for (int ib = 0; ib < 8; ++ib) {
    const int l = std::max(-32, std::min(31, int(std::nearbyint(id * sub[ib]))));
    const float dl = d * float(l);
    const float idl = dl ? 1 / dl : 0.f;
    for (int j = 0; j < 32; ++j) codes[32 * ib + j] = uint8_t(iq4_best_index(idl * x[32 * ib + j]));
    scales[ib] = dh * float(l);
  }
}

}  // namespace

GroupParams iq4nl_fit_one(const float* x, int64_t stride, const float* qw) {
  float xb[32], weight[32];
  for (int j = 0; j < 32; ++j) {
    xb[j] = x[j * stride];
    if (!std::isfinite(xb[j])) fail_input("weight contains NaN/Inf");
  }
  block_weights(xb, qw, iq4_sigma2(xb, 1, 32), weight);
  const float d = block_scale(xb, weight);
  GroupParams p;
  p.scale = fp16_round(d);
  p.inv = d ? 1 / d : 0.0f;
  return p;
}

QuantizedLinear iq4_rtn(const Tensor& weight_in, const QuantFormat& fmt, const std::string& name,
                        const std::vector<float>& importance) {
  QS_ASSERT(fmt.is_iq4(), "iq4_rtn of ", fmt.name());
  if (weight_in.ndim() != 2)
    fail_input("tensor ", name, ": expected a 2-D weight [out, in], got ", shape_str(weight_in.shape()));
  const Tensor weight = weight_in.dtype() == DType::F32 ? weight_in : weight_in.to_f32();
  const int64_t out = weight.dim(0), in = weight.dim(1);
  fmt.check_divides(in, name);
  QS_ASSERT(importance.empty() || int64_t(importance.size()) == in, "importance of ", name, ": ",
            importance.size(), " values for ", in, " columns");
  const float* w = weight.data<float>();
  for (int64_t i = 0; i < out * in; ++i)
    if (!std::isfinite(w[i]))
      fail_input("tensor ", name, ": weight contains NaN/Inf (at row ", i / in, ", column ", i % in, ")");
  const bool xs = fmt.family == FormatFamily::GgmlIQ4XS;
  const int64_t ng = in / 32, nsb = in / 256;
  QuantizedLinear q;
  q.format = fmt;
  q.out_features = out;
  q.in_features = in;
  q.codes.resize(size_t(out * in));
  q.scales.resize(size_t(out * ng));
  if (xs) q.super_scales.resize(size_t(out * nsb * 2));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / 32);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r) {
    const float* row = w + r * in;
    if (xs) {
      for (int64_t b = 0; b < nsb; ++b)
        xs_block(row + b * 256, importance.empty() ? nullptr : importance.data() + b * 256,
                 q.codes.data() + r * in + b * 256, q.scales.data() + r * ng + b * 8,
                 q.super_scales.data() + (r * nsb + b) * 2);
    } else {
      for (int64_t b = 0; b < ng; ++b)
        nl_block(row + b * 32, importance.empty() ? nullptr : importance.data() + b * 32,
                 q.codes.data() + r * in + b * 32, q.scales.data() + r * ng + b);
    }
  }
  return q;
}

}  // namespace qshard
