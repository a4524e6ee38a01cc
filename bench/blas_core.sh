#!/usr/bin/env bash
# OpenBLAS kernels side by side: Debian 12's OpenBLAS 0.3.21 falls back to its SSE3
# "Prescott" kernels on CPUs it does not know (Sapphire Rapids), and qshard re-executes
# itself with OPENBLAS_CORETYPE set (kernels/cpu/blas_core.cpp). This prints, in one run,
# single-thread sgemm GFLOP/s (1024^3, through ctypes) and the wall time of one tiny-model
# gptq quantize for each core, with the ratio against Prescott.
#   bench/blas_core.sh [QSHARD_BIN]      (default build/qshard)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
qbin=${1:-$root/build/qshard}
py=$root/.venv/bin/python
model=$root/models/tiny-llama-gcide
lib=$(ldd "$qbin" | awk '/libopenblas/ {print $3}')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sgemm() {
  OPENBLAS_CORETYPE=$1 "$py" - "$lib" <<'PY'
import ctypes, sys, time
import numpy as np
l = ctypes.CDLL(sys.argv[1]); l.openblas_set_num_threads(1)
n = 1024
a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
c = np.zeros((n, n), np.float32); P = ctypes.POINTER(ctypes.c_float)
f = lambda: l.cblas_sgemm(101, 111, 111, n, n, n, ctypes.c_float(1), a.ctypes.data_as(P), n,
                          b.ctypes.data_as(P), n, ctypes.c_float(0), c.ctypes.data_as(P), n)
f(); t = time.perf_counter(); [f() for _ in range(5)]
print(f"{2 * n ** 3 * 5 / (time.perf_counter() - t) / 1e9:.1f}")
PY
}
quantize() {
  local t0 t1
  t0=$(date +%s.%N)
  OPENBLAS_CORETYPE=$1 "$qbin" quantize --model "$model" --out "$tmp/$1" --calib "$model/text/calib.txt" \
    --n-calib 32 --calib-seqlen 256 --method gptq --format int4 --group-size 128 --asym \
    --export fakequant --quiet >/dev/null
  t1=$(date +%s.%N)
  printf '%.1f' "$(echo "$t1 - $t0" | bc)"
}
echo "# $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); $lib"
echo "| OPENBLAS_CORETYPE | sgemm GFLOP/s (1 thread) | tiny gptq quantize s | quantize time / Prescott |"
echo "|---|---|---|---|"
base=""
for core in Prescott Haswell SkylakeX; do
  g=$(sgemm $core); s=$(quantize $core)
  base=${base:-$s}
  echo "| $core | $g | $s | $(printf '%.3f' "$(echo "scale=4; $s / $base" | bc)") |"
done
