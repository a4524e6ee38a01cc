#!/usr/bin/env bash
# The main job on the bundled tiny model: set up and build, quantize it with GPTQ int4
# (group 128) into the GPTQ layout engines load, then evaluate what was written against
# the original: perplexity, KL divergence, top-1 agreement.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${QSHARD_BUILD_DIR:-$root/build}
"$root/launch/setup.sh"
model=$root/models/tiny-llama-gcide
out=$build_dir/quickstart/tiny-llama-gcide-gptq-int4
rm -rf "$out"
"$build_dir/qshard" quantize --model "$model" --out "$out" --calib "$model/text/calib.txt" \
  --n-calib 128 --calib-seqlen 256 --method gptq --format int4 --group-size 128 --export gptq
echo
echo "== quality of $out against the original (first 128 windows of eval.txt)"
"$build_dir/qshard" eval --model "$out" --reference "$model" --text "$model/text/eval.txt" \
  --seqlen 256 --max-windows 128
