#include <cuda_runtime.h>

#include "kernels/cuda/cuda_info.h"

namespace qshard {

std::string cuda_describe() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  std::string out = "runtime " + std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
  int count = 0;
  // With no GPU this returns an error and leaves count unset: report, never fail.
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return out + ", no usable device (" + cudaGetErrorString(rc) + ")";
  }
  out += ", " + std::to_string(count) + " device(s)";
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess)
      out += std::string(d ? "; " : ": ") + "cuda:" + std::to_string(d) + " " + prop.name +
             " sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + " " +
             std::to_string(prop.totalGlobalMem >> 20) + " MiB";
  }
  return out;
}

}  // namespace qshard
