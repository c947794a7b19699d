# Sourced (not run) by run_train.sh and run_train_multinodes.sh, after they set ROOT: the
# interpreter ($PY) and the number of processes on this machine ($GPUS: as given, else one per
# visible GPU, 1 without CUDA), checked once here for both launchers.
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ -z "${GPUS:-}" ]; then
  GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
  [ "$GPUS" -ge 1 ] 2>/dev/null || GPUS=1
fi
case "$GPUS" in ''|*[!0-9]*|0) echo "error: GPUS must be a number of processes >= 1, got '$GPUS'" >&2; exit 2 ;; esac
