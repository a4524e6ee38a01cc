#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace qshard {

Routing route_tokens(const Tensor& logits, int64_t top_k, bool renormalize) {
  QS_ASSERT(logits.ndim() == 2 && logits.dtype() == DType::F32, "route_tokens: logits ", shape_str(logits.shape()));
  const int64_t T = logits.dim(0), E = logits.dim(1);
  QS_ASSERT(0 < top_k && top_k <= E, "route_tokens: top ", top_k, " of ", E);
  Routing r;
  r.rows.resize(size_t(E));
  r.weights.resize(size_t(E));
  std::vector<float> p(static_cast<size_t>(E));
  std::vector<int64_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.data<float>() + t * E;
    const float mx = *std::max_element(l, l + E);
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += p[size_t(e)] = std::exp(l[e] - mx);
    for (float& v : p) v /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[size_t(a)] > p[size_t(b)]; });
    float top = 0;
    for (int64_t i = 0; i < top_k; ++i) top += p[size_t(order[size_t(i)])];
    for (int64_t i = 0; i < top_k; ++i) {
      const int64_t e = order[size_t(i)];
      r.rows[size_t(e)].push_back(t);
      r.weights[size_t(e)].push_back(renormalize ? p[size_t(e)] / top : p[size_t(e)]);
    }
  }
  return r;
}

Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& rows) {
  const int64_t d = x.dim(1);
  Tensor out = Tensor::zeros(DType::F32, {int64_t(rows.size()), d});
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(out.data<float>() + int64_t(i) * d, x.data<float>() + rows[i] * d, size_t(d) * sizeof(float));
  return out;
}

Tensor scatter_rows(const Tensor& y, const std::vector<int64_t>& rows, int64_t T) {
  const int64_t d = y.dim(1);
  Tensor out = Tensor::zeros(DType::F32, {T, d});
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(out.data<float>() + rows[i] * d, y.data<float>() + int64_t(i) * d, size_t(d) * sizeof(float));
  return out;
}

}  // namespace qshard
