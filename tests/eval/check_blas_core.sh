#!/usr/bin/env bash
# qshard runs with the OpenBLAS kernels of this CPU's instruction set, not the SSE3
# fallback that OpenBLAS 0.3.21 picks for CPU models it does not know
# (kernels/cpu/blas_core.cpp); a user's OPENBLAS_CORETYPE is kept; the re-exec happens
# before MPI starts, so ranks still find each other.
set -uo pipefail
: "${QSHARD_BIN:?}"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

line=$(env -u OPENBLAS_CORETYPE "$QSHARD_BIN" info | grep '^blas: ')
echo "auto: $line"
if grep -qw avx2 /proc/cpuinfo && grep -q ', core Prescott' <<<"$line"; then
  fail "Prescott (SSE3) kernels on a CPU with AVX2"
fi
line=$(OPENBLAS_CORETYPE=Haswell "$QSHARD_BIN" info | grep '^blas: ')
echo "user: $line"
grep -q ', core Haswell (OPENBLAS_CORETYPE=Haswell)$' <<<"$line" || fail "the user's OPENBLAS_CORETYPE was not kept"
out=$(env -u OPENBLAS_CORETYPE mpirun --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader \
      -np 2 "$QSHARD_BIN" info)
echo "$out" | grep '^ranks\|^blas'
grep -q '^ranks: 2$' <<<"$out" || fail "under mpirun -np 2 the ranks did not form one job: $out"
[[ $fails -eq 0 ]] && echo PASS
exit $((fails > 0))
