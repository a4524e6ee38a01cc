#include "kernels/cuda/cuda_check.h"

#include "core/error.h"

namespace qshard::cuda {

void fail_call(const char* library, const char* statement, const char* what, const char* file,
               int line) {
  int device = -1;
  // Best effort: after a sticky error this call fails too, and -1 says so.
  if (cudaGetDevice(&device) != cudaSuccess) device = -1;
  fail(library, " error: ", statement, " failed at ", file, ":", line, " (device ", device,
       "): ", what);
}

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "allocation failed (out of device memory)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "matrix type not supported";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown cuSOLVER status";
  }
}

}  // namespace qshard::cuda
