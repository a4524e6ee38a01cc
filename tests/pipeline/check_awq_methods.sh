#!/usr/bin/env bash
# Every AWQ-family method quantizes the tiny model, exports, and `qshard eval` reads the
# result; awq beats RTN and awq-joint beats awq; awq at 2 ranks writes the same bytes as at 1 rank.
set -euo pipefail
: "${QSHARD_BIN:?}" "${QSHARD_TEST_MODEL:?}"
m=$QSHARD_TEST_MODEL
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--model "$m" --calib "$m/text/calib.txt" --n-calib 8 --calib-seqlen 128 --quiet)
kld() {
  "$QSHARD_BIN" eval --model "$1" --reference "$m" --text "$m/text/eval.txt" --seqlen 128 --max-windows 8 \
    --json --quiet | tail -n 1 | sed -E 's/.*"kld_mean": ([^,]*),.*/\1/'
}
declare -A K
for cfg in "rtn int4" "awq int4" "awq-joint int4" "awq-dh int4" "smoothquant int8" "awq+gptq int4" \
           "awq-joint+gptq int4" "smoothquant+gptq int4" "awq-joint mxint4" "awq nvfp4"; do
  set -- $cfg
  out="$tmp/${1}_$2"
  "$QSHARD_BIN" quantize "${common[@]}" --out "$out" --method "$1" --format "$2" --asym --export fakequant \
    >/dev/null 2>&1 || "$QSHARD_BIN" quantize "${common[@]}" --out "$out" --method "$1" --format "$2" \
    --export fakequant >/dev/null
  K[$cfg]=$(kld "$out")
  echo "$cfg: kld ${K[$cfg]}"
done
# awq-joint fits ranges and rounding to the damped Hessian (--joint-damp): even with these
# 1k calibration tokens it must beat awq (docs/awq-joint.md measures both sizes).
python3 - "${K[rtn int4]}" "${K[awq int4]}" "${K[awq-joint int4]}" <<'PY'
import sys
rtn, awq, joint = map(float, sys.argv[1:])
assert awq < rtn, f"awq {awq} not better than rtn {rtn}"
assert joint < awq, f"awq-joint {joint} not better than awq {awq}"
PY
# GPTQ container (F16 scales) and compressed-tensors exports of AWQ-scaled weights read back.
"$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/gptq_export" --method awq-joint --format int4 --asym \
  --export gptq >/dev/null
"$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/ct_export" --method awq --format int4 --export compressed-tensors >/dev/null
echo "awq-joint gptq export: kld $(kld "$tmp/gptq_export")"
echo "awq compressed-tensors export: kld $(kld "$tmp/ct_export")"
# Reversed combination: refused with one line, exit code 2.
if "$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/rev" --method gptq+awq 2>"$tmp/err"; then
  echo "FAIL: gptq+awq accepted" >&2; exit 1
fi
[[ $(wc -l <"$tmp/err") -eq 1 ]] || { echo "FAIL: not one line:" >&2; cat "$tmp/err" >&2; exit 1; }
# MPI: 2 ranks write the same tensors as 1 (2 ranks write 2 shards and an index).
mpi=(mpirun --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader)
for np in 1 2; do
  "${mpi[@]}" -np $np "$QSHARD_BIN" quantize "${common[@]}" --out "$tmp/np$np" --method awq --format int4 \
    --asym --export fakequant >/dev/null
done
"$QSHARD_PYTHON" - "$tmp/np1" "$tmp/np2" <<'PY' || { echo "FAIL: awq at 2 ranks differs from 1 rank" >&2; exit 1; }
import glob, sys
from safetensors.torch import load_file
def tensors(d):
    out = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        out.update(load_file(f))
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
bad = [k for k in a if a[k].dtype != b[k].dtype or not a[k].view(-1).view(a[k].dtype).equal(b[k].view(-1))]
assert not bad, bad[:5]
PY
echo "awq: -np 2 identical to -np 1"
