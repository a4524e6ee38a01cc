#!/usr/bin/env bash
# The test suite built with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DQSHARD_SANITIZE=ON), CUDA off, in its own build directory (default build-asan), so
# the main build is untouched. Any sanitizer report fails the test it happens in.
#   launch/test_sanitized.sh [ctest args...]      e.g. -R FuzzReplay
# Assumes launch/setup.sh ran (dependencies installed).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${QSHARD_ASAN_BUILD_DIR:-$root/build-asan}
jobs=$(nproc 2>/dev/null || echo 2)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSHARD_SANITIZE=ON \
  -DQSHARD_ENABLE_CUDA=OFF -DQSHARD_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Leak checking is off: Open MPI and OpenBLAS keep process-lifetime allocations that
# LeakSanitizer reports as leaks. Everything else (overflows, use-after-free, UB) aborts.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" "$@"
