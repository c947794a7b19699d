#!/usr/bin/env bash
# Multi-node training: run once on every machine with the same environment.
#   MASTER_ADDR=10.0.0.1 NNODES=2 scripts/run_train_multinodes.sh CONFIG NODE_RANK [train.py args]
# Environment: MASTER_ADDR (required: address of node 0), MASTER_PORT (default 29500),
# NNODES (required), GPUS (processes per node; default all visible GPUs), PYTHON.
# Scale solver.lr with the global batch if you change the number of GPUs (as the original advised).
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: MASTER_ADDR=HOST NNODES=N $0 CONFIG NODE_RANK [train.py args]" >&2; exit 2
fi
CONFIG="$1"; NODE_RANK="$2"; shift 2
if [ ! -f "$CONFIG" ]; then
  echo "error: config file not found: $CONFIG" >&2; exit 1
fi
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
: "${NNODES:?set NNODES to the number of machines}"
MASTER_PORT="${MASTER_PORT:-29500}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ -z "${GPUS:-}" ]; then
  GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
  [ "$GPUS" -ge 1 ] 2>/dev/null || GPUS=1
fi
echo "[run_train_multinodes] node $NODE_RANK/$NNODES, $GPUS process(es), master $MASTER_ADDR:$MASTER_PORT"
exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$ROOT/train.py" --config "$CONFIG" --log_time "$(date +%Y%m%d_%H%M)" "$@"
