#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite. Extra arguments go to pytest.
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
  -h|--help)
    cat <<USAGE
usage: $(basename "$0") [--fast] [pytest arguments, e.g. tests/test_cli.py -q]

Set up .venv (scripts/setup_env.sh, idempotent) and run the test suite with pytest; the
arguments go to pytest (\`.venv/bin/python -m pytest --help\` lists them).
  --fast   the edit-loop tier: leave out the tests marked slow (-m "not slow": training
           subprocesses, DDP, the demo, browsers, the GPU-check dry run); CI runs everything.
USAGE
    exit 0 ;;
esac
FAST=()
if [ "${1:-}" = "--fast" ]; then
  shift
  FAST=(-m "not slow")
fi
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$ROOT/.venv/bin/python" -m pytest ${FAST[@]+"${FAST[@]}"} "$@"
