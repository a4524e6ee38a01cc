// One family of checks for every CUDA-library return code (style.md item 6): the
// failing statement, file:line, the device and the library's own error string, thrown
// as qshard::Error so main() prints one line. Included by .cu files too, so this header
// stays C++17 and free of qshard headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

namespace qshard::cuda {

[[noreturn]] void fail_call(const char* library, const char* statement, const char* what,
                            const char* file, int line);
const char* cusolver_status_name(cusolverStatus_t status);

}  // namespace qshard::cuda

#define QS_CUDA_CHECK(stmt)                                                               \
  do {                                                                                    \
    const cudaError_t qs_rc_ = (stmt);                                                    \
    if (qs_rc_ != cudaSuccess)                                                            \
      ::qshard::cuda::fail_call("CUDA", #stmt, cudaGetErrorString(qs_rc_), __FILE__, __LINE__); \
  } while (0)

#define QS_CUBLAS_CHECK(stmt)                                                                 \
  do {                                                                                        \
    const cublasStatus_t qs_rc_ = (stmt);                                                     \
    if (qs_rc_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::qshard::cuda::fail_call("cuBLAS", #stmt, cublasGetStatusString(qs_rc_), __FILE__, __LINE__); \
  } while (0)

#define QS_CUSOLVER_CHECK(stmt)                                                              \
  do {                                                                                       \
    const cusolverStatus_t qs_rc_ = (stmt);                                                  \
    if (qs_rc_ != CUSOLVER_STATUS_SUCCESS)                                                   \
      ::qshard::cuda::fail_call("cuSOLVER", #stmt, ::qshard::cuda::cusolver_status_name(qs_rc_), \
                                __FILE__, __LINE__);                                         \
  } while (0)

// After every kernel launch: a bad configuration (too many threads, too much shared
// memory) only shows up in cudaGetLastError, and an unchecked one surfaces later as the
// error of some unrelated call.
#define QS_CUDA_LAUNCH_CHECK(kernel)                                                        \
  do {                                                                                      \
    const cudaError_t qs_rc_ = cudaGetLastError();                                          \
    if (qs_rc_ != cudaSuccess)                                                              \
      ::qshard::cuda::fail_call("CUDA", "launch of " #kernel, cudaGetErrorString(qs_rc_), \
                                __FILE__, __LINE__);                                        \
  } while (0)
