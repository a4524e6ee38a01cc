#!/usr/bin/env bash
# Installs qshard's dependencies (Debian packages; PyPI only for test-side Python),
# then configures and builds. Idempotent: a second run installs nothing and rebuilds
# only what changed. Used by the README, by .ci/run and by users alike.
#
#   launch/setup.sh              install what is missing, build into ./build
#   launch/setup.sh --deps-only  install, do not build
#   QSHARD_BUILD_DIR=DIR QSHARD_CMAKE_ARGS="-DQSHARD_ENABLE_CUDA=OFF" launch/setup.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${QSHARD_BUILD_DIR:-$root/build}
deps_only=0
[[ ${1:-} == --deps-only ]] && deps_only=1

apt_packages=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libboost-program-options-dev nlohmann-json3-dev
  libopenblas-dev libopenblas0-pthread liblapacke-dev
  libsentencepiece-dev
  # tokenizer.json: PCRE2 for the pre-tokenizer regexes (\p{L}, \p{N}), utf8proc for NFC.
  libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # A one-node Slurm for the launch/qshard.sbatch test (tests/launch/check_slurm.sh).
  slurm-wlm slurmctld slurmd slurm-client munge
  # fuzz/run.sh: clang with libFuzzer and the sanitizer runtimes.
  clang libclang-rt-14-dev
  # Python for the tests that check our output against readers we did not write.
  # Debian's torch is CPU-only and uses OpenBLAS (PyPI's pulls gigabytes of CUDA).
  python3 python3-venv python3-pip python3-numpy python3-torch python3-sentencepiece
  python3-yaml python3-requests python3-typing-extensions python3-h5py
)
# Test-only Python packages that Debian 12 does not ship, pinned. transformers is the
# newest that runs on Debian's torch 1.13; --no-deps keeps pip from replacing that torch
# with a CUDA build, so its few pure-Python dependencies are listed here instead.
pip_packages=(safetensors==0.8.0 transformers==4.44.2 tokenizers==0.19.1 huggingface-hub==0.29.3
              regex==2026.11.15 tqdm==4.70.1 packaging==26.3 filelock==4.2.12 fsspec==2026.9.0)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A venv over Debian's python3 so it sees python3-torch and numpy.
venv=$root/.venv
if ! "$venv/bin/python" -c "import safetensors, torch, numpy, sentencepiece, transformers" 2>/dev/null; then
  echo "setup: making the test venv $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "${pip_packages[@]}"
fi

# The engines' venv (PyPI torch 2.10, transformers 5, compressed-tensors, GPTQModel) for
# tests/engines, in the cache outside the clone; a no-op when present.
"$root/launch/engines_venv.sh"

# Real test data that is not committed (llama.cpp's tokenizer vectors, SmolLM2-135M),
# fetched once into a cache outside the clone.
"$root/launch/fetch_testdata.sh"
# llama.cpp's perplexity/quantize/imatrix tools, built once on the CPU into the same cache:
# the GGUF export is checked against them (tests/export/check_gguf_llama_cpp.py).
"$root/launch/build_llama_cpp.sh"

((deps_only)) && exit 0

jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${QSHARD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "$jobs"
echo "setup: built $build_dir/qshard"
