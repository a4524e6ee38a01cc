// OpenBLAS (pthread flavour) runs its own thread pool and knows nothing of OpenMP. The
// CPU backend does all its threading with OpenMP, GEMMs included (each thread calls a
// single-threaded sgemm on its share), so kernels hold this scope to keep OpenBLAS's
// pool out of the way. openblas_set_num_threads is process-wide: another thread calling
// BLAS meanwhile runs single-threaded, which is slower but still correct.
#pragma once

#include <cblas.h>

namespace qshard::cpu {

class SerialBlasScope {
 public:
  SerialBlasScope() : saved_(openblas_get_num_threads()) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~SerialBlasScope() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  SerialBlasScope(const SerialBlasScope&) = delete;
  SerialBlasScope& operator=(const SerialBlasScope&) = delete;

 private:
  int saved_;
};

}  // namespace qshard::cpu
