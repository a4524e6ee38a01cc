// The CPU backend's kernels on raw fp32 pointers. cpu_backend.cpp validates Tensors and
// calls these; they trust their arguments. All buffers are dense row-major.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace qshard::cpu {

// y[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N] when non-null).
void linear(const float* x, const float* w, const float* bias, float* y, int64_t m,
            int64_t n, int64_t k);

// Causal GQA attention over shape.batch windows; see Backend::attention.
void attention(const float* q, const float* k, const float* v, const AttentionShape& shape,
               float scale, float* out);

// y[rows, dim] = x / sqrt(mean(x²) + eps) * weight; x may equal y.
void rmsnorm(const float* x, const float* weight, float eps, float* y, int64_t rows,
             int64_t dim);

// Rotate-half RoPE in place on x[tokens, n_heads*head_dim]; positions already checked
// to lie in the cos/sin tables ([*, head_dim/2]).
void rope(float* x, int64_t tokens, int64_t n_heads, int64_t head_dim, const float* cos,
          const float* sin, const int32_t* positions);

// out = silu(gate) * up over n elements; out may equal gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// x += y over n elements.
void add_inplace(float* x, const float* y, int64_t n);

// y[rows, cols] = log_softmax(x) per row; x may equal y.
void log_softmax(const float* x, float* y, int64_t rows, int64_t cols);

// y = dequantize(quantize(x)) per row in activation format f (act_quant.cpp); x may
// equal y.
void fake_quant_activations(const float* x, float* y, int64_t rows, int64_t cols, ActFormat f);

}  // namespace qshard::cpu
