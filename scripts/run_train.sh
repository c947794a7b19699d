#!/usr/bin/env bash
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() {
  cat <<USAGE
usage: $(basename "$0") CONFIG [train.py options, e.g. --opts solver.epochs=5 --precision bf16]

Train on this machine with torchrun: one process per visible GPU (1 process without CUDA).
The run folder is exp/<dataset>/<arch>/<timestamp> unless --output DIR is given; paths are
relative to the current folder. \`python train.py --help\` lists train.py's options.
A failure prints one line (the first failing rank's); --debug also shows its traceback.

Environment:
  GPUS         processes (default: all visible GPUs, 1 without CUDA)
  MASTER_PORT  rendezvous port (default: a free port)
  PYTHON       interpreter (default: .venv/bin/python)
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 1 ]; then
  usage >&2; exit 2
fi
CONFIG="$1"; shift
if [ ! -f "$CONFIG" ]; then
  echo "error: config file not found: $CONFIG" >&2; exit 1
fi
. "$ROOT/scripts/processes.sh"  # $PY and $GPUS
PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
NOW="$(date +%Y%m%d_%H%M%S)"
echo "[run_train] $GPUS process(es), port $PORT, config $CONFIG"
# utils.launch: torchrun that reports a failed rank in one line (not torchrun's ChildFailedError block)
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m utils.launch --nnodes=1 --nproc_per_node="$GPUS" \
  --master_addr=127.0.0.1 --master_port="$PORT" \
  "$ROOT/train.py" --config "$CONFIG" --log_time "$NOW" "$@"
