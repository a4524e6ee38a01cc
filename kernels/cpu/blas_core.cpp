// OpenBLAS chooses its kernels once, when the library loads, from the CPU model number.
// Debian 12's OpenBLAS 0.3.21 does not know recent Intel models (Sapphire Rapids, the
// machines CI runs on) and falls back to "Prescott" (SSE3) kernels: sgemm then runs at
// 2.9 GFLOP/s per core instead of 14.7 with the AVX-512 ones (bench/blas_core.sh). Every
// forward pass, Hessian and Cholesky goes through it. The library reads OPENBLAS_CORETYPE
// before main(), so the only remedy from inside the program is to set it and exec again.
#include "kernels/cpu/blas_core.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace qshard::cpu {

namespace {

const char* fallback_core() {
  const char* core = openblas_get_corename();
  return core && std::strcmp(core, "Prescott") == 0 ? core : nullptr;
}

// The kernels OpenBLAS would pick if it knew the model: by instruction set, newest first.
const char* core_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

}  // namespace

void reexec_for_blas_core(char** argv) {
  // A user's (or an earlier exec's) choice stands, which also ends the re-exec loop.
  if (std::getenv("OPENBLAS_CORETYPE") || !fallback_core()) return;
  const char* core = core_for_this_cpu();
  if (!core) return;
  setenv("OPENBLAS_CORETYPE", core, 1);
  setenv("QSHARD_BLAS_CORE_SET", "1", 1);
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");  // exec failed: go on with the slow kernels
  unsetenv("QSHARD_BLAS_CORE_SET");
}

std::string blas_describe() {
  std::string s = openblas_get_config();
  s += ", core ";
  s += openblas_get_corename();
  if (const char* env = std::getenv("OPENBLAS_CORETYPE")) {
    s += std::string(" (OPENBLAS_CORETYPE=") + env;
    s += std::getenv("QSHARD_BLAS_CORE_SET") ? ", set by qshard: the library's own detection gave Prescott)"
                                              : ")";
  }
  return s;
}

}  // namespace qshard::cpu
