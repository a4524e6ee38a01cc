#!/usr/bin/env bash
# Bad input ends with one clear line naming the problem and a non-zero exit code.
set -uo pipefail
: "${QSHARD_BIN:?}" "${QSHARD_TEST_MODEL:?}"
m=$QSHARD_TEST_MODEL
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
expect() {  # expect CODE PATTERN -- ARGS...
  local code=$1 pattern=$2
  shift 3
  local err
  err=$("$QSHARD_BIN" "$@" 2>&1 >/dev/null)
  local rc=$?
  if [[ $rc -ne $code ]] || ! grep -q -- "$pattern" <<<"$err" || [[ $(wc -l <<<"$err") -ne 1 ]]; then
    echo "FAIL: qshard $* -> rc $rc, stderr: $err (wanted rc $code and one line matching '$pattern')"
    fails=$((fails + 1))
  else
    echo "ok: qshard $* -> $err"
  fi
}
expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 2 "the option '--model' is required" -- eval --text "$m/text/eval.txt"
expect 2 "no such model directory" -- eval --model "$tmp/nope" --text "$m/text/eval.txt" --quiet
expect 2 "nope.txt: cannot open" -- eval --model "$m" --text "$tmp/nope.txt" --quiet
mkdir "$tmp/bad"
cp "$m/config.json" "$m/tokenizer.model" "$tmp/bad/"
head -c 1000 "$m/model.safetensors" >"$tmp/bad/model.safetensors"
expect 2 "model.safetensors" -- eval --model "$tmp/bad" --text "$m/text/eval.txt" --quiet
sed 's/"llama"/"gpt_neox"/' "$m/config.json" >"$tmp/bad/config.json"
expect 2 'model_type "gpt_neox" is not supported' -- eval --model "$tmp/bad" --text "$m/text/eval.txt" --quiet
echo "short" >"$tmp/short.txt"
expect 2 "fewer than one window" -- eval --model "$m" --text "$tmp/short.txt" --quiet
expect 2 "seqlen" -- eval --model "$m" --text "$m/text/eval.txt" --seqlen 1 --quiet
"$QSHARD_BIN" --help | grep -q "eval" || { echo "FAIL: --help does not list eval"; fails=$((fails + 1)); }
"$QSHARD_BIN" eval --help | grep -q -- "--reference" || { echo "FAIL: eval --help"; fails=$((fails + 1)); }
[[ $fails -eq 0 ]] && echo PASS || exit 1
