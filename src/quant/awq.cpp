#include "quant/awq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace qshard {

float round_to_dtype(float x, DType dtype) {
  switch (dtype) {
    case DType::F32: return x;
    case DType::F16: return f16_to_f32(f32_to_f16(x));
    case DType::BF16: return bf16_to_f32(f32_to_bf16(x));
    default: QS_ASSERT(false, "round_to_dtype ", dtype_name(dtype));
  }
  return x;
}

std::vector<float> awq_scales(const std::vector<double>& x_mean, double alpha) {
  const size_t d = x_mean.size();
  std::vector<double> s(d);
  double mx = 0, mn = std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < d; ++j) {
    // AutoAWQ computes in the model dtype; fp32 here (llm-awq: x_max.pow(ratio)).
    s[j] = std::max(double(float(std::pow(x_mean[j], alpha))), 1e-4);
    mx = std::max(mx, s[j]);
    mn = std::min(mn, s[j]);
  }
  const double norm = std::sqrt(mx * mn);
  std::vector<float> out(d);
  for (size_t j = 0; j < d; ++j) {
    const float v = float(s[j] / norm);
    out[j] = std::isfinite(v) ? v : 1.0f;
  }
  return out;
}

std::vector<float> smoothquant_scales(const std::vector<double>& act_max,
                                      const std::vector<float>& weight_max, double alpha) {
  QS_ASSERT(act_max.size() == weight_max.size(), "smoothquant_scales sizes");
  std::vector<float> s(act_max.size());
  for (size_t j = 0; j < s.size(); ++j) {
    const double m = std::max(double(weight_max[j]), 1e-5);
    const double v = std::pow(act_max[j], alpha) / std::pow(m, 1.0 - alpha);
    s[j] = std::isfinite(v) ? float(std::max(v, 1e-5)) : 1.0f;
  }
  return s;
}

std::vector<float> fold_into_norm(std::vector<float>& gamma, const std::vector<float>& s,
                                  DType dtype) {
  QS_ASSERT(gamma.size() == s.size(), "fold_into_norm sizes");
  std::vector<float> eff(s.size());
  for (size_t j = 0; j < s.size(); ++j) {
    const float g = round_to_dtype(gamma[j] / s[j], dtype);
    // γ/γ' reproduces γ·x exactly as γ'·(s_eff·x); a zero γ' loses nothing either way.
    eff[j] = g != 0.0f ? gamma[j] / g : s[j];
    if (!std::isfinite(eff[j]) || eff[j] <= 0.0f) eff[j] = s[j];
    gamma[j] = g;
  }
  return eff;
}

void scale_columns(Tensor& w, const std::vector<float>& s) {
  const int64_t out = w.dim(0), in = w.dim(1);
  QS_ASSERT(int64_t(s.size()) == in, "scale_columns: ", s.size(), " scales for ", in, " columns");
  float* p = w.data<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < in; ++j) p[r * in + j] *= s[size_t(j)];
}

void unscale_columns(Tensor& w, const std::vector<float>& s) {
  const int64_t out = w.dim(0), in = w.dim(1);
  QS_ASSERT(int64_t(s.size()) == in, "unscale_columns sizes");
  float* p = w.data<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < in; ++j) p[r * in + j] /= s[size_t(j)];
}

void unscale_last_rows(Tensor& w, const std::vector<float>& s) {
  const int64_t out = w.dim(0), in = w.dim(1), n = int64_t(s.size());
  QS_ASSERT(n <= out, "unscale_last_rows: ", n, " scales for ", out, " rows");
  float* p = w.data<float>();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < in; ++j) p[(out - n + r) * in + j] /= s[size_t(r)];
}

Tensor scale_hessian(const Tensor& h, const std::vector<float>& s) {
  const int64_t d = h.dim(0);
  QS_ASSERT(int64_t(s.size()) == d, "scale_hessian sizes");
  Tensor out = Tensor::zeros(DType::F32, {d, d});
  const float* a = h.data<float>();
  float* b = out.data<float>();
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) b[i * d + j] = float(double(a[i * d + j]) / (double(s[size_t(i)]) * s[size_t(j)]));
  return out;
}

std::vector<float> column_absmax(const Tensor& w) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<float> m(size_t(in), 0.0f);
  const float* p = w.data<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < in; ++j) m[size_t(j)] = std::max(m[size_t(j)], std::fabs(p[r * in + j]));
  return m;
}

