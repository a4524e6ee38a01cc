#include "pipeline/hessian_sum.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"

namespace qshard {
namespace {

// Start of row i in a row-major packed upper triangle of a d × d matrix.
int64_t triangle_row_offset(int64_t i, int64_t d) { return i * d - i * (i - 1) / 2; }

// Column-wise writes of the lower half, one element per cache line, made the unpack of
// an 8192-wide Hessian take seconds; 64 × 64 tiles keep both sides in cache.
void mirror_upper_to_lower(float* s, int64_t d) {
  constexpr int64_t kTile = 64;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i0 = 0; i0 < d; i0 += kTile)
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile)
      for (int64_t i = i0; i < std::min(d, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(i, j0 + kTile); ++j) s[i * d + j] = s[j * d + i];
}

}  // namespace

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
    accumulate_window();
  }
  tokens_ += n;
}

// Each element is summed over windows in the same order whatever the thread count, so
// threading keeps the bits; it matters because this pass over d²/2 doubles is memory
// bound and, single-threaded, took as long as the SYRK beside it on many cores.
void HessianSum::accumulate_window() {
  const int64_t d = in_;
  const float* gram = scratch_.data();
  double* upper = upper_.data();
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < d; ++i) {
    double* u = upper + triangle_row_offset(i, d);
    const float* row = gram + i * d;
    for (int64_t j = i; j < d; ++j) u[j - i] += double(row[j]);
  }
}

void HessianSum::allreduce(Communicator& comm) {
  QS_ASSERT(!sum_.defined(), "HessianSum::allreduce twice");
  comm.allreduce_sum(upper_.data(), int64_t(upper_.size()), Traffic::Statistics);
  const int64_t d = in_;
  sum_ = Tensor::zeros(DType::F32, {d, d});
  float* s = sum_.data<float>();
  const double* upper = upper_.data();
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < d; ++i) {
    const double* u = upper + triangle_row_offset(i, d);
    for (int64_t j = i; j < d; ++j) s[i * d + j] = float(u[j - i]);
  }
  mirror_upper_to_lower(s, d);
  std::vector<double>().swap(upper_);
  std::vector<float>().swap(scratch_);
}

}  // namespace qshard
