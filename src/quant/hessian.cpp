// HessianAccumulator: raw Σ xxᵀ in fp32 (SYRK, upper triangle, then mirrored) plus the
// token count; algorithms.md §1.3 (GPTQModel-style raw sums, normalised once).
#include <cblas.h>

#include <algorithm>

#include "core/error.h"
#include "quant/gptq.h"
#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "quant/cuda/gptq_cuda.h"
#endif

namespace qshard {

#ifdef QSHARD_HAVE_CUDA
struct DeviceHessianSum {
  CudaHessian acc;
};
#else
struct DeviceHessianSum {};
#endif

HessianAccumulator::~HessianAccumulator() = default;
HessianAccumulator::HessianAccumulator(HessianAccumulator&&) noexcept = default;
HessianAccumulator& HessianAccumulator::operator=(HessianAccumulator&&) noexcept = default;

Tensor& HessianAccumulator::sum() {
  fetch_device();
  return sum_;
}

const Tensor& HessianAccumulator::sum() const {
  fetch_device();
  return sum_;
}

void HessianAccumulator::fetch_device() const {
#ifdef QSHARD_HAVE_CUDA
  if (!device_) return;
  const Tensor part = device_->acc.download();
  float* s = sum_.data<float>();
  const float* p = part.data<float>();
  for (int64_t i = 0, n = sum_.numel(); i < n; ++i) s[i] += p[i];
  device_.reset();
#endif
}

HessianAccumulator::HessianAccumulator(int64_t in_features) {
  if (in_features <= 0) fail_input("Hessian: in_features must be positive, got ", in_features);
  sum_ = Tensor::zeros(DType::F32, {in_features, in_features});
}

void HessianAccumulator::add(const Tensor& x_in, Backend* backend) {
  const int64_t d = sum_.dim(0);
  if (x_in.device() == Device::Cuda) {
#ifdef QSHARD_HAVE_CUDA
    CudaBackend* cuda = backend ? as_cuda_backend(*backend) : nullptr;
    QS_ASSERT(cuda, "Hessian: GPU activations need the CUDA backend that holds them");
    if (!device_) device_.reset(new DeviceHessianSum{CudaHessian(cuda->shared_context(), d)});
    const int64_t before = device_->acc.tokens();
    device_->acc.add(x_in);
    tokens_ += device_->acc.tokens() - before;
    return;
#else
    (void)backend;
    fail("Hessian: a CUDA tensor in a build without CUDA");
#endif
  }
  (void)backend;
  if (x_in.device() != Device::Host) fail_input("Hessian: activations must be on the host");
  if (x_in.ndim() < 1 || x_in.dim(-1) != d)
    fail_input("Hessian: activations of shape ", shape_str(x_in.shape()), " do not end in ",
               d, " input features");
  const Tensor x = x_in.dtype() == DType::F32 ? x_in : x_in.to_f32();
  const int64_t n = x.numel() / d;
  if (n == 0) return;
  float* s = sum_.data<float>();
  // Row-major x [n, d]: Σ xxᵀ = xᵀx, accumulated into the upper triangle (fp32 throughout,
  // as every reference does with TF32 off).
  // Chunked so that the token count always fits BLAS's int.
  const int64_t chunk = int64_t(1) << 20;
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t m = std::min(chunk, n - t0);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(d), int(m), 1.0f,
                x.data<float>() + t0 * d, int(d), 1.0f, s, int(d));
  }
  // Mirror so that sum() is symmetric in both triangles (all-reduce and readers rely on it);
  // tiled so that the strided side stays in cache.
  constexpr int64_t T = 64;
  for (int64_t i0 = 0; i0 < d; i0 += T)
    for (int64_t j0 = i0; j0 < d; j0 += T)
      for (int64_t i = i0; i < std::min(i0 + T, d); ++i)
        for (int64_t j = std::max(j0, i + 1); j < std::min(j0 + T, d); ++j) s[j * d + i] = s[i * d + j];
  tokens_ += n;
}

Tensor HessianAccumulator::normalized() const {
  fetch_device();
  if (tokens_ <= 0) fail_input("Hessian: no calibration tokens were accumulated");
  Tensor h = Tensor::zeros(DType::F32, sum_.shape());
  const float* s = sum_.data<float>();
  float* o = h.data<float>();
  const double f = 2.0 / double(tokens_);
  for (int64_t i = 0, n = sum_.numel(); i < n; ++i) o[i] = float(f * s[i]);
  return h;
}

}  // namespace qshard
