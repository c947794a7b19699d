#!/usr/bin/env bash
# Usage: bash scripts/run_test.sh CONFIG WEIGHTS [extra args for test.py]
#   e.g. bash scripts/run_test.sh configs/k400/k400_train_rgb_vitb-32-f8.yaml k400-vitb-32-f8.pt --test_crops 3 --test_clips 4
# One process per local GPU through torchrun (one process on a machine without a GPU).
# NPROC=N (or GPUS=N, as run_train.sh) overrides the process count; ENTRY=test_zeroshot.py runs the
# zero-shot protocol instead (scripts/run_test_zeroshot.sh does that). torchrun --standalone picks a free rendezvous port, so
# several runs can share a machine (the original used fixed port 1238).
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WEIGHTS [extra args]" >&2; exit 2
fi
CONFIG="$1"; WEIGHTS="$2"; shift 2
if [ ! -f "$CONFIG" ]; then echo "error: config file not found: $CONFIG" >&2; exit 1; fi
if [ ! -f "$WEIGHTS" ]; then echo "error: weights file not found: $WEIGHTS" >&2; exit 1; fi
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python
ENTRY="${ENTRY:-test.py}"
NPROC="${NPROC:-${GPUS:-}}"
if [ -z "$NPROC" ]; then
  NPROC="$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')"
fi
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
  "$ROOT/$ENTRY" --config "$CONFIG" --weights "$WEIGHTS" "$@"
