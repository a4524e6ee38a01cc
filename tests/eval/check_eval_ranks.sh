#!/usr/bin/env bash
# qshard eval at 1, 2 and 3 ranks (mpirun) and without mpirun: identical numbers.
set -euo pipefail
: "${QSHARD_BIN:?}" "${QSHARD_TEST_MODEL:?}"
m=$QSHARD_TEST_MODEL
args=(eval --model "$m" --text "$m/text/eval.txt" --reference "$m" --seqlen 64 --max-windows 7
      --batch-tokens 128 --json --quiet)
# Drop the keys that legitimately differ (time, rank count).
strip() { tail -n 1 | sed -E 's/, "seconds": [^,}]*//; s/, "ranks": [0-9]+//'; }
base=$("$QSHARD_BIN" "${args[@]}" | strip)
echo "no mpirun: $base"
for np in 1 2 3; do
  got=$(mpirun -np $np --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader \
        "$QSHARD_BIN" "${args[@]}" | strip)
  echo "$np rank(s): $got"
  if [[ $got != "$base" ]]; then
    echo "FAIL: result at $np ranks differs from the single-process run" >&2
    exit 1
  fi
done
case $base in *'"kld_mean": 0,'*'"kld_max": 0,'*'"top1_agree": 1'*) ;; *)
  echo "FAIL: a model against itself must have KLD exactly 0 and top-1 agreement 1" >&2; exit 1;;
esac

# Against a different model (the bundled one with seeded noise on every weight) the
# KLD statistics are non-trivial and must still not depend on the rank count.
if "$QSHARD_PYTHON" -c "import safetensors, numpy" 2>/dev/null; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$QSHARD_PYTHON" "$QSHARD_SOURCE_DIR/tools/perturb_model.py" "$m" "$tmp/noisy" --scale 0.05 --seed 1
  args=(eval --model "$tmp/noisy" --text "$m/text/eval.txt" --reference "$m" --seqlen 64
        --max-windows 7 --batch-tokens 128 --json --quiet)
  base=$("$QSHARD_BIN" "${args[@]}" | strip)
  echo "noisy, no mpirun: $base"
  case $base in *'"kld_mean": 0,'*) echo "FAIL: noisy model has zero KLD" >&2; exit 1;; esac
  for np in 2 3; do
    got=$(mpirun -np $np --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader \
          "$QSHARD_BIN" "${args[@]}" | strip)
    echo "noisy, $np rank(s): $got"
    [[ $got == "$base" ]] || { echo "FAIL: noisy result at $np ranks differs" >&2; exit 1; }
  done
else
  echo "skipping the noisy-reference half: no python with safetensors and numpy"
fi
echo "PASS"
