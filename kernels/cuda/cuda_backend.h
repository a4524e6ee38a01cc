// The CUDA backend: the Backend ops on one GPU (cuBLAS GEMMs, own kernels for the rest),
// matching the CPU reference op by op within the tolerances tests/kernels/
// test_cuda_backend.cpp names. Only built when CMake finds nvcc (QSHARD_HAVE_CUDA).
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_context.h"

namespace qshard {

// How `linear` multiplies F32 weights (BF16 weights always run bf16 × bf16 → fp32).
enum class CudaMath {
  Fp32,  // plain fp32 FMA (no tensor cores): closest to the CPU reference
  Tf32,  // TF32 tensor cores, fp32 accumulation
  Bf16,  // inputs rounded to bf16 on the tensor cores, fp32 accumulation (default)
};

struct CudaBackendOptions {
  int device = 0;
  CudaMath math = CudaMath::Bf16;
};

// "fp32" | "tf32" | "bf16"; InputError otherwise.
CudaMath parse_cuda_math(const std::string& name);
const char* cuda_math_name(CudaMath math);

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options);
  std::string name() const override { return "cuda"; }

  Tensor zeros(DType dtype, Shape shape) override;
  Tensor upload(const Tensor& host) override;
  Tensor download(const Tensor& t) override;
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override;
  void rope(Tensor& x, int64_t n_heads, int64_t head_dim, const Tensor& cos, const Tensor& sin,
            const Tensor& positions) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& shape,
                 float scale, Tensor& out) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void add_inplace(Tensor& x, const Tensor& y) override;
  void embedding(const Tensor& table, const Tensor& tokens, Tensor& out) override;
  void log_softmax(const Tensor& x, Tensor& y) override;

  // Beyond the interface: a float host tensor uploaded as BF16 (weights at half the
  // memory; `linear` then runs bf16 × bf16 with fp32 accumulation) or F32.
  Tensor upload_as(const Tensor& host, DType dtype);
  CudaMath math() const { return math_; }
  void set_math(CudaMath math) { math_ = math; }
  cuda::CudaContext& context() { return *ctx_; }
  const std::shared_ptr<cuda::CudaContext>& shared_context() const { return ctx_; }

 private:
  std::shared_ptr<cuda::CudaContext> ctx_;
  CudaMath math_;
};

// Options from the device string ("cuda", "cuda:1") and QSHARD_CUDA_MATH (fp32, tf32,
// bf16); InputError with one line when no GPU is usable.
std::unique_ptr<Backend> make_cuda_backend(const std::string& device);

// The CUDA backend behind a Backend&, or null (the CPU backend).
CudaBackend* as_cuda_backend(Backend& backend);

}  // namespace qshard
