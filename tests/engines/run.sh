#!/usr/bin/env bash
# Runs check_engines.py GROUP... with the engines venv's python (launch/engines_venv.sh).
# A missing venv fails, naming the script that makes it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${QSHARD_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
if ! py=$("$src/launch/engines_venv.sh" --python); then
  echo "FAIL: no engines venv (see the line above)"
  exit 1
fi
exec "$py" "$here/check_engines.py" "$@"
