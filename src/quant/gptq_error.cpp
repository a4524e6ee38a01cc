#include "quant/gptq_error.h"

#include <algorithm>

namespace qshard {

double gptq_output_error(const float* w, const float* w_hat, int64_t rows, int64_t in, const float* hdiag,
                         int64_t hdiag_step, double loss, double damp_abs) {
  double live = 0, dead = 0;  // ‖ΔW'‖² off and on the dead columns
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < in; ++j) {
      const bool is_dead = hdiag[j * hdiag_step] == 0.0f;
      const double d = double(is_dead ? 0.0f : w[r * in + j]) - double(w_hat[r * in + j]);
      (is_dead ? dead : live) += d * d;
    }
  // Rounding can take a tiny true error a hair below zero.
  return std::max(0.0, 2.0 * loss - damp_abs * (live + dead) - dead);
}

}  // namespace qshard
