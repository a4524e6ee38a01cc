// Row-wise and elementwise ops. Each loop is written to vectorize at plain -O3; rows
// are spread over OpenMP threads once a call is big enough to pay for the fork.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace qshard::cpu {

namespace {

// Below this many elements an op runs on one thread: an omp fork/join costs a few µs,
// about what one core needs to stream 32K floats.
constexpr int64_t kParallelMin = int64_t(1) << 15;

void rope_head(float* __restrict x, const float* __restrict cos,
               const float* __restrict sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

}  // namespace

QS_MULTIVERSION
void rmsnorm(const float* x, const float* weight, float eps, float* y, int64_t rows,
             int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    // Sum of squares in double: with D in the thousands an fp32 running sum would
    // drift from PyTorch's (pairwise) fp32 mean by more than the normalization's own
    // rounding.
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * double(xr[i]);
    // The rest in fp32 and in transformers' order: (x * rsqrt(mean + eps)) * weight.
    const float mean = float(ss / double(dim));
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] * inv) * weight[i];
  }
}

void rope(float* x, int64_t tokens, int64_t n_heads, int64_t head_dim, const float* cos,
          const float* sin, const int32_t* positions) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (tokens * n_heads * head_dim >= kParallelMin)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + int64_t(positions[t]) * half;
    const float* s = sin + int64_t(positions[t]) * half;
    float* xt = x + t * n_heads * head_dim;
    for (int64_t h = 0; h < n_heads; ++h) rope_head(xt + h * head_dim, c, s, half);
  }
}

QS_MULTIVERSION
void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_approx(-g)) * up[i];
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

QS_MULTIVERSION
void log_softmax(const float* x, float* y, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, xr[j]);
    // Terms are in (0, 1] after the max shift, so a double sum of them is exact
    // enough that log(sum) carries no error of its own.
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < cols; ++j) sum += double(exp_approx(xr[j] - mx));
    const float log_sum = float(std::log(sum));
    for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - mx) - log_sum;
  }
}

}  // namespace qshard::cpu
