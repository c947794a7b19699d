#!/usr/bin/env bash
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# run_test_zeroshot.sh runs this script with ENTRY=test_zeroshot.py and its own name in SCRIPT_NAME
ENTRY="${ENTRY:-test.py}"
NAME="${SCRIPT_NAME:-$(basename "$0")}"
case "$ENTRY" in
  test_zeroshot.py) EXAMPLE="configs/ucf101/ucf_zero_shot.yaml k400-vitl-14-f8.pt --protocol all" ;;
  *) EXAMPLE="configs/k400/k400_train_rgb_vitb-32-f8.yaml k400-vitb-32-f8.pt --test_crops 3 --test_clips 4" ;;
esac
usage() {
  cat <<USAGE
usage: $NAME CONFIG WEIGHTS [$ENTRY options]
  e.g. $NAME $EXAMPLE

Evaluate WEIGHTS with $ENTRY through torchrun: one process per local GPU (one process on a
machine without a GPU); every video is counted once over all processes. torchrun --standalone
picks a free rendezvous port, so several runs can share a machine. \`python $ENTRY --help\` lists
$ENTRY's options. A failure prints one line (the first failing rank's); --debug also shows its
traceback.

Environment:
  NPROC (or GPUS)  processes (default: all visible GPUs, 1 without CUDA)
  PYTHON           interpreter (default: .venv/bin/python)
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ]; then
  usage >&2; exit 2
fi
CONFIG="$1"; WEIGHTS="$2"; shift 2
if [ ! -f "$CONFIG" ]; then echo "error: config file not found: $CONFIG" >&2; exit 1; fi
if [ ! -e "$WEIGHTS" ]; then echo "error: weights file not found: $WEIGHTS" >&2; exit 1; fi
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python
NPROC="${NPROC:-${GPUS:-}}"
if [ -z "$NPROC" ]; then
  NPROC="$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')"
fi
case "$NPROC" in ''|*[!0-9]*|0) echo "error: NPROC (or GPUS) must be a number of processes >= 1, got '$NPROC'" >&2; exit 2 ;; esac
# utils.launch: torchrun that reports a failed rank in one line (not torchrun's ChildFailedError block)
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m utils.launch --standalone --nproc_per_node="$NPROC" \
  "$ROOT/$ENTRY" --config "$CONFIG" --weights "$WEIGHTS" "$@"
