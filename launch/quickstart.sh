#!/usr/bin/env bash
# The main job on the bundled tiny model: set up, build, evaluate.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${QSHARD_BUILD_DIR:-$root/build}
"$root/launch/setup.sh"
model=$root/models/tiny-llama-gcide
"$build_dir/qshard" eval --model "$model" --text "$model/text/eval.txt" --reference "$model" \
  --seqlen 256 --max-windows 64
