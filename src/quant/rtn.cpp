#include "quant/rtn.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "quant/kquant.h"

namespace qshard {

GroupParams fit_group(const Scheme& scheme, const float* x, int64_t n, int64_t stride,
                      float tensor_scale, const ClipSearch& clip) {
  GroupParams best = scheme.fit(x, n, stride, 1.0f, tensor_scale);
  if (!clip.enabled) return best;
  auto error_of = [&](const GroupParams& p) {
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i * stride];
      const float r = scheme.dequantize(scheme.quantize(v, p, tensor_scale), p, tensor_scale);
      err += std::pow(std::fabs(double(r) - double(v)), double(clip.norm));
    }
    return err;
  };
  double best_err = error_of(best);
  // quant.py: p = 1 − i/grid for i in 0 .. floor(maxshrink·grid) − 1; p = 1 is done above.
  const int steps = int(std::floor(double(clip.max_shrink) * clip.grid + 1e-6));
  for (int i = 1; i < steps; ++i) {
    const float shrink = float(1.0 - double(i) / clip.grid);
    const GroupParams p = scheme.fit(x, n, stride, shrink, tensor_scale);
    const double err = error_of(p);
    if (err < best_err) {  // strict: ties keep the wider (earlier) range
      best_err = err;
      best = p;
    }
  }
  return best;
}

QuantizedLinear rtn_quantize(const Tensor& weight_in, const Scheme& scheme,
                             const ClipSearch& clip, const std::string& name) {
  if (weight_in.ndim() != 2)
    fail_input("tensor ", name, ": expected a 2-D weight [out, in], got ",
               shape_str(weight_in.shape()));
  QS_ASSERT(weight_in.device() == Device::Host, "rtn_quantize needs a host tensor");
  // K-quants fit whole 256-element super-blocks (llama.cpp's reference), not groups.
  // IQ4_NL/XS likewise: quantize_iq4_nl's scale search (iq4.h).
  if (scheme.format().uses_kquant_fit())
    return kquant_rtn(weight_in, scheme.format(), name);
  const Tensor weight = weight_in.dtype() == DType::F32 ? weight_in : weight_in.to_f32();
  const QuantFormat& fmt = scheme.format();
  const int64_t out = weight.dim(0), in = weight.dim(1);
  fmt.check_divides(in, name);
  const float* w = weight.data<float>();
  const int64_t n = out * in;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(w[i]))
      fail_input("tensor ", name, ": weight contains NaN/Inf (at row ", i / in, ", column ",
                 i % in, ")");

  QuantizedLinear q;
  q.format = fmt;
  q.out_features = out;
  q.in_features = in;
  const int64_t gw = fmt.group_width(in), ng = fmt.n_groups(in);
  q.tensor_scale = scheme.tensor_scale(w, n);
  q.codes.resize(size_t(n));
  q.scales.resize(size_t(out * ng));
  // Int rows store a zero point for every group, symmetric ones included (2^(bits-1),
  // GPTQ's convention); MX/NV rows have none.
  if (fmt.stores_zeros()) q.zeros.resize(size_t(out * ng));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / gw);

  const float ts = q.tensor_scale;
  // Inputs were checked above, so nothing below throws inside the parallel region.
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t g = 0; g < ng; ++g) {
      const float* x = w + o * in + g * gw;
      const GroupParams p = fit_group(scheme, x, gw, 1, ts, clip);
      q.scales[size_t(o * ng + g)] = p.scale;
      if (!q.zeros.empty()) q.zeros[size_t(o * ng + g)] = p.zero;
      for (int64_t j = 0; j < gw; ++j)
        q.codes[size_t(o * in + g * gw + j)] = scheme.quantize(x[j], p, ts);
    }
  }
  return q;
}

}  // namespace qshard
