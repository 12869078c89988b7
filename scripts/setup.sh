#!/usr/bin/env bash
# Create .venv (Python 3.11 or 3.12) and install ollafleet with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
pick_python() {
  for p in python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))'; then
      echo "$p"; return 0
    fi
  done
  echo "ollafleet needs Python 3.11 or 3.12 on PATH" >&2; return 1
}
if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.ollafleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
