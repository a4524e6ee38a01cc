#!/usr/bin/env bash
# Our AWQ scale search (awq_scale_probe: the pipeline's α grid, fake quantization, loss
# and selection) against tools/autoawq_reference.py, a re-implementation of AutoAWQ's
# search: same chosen α for every scaling group, scales and per-α losses at float
# tolerance. Weights of the tiny model's layer 1, synthetic activations with outliers.
set -euo pipefail
probe=${1:?usage: check_autoawq_reference.sh AWQ_SCALE_PROBE}
: "${QSHARD_PYTHON:?}" "${QSHARD_SOURCE_DIR:?}" "${QSHARD_TEST_MODEL:?}"
"$QSHARD_PYTHON" -c "import torch, safetensors" 2>/dev/null || { echo "skip: torch/safetensors missing"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ref="$QSHARD_SOURCE_DIR/tools/autoawq_reference.py"
for bits in 4 3; do
  "$QSHARD_PYTHON" "$ref" make-inputs "$tmp/in.safetensors" --seed $bits --model "$QSHARD_TEST_MODEL"
  "$probe" "$tmp/in.safetensors" $bits 128 20 >"$tmp/probe.json"
  echo "int$bits g128 asym:"
  "$QSHARD_PYTHON" "$ref" check "$tmp/in.safetensors" "$tmp/probe.json" --bits $bits --group-size 128
done
