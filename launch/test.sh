#!/usr/bin/env bash
# Sets up (idempotent) and runs every test under CTest: unit tests, MPI tests under
# mpirun with several ranks, and the checks against PyTorch and the safetensors package.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${QSHARD_BUILD_DIR:-$root/build}
"$root/launch/setup.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" "$@"
