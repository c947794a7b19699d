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
Tests run in parallel, one pytest-xdist worker per CPU core, one thread each; TEST_WORKERS=N
sets the number of workers (0: all in this process, e.g. for pdb).
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
WORKERS="${TEST_WORKERS:-auto}"
# Most of the suite's time is spent in child processes starting Python and torch: one worker per
# core, each torch single-threaded, finishes the suite in about half the time of one process. Each
# test file stays on one worker, so a file's expensive fixtures (a trained run, exports) are built once.
[ "$WORKERS" = 0 ] && threads=2 || threads=1
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}"
exec "$ROOT/.venv/bin/python" -m pytest -n "$WORKERS" --dist loadfile ${FAST[@]+"${FAST[@]}"} "$@"
