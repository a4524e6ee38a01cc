#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace qshard {

std::vector<float> rope_inv_freq(const ModelSpec& spec) {
  const int64_t half = spec.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = float(2 * i) / float(spec.head_dim);
    inv[i] = float(1.0 / std::pow(double(float(spec.rope_theta)), double(exponent)));
  }
  const RopeScaling& rs = spec.rope_scaling;
  if (rs.type == RopeScaling::Type::Linear) {
    for (auto& f : inv) f = float(double(f) / rs.factor);
  } else if (rs.type == RopeScaling::Type::Llama3) {
    // transformers' _compute_llama3_parameters: long wavelengths are slowed by
    // `factor`, short ones kept, and the band between interpolated smoothly.
    const double old_len = double(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / double(f);
      double scaled = wavelen > low_wavelen ? double(f) / rs.factor : double(f);
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
        const double smooth = (old_len / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        scaled = (1.0 - smooth) * scaled / rs.factor + smooth * scaled;
      }
      f = float(scaled);
    }
  }
  return inv;
}

RopeTables make_rope_tables(const ModelSpec& spec, int64_t positions) {
  const int64_t half = spec.head_dim / 2;
  const std::vector<float> inv = rope_inv_freq(spec);
  RopeTables t{Tensor::zeros(DType::F32, {positions, half}), Tensor::zeros(DType::F32, {positions, half})};
  float* c = t.cos.data<float>();
  float* s = t.sin.data<float>();
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv[i];  // fp32 product, as torch's matmul of fp32 tables
      c[p * half + i] = float(std::cos(double(angle)));
      s[p * half + i] = float(std::sin(double(angle)));
    }
  return t;
}

}  // namespace qshard
