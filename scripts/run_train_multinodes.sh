#!/usr/bin/env bash
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() {
  cat <<USAGE
usage: MASTER_ADDR=HOST NNODES=N $(basename "$0") CONFIG NODE_RANK [train.py options]

Multi-node training: run once on every machine with the same environment, NODE_RANK 0 on the
machine at MASTER_ADDR. Scale solver.lr with the global batch if you change the number of GPUs
(as the original advised). \`python train.py --help\` lists train.py's options. A failure prints
one line (the first failing rank's on this node); --debug also shows its traceback.

Environment:
  MASTER_ADDR  address of node 0 (required)
  NNODES       number of machines (required)
  MASTER_PORT  rendezvous port (default 29500)
  GPUS         processes per node (default: all visible GPUs, 1 without CUDA)
  PYTHON       interpreter (default: .venv/bin/python)
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ]; then
  usage >&2; exit 2
fi
CONFIG="$1"; NODE_RANK="$2"; shift 2
if [ ! -f "$CONFIG" ]; then
  echo "error: config file not found: $CONFIG" >&2; exit 1
fi
[ -n "${MASTER_ADDR:-}" ] || { echo "error: set MASTER_ADDR to the address of node 0" >&2; exit 2; }
[ -n "${NNODES:-}" ] || { echo "error: set NNODES to the number of machines" >&2; exit 2; }
MASTER_PORT="${MASTER_PORT:-29500}"
. "$ROOT/scripts/processes.sh"  # $PY and $GPUS
case "$NNODES" in ''|*[!0-9]*|0) echo "error: NNODES must be a number of machines >= 1, got '$NNODES'" >&2; exit 2 ;; esac
case "$NODE_RANK" in ''|*[!0-9]*) echo "error: NODE_RANK must be 0..NNODES-1, got '$NODE_RANK'" >&2; exit 2 ;; esac
[ "$NODE_RANK" -lt "$NNODES" ] || { echo "error: NODE_RANK must be 0..NNODES-1, got '$NODE_RANK' with NNODES=$NNODES" >&2; exit 2; }
echo "[run_train_multinodes] node $NODE_RANK/$NNODES, $GPUS process(es), master $MASTER_ADDR:$MASTER_PORT"
# utils.launch: torchrun that reports a failed rank in one line (not torchrun's ChildFailedError block)
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m utils.launch --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --nproc_per_node="$GPUS" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$ROOT/train.py" --config "$CONFIG" --log_time "$(date +%Y%m%d_%H%M)" "$@"
