// make_backend: the one place that turns a --device string into a Backend.
#include "core/error.h"
#include "kernels/backend.h"
#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace qshard {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef QSHARD_HAVE_CUDA
    return make_cuda_backend(device);
#else
    fail_input("--device ", device, ": this qshard was built without CUDA (nvcc not found or "
               "-DQSHARD_ENABLE_CUDA=OFF); rebuild with CUDA or use --device cpu");
#endif
  }
  fail_input("--device ", device, " is not one of cpu, cuda, cuda:N");
}

}  // namespace qshard
