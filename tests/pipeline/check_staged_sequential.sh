#!/usr/bin/env bash
# True-sequential calibration computes each group's inputs once (pipeline/staged_layer.h);
# it must write the same bytes as re-running the layer for every group
# (QSHARD_SEQUENTIAL_RERUN=1): gptq (one batch, several batches with W8A8 inputs and a
# skipped module) and awq-joint+gptq (a short grid: the staged path is what is tested).
# awq-joint alone quantizes without Hessian passes, one forward per layer on either path.
set -euo pipefail
: "${QSHARD_BIN:?}" "${QSHARD_TEST_MODEL:?}"
m=$QSHARD_TEST_MODEL
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--model "$m" --calib "$m/text/calib.txt" --n-calib 4 --calib-seqlen 64 --quiet --export fakequant)
n=0
while IFS= read -r args; do
  n=$((n + 1))
  # shellcheck disable=SC2086
  "$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/staged$n" $args >/dev/null
  # shellcheck disable=SC2086
  QSHARD_SEQUENTIAL_RERUN=1 "$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/rerun$n" $args >/dev/null
  if ! cmp -s "$tmp/staged$n/model.safetensors" "$tmp/rerun$n/model.safetensors"; then
    echo "FAIL: staged and rerun true-sequential differ for: $args" >&2
    exit 1
  fi
  echo "same bytes: $args"
done <<'CASES'
--method gptq --format int4
--method gptq --format int4 --asym --act-format int8 --batch-tokens 64 --skip .*layers.1.self_attn.o_proj
--method awq-joint+gptq --format int4 --asym --awq-grid 2 --joint-range-sweeps 1 --joint-rounding-sweeps 1
CASES
