#!/usr/bin/env bash
# Peak RSS of `qshard quantize --method rtn --format gguf:Q4_K_M --export gguf` with two
# binaries side by side (an older build that kept every tensor in memory until finish, and
# this one, which spools them to OUT as they arrive: docs/formats-gguf.md "Writing the
# file"), on the tiny model and SmolLM2-135M. Prints one table: peak RSS from
# /usr/bin/time -v, wall time, the file's size, and whether both binaries wrote the same
# model.gguf bytes.
#   bench/gguf_export_rss.sh OLD_QSHARD [NEW_QSHARD]      (NEW default build/qshard)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: bench/gguf_export_rss.sh OLD_QSHARD [NEW_QSHARD]}
new=${2:-$root/build/qshard}
tiny=$root/models/tiny-llama-gcide
smol=${QSHARD_SMOLLM2_DIR:-$HOME/.cache/qshard/smollm2-135m-instruct}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # model tag binary -> "rss_mib wall_s"
  local out=$tmp/$2
  /usr/bin/time -v -o "$out.time" "$3" quantize --model "$1" --out "$out" --calib "$tiny/text/calib.txt" \
    --n-calib 4 --calib-seqlen 128 --method rtn --format gguf:Q4_K_M --export gguf --quiet >/dev/null
  awk -F': ' '/Maximum resident/ {r = $2 / 1024} /Elapsed \(wall/ {n = split($2, t, ":"); w = 0;
              for (i = 1; i <= n; i++) w = w * 60 + t[i]} END {printf "%.1f %.1f", r, w}' "$out.time"
}
echo "# $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); old $old, new $new"
echo "| model | binary | peak RSS MiB | wall s | model.gguf MiB | same bytes as old |"
echo "|---|---|---|---|---|---|"
for m in "tiny:$tiny" "SmolLM2-135M:$smol"; do
  name=${m%%:*} dir=${m#*:}
  read -r r_old w_old <<<"$(run "$dir" "$name-old" "$old")"
  read -r r_new w_new <<<"$(run "$dir" "$name-new" "$new")"
  size=$(stat -c %s "$tmp/$name-new/model.gguf")
  same=no
  cmp -s "$tmp/$name-old/model.gguf" "$tmp/$name-new/model.gguf" && same=yes
  printf '| %s | old | %s | %s | %.2f | |\n' "$name" "$r_old" "$w_old" "$(echo "$size / 1048576" | bc -l)"
  printf '| %s | new | %s | %s | %.2f | %s |\n' "$name" "$r_new" "$w_new" "$(echo "$size / 1048576" | bc -l)" "$same"
done
