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
expect 2 "short.txt: [0-9]* tokens, fewer than one window" -- eval --model "$m" --text "$tmp/short.txt" --quiet
expect 2 "seqlen" -- eval --model "$m" --text "$m/text/eval.txt" --seqlen 1 --quiet
# Token files: eval --tokens beside --text, and text refusing token ids.
"$QSHARD_BIN" tokenize --model "$m" --text "$m/text/eval.txt" --out "$tmp/eval.tokens" --quiet >/dev/null ||
  { echo "FAIL: qshard tokenize"; fails=$((fails + 1)); }
expect 2 "exactly one of --text FILE and --tokens FILE" -- eval --model "$m" --quiet
expect 2 "exactly one of --text FILE and --tokens FILE" -- eval --model "$m" --text "$m/text/eval.txt" --tokens "$tmp/eval.tokens" --quiet
expect 2 "eval.tokens: is a token file .*pass it as --tokens" -- eval --model "$m" --text "$tmp/eval.tokens" --quiet
cp "$tmp/eval.tokens" "$tmp/eval.dat"
expect 2 "eval.dat: is not UTF-8 text.*pass it as --tokens" -- eval --model "$m" --text "$tmp/eval.dat" --quiet
printf 'caf\xe9 au lait, latin-1 encoded\n' >"$tmp/latin1.txt"
expect 2 "latin1.txt: is not UTF-8 text" -- eval --model "$m" --text "$tmp/latin1.txt" --quiet
python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<6i", 1, 5, 6, 7, 4096, 8))' >"$tmp/big.tokens"
expect 2 "big.tokens: token 4 is 4096, outside the model's vocabulary of 4096" -- eval --model "$m" --tokens "$tmp/big.tokens" --quiet
cp "$m/text/eval.txt" "$tmp/text.tokens"
expect 2 "text.tokens: looks like text, not a token file" -- eval --model "$m" --tokens "$tmp/text.tokens" --quiet
expect 2 "nope.tokens: cannot open" -- eval --model "$m" --tokens "$tmp/nope.tokens" --quiet
head -c 20 "$tmp/eval.tokens" >"$tmp/short.tokens"
expect 2 "short.tokens: 5 tokens, fewer than one window.*longer token file" -- eval --model "$m" --tokens "$tmp/short.tokens" --seqlen 8 --quiet
expect 2 "out.txt: name the token file" -- tokenize --model "$m" --text "$m/text/eval.txt" --out "$tmp/out.txt"
expect 2 "eval.tokens: is a token file .*already holds tokens" -- tokenize --model "$m" --text "$tmp/eval.tokens" --out "$tmp/x.tokens"
cp "$m/text/eval.txt" "$tmp/same.bin"
expect 2 "is the --text file" -- tokenize --model "$m" --text "$tmp/same.bin" --out "$tmp/same.bin"
: >"$tmp/empty.txt"
expect 2 "empty.txt: is empty" -- tokenize --model "$m" --text "$tmp/empty.txt" --out "$tmp/x.tokens"
[[ ! -e "$tmp/x.tokens" ]] || { echo "FAIL: a refused tokenize wrote its --out"; fails=$((fails + 1)); }
"$QSHARD_BIN" --help | grep -q "tokenize" || { echo "FAIL: --help does not list tokenize"; fails=$((fails + 1)); }
"$QSHARD_BIN" eval --help | grep -q -- "--tokens" || { echo "FAIL: eval --help lacks --tokens"; fails=$((fails + 1)); }
"$QSHARD_BIN" --help | grep -q "eval" || { echo "FAIL: --help does not list eval"; fails=$((fails + 1)); }
"$QSHARD_BIN" eval --help | grep -q -- "--reference" || { echo "FAIL: eval --help"; fails=$((fails + 1)); }
[[ $fails -eq 0 ]] && echo PASS || exit 1
