#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it.
# Idempotent: a second run with unchanged requirements only checks a stamp and returns.
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.14.1 torchvision==0.29.1}"

stamp_src() { cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml"; echo "$TORCH_PIN"; }
want="$(stamp_src | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.text4vis-stamp"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import torch, open_clip" 2>/dev/null; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# This machine's pip.conf names local package folders that may be absent: drop those warnings only.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup_env] installing $TORCH_PIN (large; about 2 minutes)"
  quiet "${PIP[@]}" install -q $TORCH_PIN
fi
echo "[setup_env] installing text4vis and its dependencies into $VENV"
quiet "${PIP[@]}" install -q -e "$ROOT[dev]"
echo "$want" > "$stamp"