GroupParams fit_ranged(const Scheme& scheme, const float* x, int64_t n, float lo, float hi,
                       float tensor_scale, const ExportNumerics& numerics, float* tmp) {
  for (int64_t i = 0; i < n; ++i) tmp[i] = std::clamp(x[i], lo, hi);
  GroupParams p = scheme.fit(tmp, n, 1, 1.0f, tensor_scale);
  if (scheme.format().family == FormatFamily::Int) {
    const float r = round_to_dtype(p.scale, numerics.scale_dtype);
    if (r > 0.0f && std::isfinite(r)) p.scale = r;
  }
  return p;
}

GroupParams group_residual(const Scheme& scheme, const float* x, int64_t n, float lo, float hi,
                           float ts, const ExportNumerics& numerics, float* tmp, float* delta) {
  const GroupParams gp = fit_ranged(scheme, x, n, lo, hi, ts, numerics, tmp);
  for (int64_t j = 0; j < n; ++j) {
    const float v = scheme.dequantize(scheme.quantize(tmp[j], gp, ts), gp, ts);
    delta[j] = x[j] - round_to_dtype(v, numerics.weight_dtype);
  }
  return gp;
}

void GroupGrid::build(const Scheme& scheme, const GroupParams& p, float ts, DType weight_dtype) {
  const int n_codes = 1 << std::min(8, scheme.format().bits);
  std::vector<std::pair<float, int>> table;
  table.reserve(size_t(n_codes));
  for (int c = 0; c < n_codes; ++c) {
    const float v = scheme.dequantize(uint8_t(c), p, ts);
    if (!std::isfinite(v) || scheme.quantize(v, p, ts) != uint8_t(c)) continue;
    table.emplace_back(round_to_dtype(v, weight_dtype), c);
  }
  std::sort(table.begin(), table.end());
  vals.clear();
  code_at.clear();
  rank_of.assign(size_t(n_codes), -1);
  for (const auto& [v, c] : table) {
    if (vals.empty() || v != vals.back()) {
      vals.push_back(v);
      code_at.push_back(uint8_t(c));
    }
    rank_of[size_t(c)] = int(vals.size()) - 1;
  }
}

GroupParams group_params(const QuantizedLinear& q, int64_t row, int64_t group) {
  const int64_t ng = q.n_groups();
  GroupParams p;
  p.scale = q.scales[size_t(row * ng + group)];
  if (!q.zeros.empty())
    p.zero = q.zeros[size_t(row * ng + group)];
  else if (q.format.family == FormatFamily::Int)
    p.zero = float(1 << (q.format.bits - 1));
  return p;
}

namespace {

void observed_range(const float* x, int64_t n, float& lo, float& hi) {
  lo = std::numeric_limits<float>::infinity();
  hi = -lo;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
}

}  // namespace

QuantizedLinear quantize_ranged(const Tensor& w_in, const Scheme& scheme, const GroupRanges* ranges,
                                const ExportNumerics& numerics, const std::string& name) {
  if (w_in.ndim() != 2) fail_input("tensor ", name, ": expected a 2-D weight, got ", shape_str(w_in.shape()));
  const Tensor w = w_in.dtype() == DType::F32 ? w_in : w_in.to_f32();
  const QuantFormat& fmt = scheme.format();
  const int64_t out = w.dim(0), in = w.dim(1);
  fmt.check_divides(in, name);
  const int64_t G = fmt.group_width(in), ng = fmt.n_groups(in);
  const float* p = w.data<float>();
  for (int64_t i = 0; i < out * in; ++i)
    if (!std::isfinite(p[i])) fail_input("tensor ", name, ": weight contains NaN/Inf after scaling");
  if (ranges && !ranges->empty())
    QS_ASSERT(int64_t(ranges->lo.size()) == out * ng && int64_t(ranges->hi.size()) == out * ng,
              "ranges of ", name);
  QuantizedLinear q;
  q.format = fmt;
  q.out_features = out;
  q.in_features = in;
  q.tensor_scale = scheme.tensor_scale(p, out * in);
  q.codes.resize(size_t(out * in));
  q.scales.resize(size_t(out * ng));
  if (fmt.stores_zeros()) q.zeros.resize(size_t(out * ng));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / G);
  const float ts = q.tensor_scale;
#pragma omp parallel
  {
    std::vector<float> tmp(static_cast<size_t>(G));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < out; ++r)
      for (int64_t g = 0; g < ng; ++g) {
        const float* x = p + r * in + g * G;
        float lo, hi;
        if (ranges && !ranges->empty()) {
          lo = ranges->lo[size_t(r * ng + g)];
          hi = ranges->hi[size_t(r * ng + g)];
        } else {
          observed_range(x, G, lo, hi);
        }
        const GroupParams gp = fit_ranged(scheme, x, G, lo, hi, ts, numerics, tmp.data());
        q.scales[size_t(r * ng + g)] = gp.scale;
        if (!q.zeros.empty()) q.zeros[size_t(r * ng + g)] = gp.zero;
        for (int64_t j = 0; j < G; ++j)
          q.codes[size_t(r * in + g * G + j)] = scheme.quantize(tmp[size_t(j)], gp, ts);
      }
  }
  return q;
}

