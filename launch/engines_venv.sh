#!/usr/bin/env bash
# The engines' test venv for tests/engines (transformers 5 + compressed-tensors, GPTQModel,
# llm-compressor on PyPI's torch 2.10), outside the clone, keyed by the hash of the pinned
# list launch/engines-requirements.txt:
#   ${QSHARD_CACHE:-~/.cache/qshard}/venv-engines-KEY
# Separate from .venv (Debian's torch 1.13, whose transformers 4.44 the other checks use):
# these engines need torch >= 2.8 and transformers 5. launch/setup.sh calls this script.
#
#   launch/engines_venv.sh           make the venv when missing (~7.5 GB, ~5 min; a no-op when
#                                    present); other venv-engines-* (older pins) are removed
#   launch/engines_venv.sh --python  print the venv's python; exit 1 naming this script when
#                                    it is not made
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${QSHARD_CACHE:-$HOME/.cache/qshard}
req=$root/launch/engines-requirements.txt
key=$(sha256sum "$req" | cut -c1-12)
venv=$cache/venv-engines-$key

# .complete is written last, so a venv whose install was cut off is made again.
if [[ ${1:-} == --python ]]; then
  if [[ ! -f $venv/.complete ]]; then
    echo "the engines venv $venv is missing: run launch/engines_venv.sh (launch/setup.sh runs it)" >&2
    exit 1
  fi
  echo "$venv/bin/python"
  exit 0
fi
[[ -f $venv/.complete ]] && exit 0

echo "engines_venv: making $venv (PyPI torch with its CUDA libraries: ~7.5 GB, ~5 min)"
mkdir -p "$cache"
for old in "$cache"/venv-engines-*; do
  [[ -d $old && $old != "$venv" ]] && rm -rf "$old"
done
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
touch "$venv/.complete"
