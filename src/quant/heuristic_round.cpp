#include "quant/heuristic_round.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace qshard {

std::vector<uint8_t> kneedle_outliers(const std::vector<float>& mean_abs, double tolerance) {
  const size_t d = mean_abs.size();
  std::vector<uint8_t> mask(d, 0);
  if (d == 0) return mask;
  std::vector<float> v(mean_abs);
  for (float& x : v) x = std::fabs(x);
  std::sort(v.begin(), v.end(), std::greater<float>());
  const size_t half = d / 2;
  float threshold;
  if (half < 3) {
    threshold = v[std::min(d - 1, size_t(0.05 * double(d)))];
  } else {
    const double hmax = v[0], hmin = v[half - 1];
    const double span = hmax - hmin;
    size_t k = 0;
    if (span > 0) {
      // Normalised y falls from 1 to 0 over x in [0, 1]; the chord is y = 1 − x.
      double best = -1;
      for (size_t i = 0; i < half; ++i) {
        const double y = (v[i] - hmin) / span;
        const double x = double(i) / double(half - 1);
        const double dist = std::fabs(y - (1.0 - x));
        if (dist > best) best = dist, k = i;  // first maximum
      }
    }
    if (k < half - 1) k = std::min(k + size_t(std::floor(tolerance * double(half))), half - 1);
    threshold = v[k];
  }
  for (size_t j = 0; j < d; ++j) mask[j] = std::fabs(mean_abs[j]) > threshold ? 1 : 0;
  return mask;
}

FlipStats heuristic_flip(QuantizedLinear& q, const Tensor& w, const std::vector<float>& mean,
                         const std::vector<uint8_t>& outlier, double max_flip_percent,
                         const ExportNumerics& numerics) {
  const int64_t out = q.out_features, in = q.in_features;
  QS_ASSERT(int64_t(mean.size()) == in && int64_t(outlier.size()) == in, "heuristic_flip sizes");
  const int64_t G = q.format.group_width(in), ng = q.n_groups();
  const int64_t cap = int64_t(std::floor(max_flip_percent / 100.0 * double(in) + 1e-9));
  const auto scheme = Scheme::make(q.format);
  const float* p = w.data<float>();
  FlipStats st;
  if (cap <= 0) return st;
  int64_t total = 0, worst = 0;
#pragma omp parallel reduction(+ : total) reduction(max : worst)
  {
    std::vector<GroupGrid> grids(static_cast<size_t>(ng));
    std::vector<double> impact(static_cast<size_t>(in)), cost(static_cast<size_t>(in));
    std::vector<int> target(static_cast<size_t>(in));
    std::vector<int64_t> order(static_cast<size_t>(in));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t g = 0; g < ng; ++g)
        grids[size_t(g)].build(*scheme, group_params(q, r, g), q.tensor_scale, numerics.weight_dtype);
      // Error of the row on the mean input, and each column's flip.
      double e = 0;
      for (int64_t j = 0; j < in; ++j) {
        const GroupGrid& gr = grids[size_t(j / G)];
        const int k = gr.rank_of[q.codes[size_t(r * in + j)]];
        target[size_t(j)] = -1;
        impact[size_t(j)] = 0;
        cost[size_t(j)] = -1;
        if (k < 0) continue;
        const double x = p[r * in + j], cur = gr.vals[size_t(k)];
        e += (x - cur) * mean[size_t(j)];
        const int nb = x >= cur ? k + 1 : k - 1;  // toward the other side of x (0 → +1)
        if (nb < 0 || nb >= int(gr.vals.size()) || outlier[size_t(j)]) continue;
        const double step = gr.vals[size_t(nb)] - cur;
        target[size_t(j)] = nb;
        impact[size_t(j)] = mean[size_t(j)] * step;  // e decreases by this when flipped
        cost[size_t(j)] = std::fabs(x - cur) / std::fabs(step);  // near 0.5: cheapest flip
      }
      for (int64_t j = 0; j < in; ++j)
        if (target[size_t(j)] >= 0 && !(impact[size_t(j)] != 0 && (impact[size_t(j)] > 0) == (e > 0)))
          target[size_t(j)] = -1, cost[size_t(j)] = -1, impact[size_t(j)] = 0;
      std::iota(order.begin(), order.end(), int64_t(0));
      // Stable: ties keep column order (the reference's torch.argsort is not stable).
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return cost[size_t(a)] > cost[size_t(b)]; });
      double s = 0, best = std::fabs(e);
      int64_t kbest = 0;
      for (int64_t i = 0; i < in; ++i) {
        s += impact[size_t(order[size_t(i)])];
        if (std::fabs(e - s) < best) best = std::fabs(e - s), kbest = i + 1;
      }
      int64_t done = 0;
      for (int64_t i = 0; i < kbest && done < cap; ++i) {
        const int64_t j = order[size_t(i)];
        if (target[size_t(j)] < 0) continue;
        q.codes[size_t(r * in + j)] = grids[size_t(j / G)].code_at[size_t(target[size_t(j)])];
        ++done;
      }
      total += done;
      worst = std::max(worst, done);
    }
  }
  st.flips = total;
  st.max_row_flips = worst;
  return st;
}

}  // namespace qshard
