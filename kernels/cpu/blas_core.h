// The OpenBLAS kernels this process runs with, and the start-up fix for a library that
// does not recognise the CPU.
#pragma once

#include <string>

namespace qshard::cpu {

// Re-executes this program with OPENBLAS_CORETYPE set when OpenBLAS fell back to its
// generic SSE3 kernels on a CPU with AVX2/AVX-512. Returns only if nothing needed doing
// (or the re-exec failed). Call first in main(), before MPI or any thread starts.
void reexec_for_blas_core(char** argv);

// "OpenBLAS 0.3.21 ..., core SkylakeX (OPENBLAS_CORETYPE=SkylakeX)" for `qshard info`.
std::string blas_describe();

}  // namespace qshard::cpu
