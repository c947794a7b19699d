#!/usr/bin/env bash
# Train on this machine with torchrun: one process per visible GPU (1 process on CPU).
#   scripts/run_train.sh CONFIG [train.py args, e.g. --opts solver.epochs=5 --precision bf16]
# Environment: GPUS (processes; default all visible GPUs, 1 without CUDA), MASTER_PORT (default: a
# free port), PYTHON (default .venv/bin/python). The run folder is exp/<dataset>/<arch>/<timestamp>
# unless --output DIR is given; paths are relative to the current folder.
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG [train.py args]" >&2; exit 2
fi
CONFIG="$1"; shift
if [ ! -f "$CONFIG" ]; then
  echo "error: config file not found: $CONFIG" >&2; exit 1
fi
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ -z "${GPUS:-}" ]; then
  GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
  [ "$GPUS" -ge 1 ] 2>/dev/null || GPUS=1
fi
PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
NOW="$(date +%Y%m%d_%H%M%S)"
echo "[run_train] $GPUS process(es), port $PORT, config $CONFIG"
exec "$PY" -m torch.distributed.run --nnodes=1 --nproc_per_node="$GPUS" \
  --master_addr=127.0.0.1 --master_port="$PORT" \
  "$ROOT/train.py" --config "$CONFIG" --log_time "$NOW" "$@"
