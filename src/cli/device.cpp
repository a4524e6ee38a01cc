#include "cli/device.h"

#include "core/error.h"

#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

namespace qshard::cli {

namespace {

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
  if (name == "auto") return gpu_present(&why) ? "cuda" : "cpu";
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!gpu_present(&why)) fail_input("--device ", name, ": ", why, ": use --device cpu (or auto)");
    return name;
  }
  fail_input("--device ", name, " is not one of cpu, cuda, cuda:N, auto");
}

std::unique_ptr<Backend> make_backend(const std::string& device) { return qshard::make_backend(device); }

}  // namespace qshard::cli
