#include "cli/device.h"

#include "core/error.h"

#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

namespace qshard::cli {

namespace {

// The CUDA backend arrives with its own issue (it sets QSHARD_HAVE_CUDA_BACKEND); until
// then a CUDA build only probes the GPU and --device cuda is refused.
#ifdef QSHARD_HAVE_CUDA_BACKEND
constexpr bool kCudaBackend = true;
#else
constexpr bool kCudaBackend = false;
#endif

// A CUDA build and a device the runtime can use.
bool gpu_present(std::string* why) {
#ifdef QSHARD_HAVE_CUDA
  const std::string d = cuda_describe();
  // cuda_describe() says "no usable device (reason)" when there is none.
  if (d.find("no usable device") != std::string::npos) {
    *why = "no CUDA GPU is visible (" + d + ")";
    return false;
  }
  return true;
#else
  *why = "this qshard was built without CUDA (nvcc was not found at configure time, or "
         "-DQSHARD_ENABLE_CUDA=OFF)";
  return false;
#endif
}

}  // namespace

std::string resolve_device(const std::string& name) {
  if (name == "cpu") return "cpu";
  std::string why;
  if (name == "cuda") {
    if (!gpu_present(&why)) fail_input("--device cuda: ", why, ": use --device cpu (or auto)");
    if (!kCudaBackend)
      fail_input("--device cuda: this build has no CUDA backend yet (only the GPU probe): use --device cpu");
    return "cuda";
  }
  if (name == "auto") return kCudaBackend && gpu_present(&why) ? "cuda" : "cpu";
  fail_input("--device ", name, " is not one of cpu, cuda, auto");
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  QS_ASSERT(device == "cpu", "no backend for device ", device);
  return make_cpu_backend();
}

}  // namespace qshard::cli
