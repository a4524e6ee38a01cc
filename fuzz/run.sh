#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (a CMake configuration of its own in
# build-fuzz/, so the main gcc build is unaffected) and fuzzes each for a bounded time,
# starting from the seed corpus in fuzz/corpus/<target>/ and the crash inputs kept in
# fuzz/regressions/<target>/ (those are also replayed by the normal test suite,
# ctest -R FuzzReplay). New corpus entries go to a temporary directory: the repo's
# corpus only changes by hand.
#
#   fuzz/run.sh                      every target, QSHARD_FUZZ_SECONDS (default 60) each
#   fuzz/run.sh token_file           one target
#   QSHARD_FUZZ_BUILD_DIR=DIR        where to build (default build-fuzz)
# A crash stops the run with the input's path: fix the bug, then copy the input into
# fuzz/regressions/<target>/ with a name that says what it was.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${QSHARD_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${QSHARD_FUZZ_SECONDS:-60}
targets=("$@")
((${#targets[@]})) || targets=(safetensors_header model_spec token_file tokenizer_json recipe)

cxx=${QSHARD_FUZZ_CXX:-clang++}
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (launch/setup.sh installs clang)"; exit 1; }
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CXX=$cxx cmake -S "$root/fuzz" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

status=0
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  dict=()
  [[ -f $root/fuzz/$t.dict ]] && dict=(-dict="$root/fuzz/$t.dict")
  # Corpus directories that exist (git keeps no empty regressions/<target>/).
  dirs=()
  for d in "$root/fuzz/corpus/$t" "$root/fuzz/regressions/$t"; do [[ -d $d ]] && dirs+=("$d"); done
  log=$build/fuzz-$t.log
  start=$SECONDS
  if "$build/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       "${dict[@]}" -artifact_prefix="$build/crash-$t-" "$work" "${dirs[@]}" >"$log" 2>&1; then
    runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz: $t: $runs inputs in $((SECONDS - start)) s, no crash"
  else
    echo "fuzz: $t: CRASH (log $log):"
    grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -5
    status=1
  fi
  rm -rf "$work"
done
exit $status