Tensor dequantize_exported(const QuantizedLinear& q, const ExportNumerics& numerics) {
  Tensor t = q.dequantize();
  if (numerics.weight_dtype != DType::F32) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = round_to_dtype(p[i], numerics.weight_dtype);
  }
  return t;
}

Tensor awq_fake_quant(const Tensor& w, const std::vector<float>& s, const Scheme& scheme,
                      const GroupRanges* ranges, const ExportNumerics& numerics, const std::string& name) {
  Tensor ws = w.to_f32();
  scale_columns(ws, s);
  const QuantizedLinear q = quantize_ranged(ws, scheme, ranges && !ranges->empty() ? ranges : nullptr, numerics, name);
  Tensor wh = dequantize_exported(q, numerics);
  unscale_columns(wh, s);
  return wh;
}

int awq_best_grid_point(const std::vector<double>& loss) {
  int best = 0;
  for (int i = 1; i < int(loss.size()); ++i)
    if (loss[size_t(i)] < loss[size_t(best)]) best = i;
  return best;
}

double output_error(const Tensor& w, const Tensor& w_hat, const Tensor& h) {
  const int64_t out = w.dim(0), in = w.dim(1);
  QS_ASSERT(w_hat.shape() == w.shape() && h.dim(0) == in, "output_error shapes");
  std::vector<float> delta(size_t(out * in)), prod(size_t(out * in));
  for (int64_t i = 0; i < out * in; ++i) delta[size_t(i)] = w.data<float>()[i] - w_hat.data<float>()[i];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), int(in), 1.0f, delta.data(),
              int(in), h.data<float>(), int(in), 0.0f, prod.data(), int(in));
  double s = 0;
  for (int64_t i = 0; i < out * in; ++i) s += double(prod[size_t(i)]) * delta[size_t(i)];
  return s;
}

GroupRanges awq_clip_search(const Tensor& w, const Tensor& h, const Scheme& scheme,
                            const ExportNumerics& numerics, int n_grid, float max_shrink) {
  const int64_t out = w.dim(0), in = w.dim(1);
  const QuantFormat& fmt = scheme.format();
  const int64_t G = fmt.group_width(in), ng = fmt.n_groups(in);
  const float* p = w.data<float>();
  const float* hp = h.data<float>();
  const float ts = scheme.tensor_scale(p, out * in);
  GroupRanges best;
  best.lo.resize(size_t(out * ng));
  best.hi.resize(size_t(out * ng));
  std::vector<double> best_err(size_t(out * ng), std::numeric_limits<double>::infinity());
  // llm-awq: c = 1 − i/n_grid for i in range(int(max_shrink · n_grid)): 1.00 … 0.55.
  const int steps = std::max(1, int(double(max_shrink) * n_grid + 1e-6));
  std::vector<float> hgg(size_t(G * G)), delta(size_t(out * G)), prod(size_t(out * G));
  for (int64_t g = 0; g < ng; ++g) {
    for (int64_t a = 0; a < G; ++a)
      for (int64_t b = 0; b < G; ++b) hgg[size_t(a * G + b)] = hp[(g * G + a) * in + g * G + b];
    for (int i = 0; i < steps; ++i) {
      const float c = float(1.0 - double(i) / n_grid);
#pragma omp parallel
      {
        std::vector<float> tmp(static_cast<size_t>(G));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < out; ++r) {
          const float* x = p + r * in + g * G;
          float amax = 0.0f;
          for (int64_t j = 0; j < G; ++j) amax = std::max(amax, std::fabs(x[j]));
          const float m = amax * c;
          group_residual(scheme, x, G, -m, m, ts, numerics, tmp.data(), delta.data() + r * G);
        }
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(G), int(G), 1.0f, delta.data(),
                  int(G), hgg.data(), int(G), 0.0f, prod.data(), int(G));
      for (int64_t r = 0; r < out; ++r) {
        double e = 0;
        for (int64_t j = 0; j < G; ++j) e += double(prod[size_t(r * G + j)]) * delta[size_t(r * G + j)];
        const size_t k = size_t(r * ng + g);
        if (e < best_err[k]) {  // strict: ties keep the wider range
          best_err[k] = e;
          float amax = 0.0f;
          for (int64_t j = 0; j < G; ++j) amax = std::max(amax, std::fabs(p[r * in + g * G + j]));
          best.lo[k] = -amax * c;
          best.hi[k] = amax * c;
        }
      }
    }
  }
  return best;
}

}  // namespace qshard
