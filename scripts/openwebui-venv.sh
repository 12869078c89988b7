#!/usr/bin/env bash
# A real Open WebUI for the test suite, in its own venv outside the repo, cached between runs.
# Prints the venv's path. Installs only when bin/open-webui is missing or broken; a marker file
# is written after an install (or a check) succeeded. Fails loudly: the tests need it.
#
#   OLLAFLEET_CACHE   cache folder (default ~/.cache/ollafleet); the venv is owui-<version> in it
set -euo pipefail

VERSION=0.12.4
CACHE="${OLLAFLEET_CACHE:-$HOME/.cache/ollafleet}"
VENV="$CACHE/owui-$VERSION"
MARKER="$VENV/.ollafleet-ok"

fail() { echo "openwebui-venv: error: $*" >&2; exit 1; }

healthy() {
    [[ -x "$VENV/bin/open-webui" && -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - "$VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata, importlib.util, sys
assert importlib.metadata.version("open-webui") == sys.argv[1]
assert importlib.util.find_spec("open_webui") is not None
EOF
}

if [[ -f "$MARKER" ]] && healthy; then
    echo "$VENV"
    exit 0
fi

mkdir -p "$CACHE" || fail "cannot create $CACHE"
# One install at a time, even when two test runs start together.
exec 9>"$CACHE/owui-$VERSION.lock"
flock 9

if healthy; then                 # installed meanwhile, or installed before markers existed
    touch "$MARKER"
    echo "$VENV"
    exit 0
fi

PY="$(command -v python3.11 || true)"
[[ -n "$PY" ]] || fail "python3.11 is needed (open-webui $VERSION supports Python 3.11 and 3.12)"

echo "openwebui-venv: installing open-webui==$VERSION into $VENV (a few minutes, about 7 GB)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV" || fail "python3.11 -m venv $VENV failed"
log="$CACHE/owui-$VERSION-install.log"
if ! "$VENV/bin/pip" install --disable-pip-version-check "open-webui==$VERSION" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "pip install open-webui==$VERSION failed (full log: $log)"
fi
healthy || fail "open-webui==$VERSION installed but does not import (log: $log)"
touch "$MARKER"
echo "$VENV"
