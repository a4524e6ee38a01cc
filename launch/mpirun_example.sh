#!/usr/bin/env bash
# qshard under mpirun on one machine: the tiny bundled model quantized 4 ways in parallel
# (GPTQ int4 g128, GPTQ checkpoint), then evaluated against the original, also in
# parallel. The same command at any -np gives the same tensors as one process.
#
#   launch/mpirun_example.sh [NP] [OUT]      (default 4 ranks, /tmp/qshard-mpirun-example)
#
# More ranks than cores works (--oversubscribe) but is slower: ranks share the cores.
# On a cluster use launch/qshard.sbatch instead; across nodes mpirun needs a hostfile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
np=${1:-4}
out=${2:-/tmp/qshard-mpirun-example}
qshard=${QSHARD_BIN:-$root/build/qshard}
model=$root/models/tiny-llama-gcide
flags=(--oversubscribe --mca pml ob1 --mca btl self,vader)  # one machine: shared memory only
[[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
# One thread per rank so that the ranks do not fight over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
rm -rf "$out"
mpirun -np "$np" "${flags[@]}" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
  "$qshard" quantize --model "$model" --out "$out" --calib "$model/text/calib.txt" \
  --n-calib 128 --calib-seqlen 256 --format int4 --group-size 128 --export gptq
mpirun -np "$np" "${flags[@]}" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
  "$qshard" eval --model "$out" --reference "$model" --text "$model/text/eval.txt" \
  --seqlen 256 --max-windows 64
