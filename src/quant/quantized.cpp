#include "quant/quantized.h"

#include "core/error.h"
#include "quant/scheme.h"

namespace qshard {

bool QuantizedLinear::has_act_order_g_idx() const {
  if (g_idx.empty() || in_features <= 0) return false;
  const int64_t gw = format.group_width(in_features);
  for (int64_t c = 0; c < in_features; ++c)
    if (g_idx[size_t(c)] != int32_t(c / gw)) return true;
  return false;
}

Tensor QuantizedLinear::dequantize() const {
  const int64_t ng = n_groups();
  const int64_t gw = format.group_width(in_features);
  QS_ASSERT(int64_t(codes.size()) == out_features * in_features, "codes ", codes.size());
  QS_ASSERT(int64_t(scales.size()) == out_features * ng, "scales ", scales.size());
  QS_ASSERT(zeros.empty() || int64_t(zeros.size()) == out_features * ng, "zeros ",
            zeros.size());
  QS_ASSERT(!format.has_zero_point() || !zeros.empty(), "asymmetric format without zeros");
  QS_ASSERT(g_idx.empty() || int64_t(g_idx.size()) == in_features, "g_idx ", g_idx.size());
  const auto scheme = Scheme::make(format);
  const bool zp = !zeros.empty();
  // Symmetric Int without stored zeros: GPTQ's fixed zero point 2^(bits-1).
  const float sym_zero = format.family == FormatFamily::Int ? float(1 << (format.bits - 1)) : 0.0f;
  Tensor out = Tensor::zeros(DType::F32, {out_features, in_features});
  float* w = out.data<float>();
  for (int64_t o = 0; o < out_features; ++o) {
    for (int64_t c = 0; c < in_features; ++c) {
      const int64_t g = g_idx.empty() ? c / gw : int64_t(g_idx[size_t(c)]);
      QS_ASSERT(g >= 0 && g < ng, "g_idx[", c, "] = ", g, " outside [0, ", ng, ")");
      GroupParams p;
      p.scale = scales[size_t(o * ng + g)];
      p.zero = zp ? zeros[size_t(o * ng + g)] : sym_zero;
      w[o * in_features + c] =
          scheme->dequantize(codes[size_t(o * in_features + c)], p, tensor_scale);
    }
  }
  return out;
}

}  // namespace qshard
