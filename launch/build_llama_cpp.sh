#!/usr/bin/env bash
# Builds, once, the few llama.cpp tools the GGUF checks run (llama-perplexity, llama-quantize,
# llama-imatrix) on the CPU from the llama-cpp-python sdist that fetch_testdata.sh downloads,
# into a cache keyed by version: $cache/llama-cpp-build-$LCP/bin. Later runs find the stamp
# and print nothing. Called by launch/setup.sh; the build takes ~10 minutes on 2 busy cores.
#
#   QSHARD_LLAMA_JOBS=N   parallel compile jobs (default: nproc)
set -euo pipefail
cache=${QSHARD_CACHE:-$HOME/.cache/qshard}
LCP_VERSION=0.3.36
src=$cache/llama-cpp-src/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp
build=$cache/llama-cpp-build-$LCP_VERSION
targets=(llama-perplexity llama-quantize llama-imatrix)
[[ -f $build/.built ]] && exit 0

if [[ ! -f $src/CMakeLists.txt ]]; then
  tarball=$cache/dl/llama_cpp_python-$LCP_VERSION.tar.gz
  [[ -f $tarball ]] || { echo "build_llama_cpp: $tarball missing; run launch/fetch_testdata.sh" >&2; exit 1; }
  mkdir -p "$cache/llama-cpp-src"
  tar -xzf "$tarball" -C "$cache/llama-cpp-src"
fi
echo "build_llama_cpp: building ${targets[*]} into $build (several minutes)" >&2
# Portable CPU code (CI machines differ), static so the binaries need no LD_LIBRARY_PATH,
# and none of the network or UI parts.
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_UI=OFF -DGGML_OPENMP=OFF >"$build.cmake.log" 2>&1 ||
  { cat "$build.cmake.log" >&2; exit 1; }
cmake --build "$build" -j "${QSHARD_LLAMA_JOBS:-$(nproc 2>/dev/null || echo 2)}" --target "${targets[@]}"
touch "$build/.built"
