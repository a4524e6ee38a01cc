#include "pipeline/hessian_sum.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"

namespace qshard {

HessianSum::HessianSum(int64_t in_features, int64_t window_tokens)
    : in_(in_features), window_(window_tokens) {
  QS_ASSERT(in_ > 0 && window_ > 0, "HessianSum(", in_, ", ", window_, ")");
  upper_.assign(size_t(in_ * (in_ + 1) / 2), 0.0);
}

void HessianSum::add(const Tensor& x_in) {
  QS_ASSERT(!sum_.defined(), "HessianSum::add after allreduce");
  if (x_in.device() != Device::Host) fail_input("Hessian: activations must be on the host");
  if (x_in.ndim() < 1 || x_in.dim(-1) != in_)
    fail_input("Hessian: activations of shape ", shape_str(x_in.shape()), " do not end in ", in_,
               " input features");
  const Tensor x = x_in.dtype() == DType::F32 ? x_in : x_in.to_f32();
  const int64_t n = x.numel() / in_, d = in_;
  if (scratch_.empty()) scratch_.resize(size_t(d * d));
  for (int64_t t0 = 0; t0 < n; t0 += window_) {
    const int64_t m = std::min(window_, n - t0);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(d), int(m), 1.0f, x.data<float>() + t0 * d,
                int(d), 0.0f, scratch_.data(), int(d));
    double* u = upper_.data();
    for (int64_t i = 0; i < d; ++i) {
      const float* row = scratch_.data() + i * d;
      for (int64_t j = i; j < d; ++j) *u++ += double(row[j]);
    }
  }
  tokens_ += n;
}

void HessianSum::allreduce(Communicator& comm) {
  QS_ASSERT(!sum_.defined(), "HessianSum::allreduce twice");
  comm.allreduce_sum(upper_.data(), int64_t(upper_.size()), Traffic::Statistics);
  const int64_t d = in_;
  sum_ = Tensor::zeros(DType::F32, {d, d});
  float* s = sum_.data<float>();
  const double* u = upper_.data();
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = i; j < d; ++j) s[i * d + j] = s[j * d + i] = float(*u++);
  std::vector<double>().swap(upper_);
  std::vector<float>().swap(scratch_);
}

}  // namespace qshard
