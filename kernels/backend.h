// The Backend interface: every op the decoder forward (and, later, the quantizers)
// needs, written once against this and implemented by the CPU reference backend and
// the CUDA backend. Activations are fp32 row-major [tokens, features]; a Tensor
// passed here lives in the backend's memory unless a comment says "host".
#pragma once

#include <memory>
#include <string>

#include "core/tensor.h"
#include "kernels/act_format.h"

namespace qshard {

// Geometry of one attention call. Tokens are `batch` independent windows of `seqlen`
// tokens each, laid out window after window; attention never crosses windows.
struct AttentionShape {
  int64_t batch = 1;
  int64_t seqlen = 0;
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // key/value heads; n_heads % n_kv_heads == 0 (GQA)
  int64_t head_dim = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Zero-filled backend memory.
  virtual Tensor zeros(DType dtype, Shape shape) = 0;
  // Copies a host tensor into backend memory; float dtypes become F32, I32 stays I32.
  virtual Tensor upload(const Tensor& host) = 0;
  // Copies backend memory to a host tensor of the same dtype.
  virtual Tensor download(const Tensor& t) = 0;

  // y[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]), the layout of a Hugging Face Linear.
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  // y[M,D] = x / sqrt(mean(x²) + eps) * weight[D]   (x may alias y)
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) = 0;
  // Rotate-half RoPE in place on x[T, n_heads*head_dim], as transformers applies it:
  // x' = x*cos + rotate_half(x)*sin, with cos/sin[P, head_dim/2] (the half table;
  // both halves of a head use the same angle) and positions[T] (I32) indexing rows.
  virtual void rope(Tensor& x, int64_t n_heads, int64_t head_dim, const Tensor& cos,
                    const Tensor& sin, const Tensor& positions) = 0;
  // Causal softmax(q kᵀ * scale) v per window and head; query head h reads kv head
  // h / (n_heads / n_kv_heads). q,out[B*S, Hq*D], k,v[B*S, Hkv*D].
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionShape& shape, float scale, Tensor& out) = 0;
  // out = silu(gate) * up, elementwise (out may alias gate or up).
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x += y, elementwise (the residual stream).
  virtual void add_inplace(Tensor& x, const Tensor& y) = 0;
  // out[T, D] = table[tokens[t], :] in fp32. table: host, any float dtype, [V, D]
  // (an mmap'd checkpoint tensor); tokens: host I32 [T]. Throws on ids outside [0, V).
  virtual void embedding(const Tensor& table, const Tensor& tokens, Tensor& out) = 0;
  // y[M,N] = log_softmax(x[M,N]) over each row (y may alias x).
  virtual void log_softmax(const Tensor& x, Tensor& y) = 0;
  // y[M,K] = dequantize(quantize(x[M,K])) in activation format f (act_format.h): the
  // input of a W8A8-style Linear as the engine's GEMM sees it. Rows are tokens, K the
  // Linear's input features (y may alias x). Not pure: a backend without it refuses
  // --act-format with a clear error instead of failing to build.
  virtual void fake_quant_activations(const Tensor& x, ActFormat f, Tensor& y);
};

std::unique_ptr<Backend> make_cpu_backend();

// The backend a --device option names: "cpu", "cuda" or "cuda:N". InputError with one
// line when this build has no CUDA or no GPU is usable.
std::unique_ptr<Backend> make_backend(const std::string& device);

}  // namespace qshard
