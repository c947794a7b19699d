#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): every CUDA path run once and the headline figures measured.
#
#   bash bench/gpu_check.sh --prepare      # here: download the wheels the GPU machine lacks into
#                                          # .cache/gpu_wheels and check what travels fits in 64 MiB
#   bash bench/gpu_check.sh                # there: install them, then bench/gpu_check.py --device cuda
#                                          # into $OUT (or --out DIR), ~8 minutes
#   bash bench/gpu_check.sh --dry-run      # here, CPU, tiny settings: the wiring and the report files
#
# Other arguments go to bench/gpu_check.py (--only env,tests  --budget 480  --out DIR).
# Environment: PYTHON (interpreter; default python3 there, .venv/bin/python for --dry-run),
#   GPU_WHEELS (the pinned packages --prepare downloads), GPU_PYVER (their Python, default 3.12).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS=.cache/gpu_wheels
LIMIT_MIB=64
# The device image (docs/gpu.md) has torch, torchvision, numpy, timm, onnx, onnxruntime, ...; not these.
# Versions: those the project is tested with here; torchcodec matched to the device's torch 2.11.
GPU_WHEELS="${GPU_WHEELS:-open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==1.0.2 braceexpand==0.1.7 av==18.1.0 torchcodec==0.11.1}"
GPU_PYVER="${GPU_PYVER:-3.12}"

mode=device
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry ;;
    --device) shift; [ "${1:-}" = cpu ] && mode=dry || args+=(--device "${1:-}") ;;
    --device=cpu) mode=dry ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

travelling_bytes() {  # what a run call sends: tracked and untracked-not-ignored files, plus the wheels
  local tree wheels
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
  wheels=$(find "$WHEELS" -type f -name '*.whl' -exec stat -c %s {} + 2>/dev/null | awk '{s+=$1} END {print s+0}')
  echo "$tree $wheels"
}

if [ "$mode" = prepare ]; then
  PY="${PYTHON:-python3}"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYVER" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
      -d "$WHEELS" $GPU_WHEELS 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    || { echo "error: pip download failed for: $GPU_WHEELS" >&2; exit 1; }
  read -r tree wheels < <(travelling_bytes)
  total=$((tree + wheels))
  ls -l "$WHEELS"
  awk -v t="$tree" -v w="$wheels" -v l="$LIMIT_MIB" \
    'BEGIN {printf "travels: tree %.1f MiB + wheels %.1f MiB = %.1f MiB of %d MiB\n", t/2^20, w/2^20, (t+w)/2^20, l}'
  if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "error: over the ${LIMIT_MIB} MiB a run call carries: drop a wheel from GPU_WHEELS (av is the largest)" >&2
    exit 1
  fi
  echo 'then: run(command="bash bench/gpu_check.sh", carry=[".cache/gpu_wheels"], timeout_s=590)'
  exit 0
fi

if [ "$mode" = dry ]; then
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  has_out=0
  for a in "${args[@]}"; do [ "$a" = --out ] || [[ "$a" == --out=* ]] && has_out=1; done
  [ "$has_out" = 1 ] || args+=(--out "$ROOT/.cache/gpu_check_dry")
  exec "$PY" bench/gpu_check.py --dry-run --device cpu "${args[@]}"
fi

# on the GPU machine
PY="${PYTHON:-python3}"
has_out=0
for a in "${args[@]}"; do [ "$a" = --out ] || [[ "$a" == --out=* ]] && has_out=1; done
if [ "$has_out" = 0 ]; then
  [ -n "${OUT:-}" ] || { echo "error: no --out DIR and no \$OUT (the run tool sets OUT on the GPU machine)" >&2; exit 2; }
  args+=(--out "$OUT")
fi
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=/tmp/gpu_check_site
  # one wheel at a time: one that does not suit this Python (torchcodec is built per version) stops only itself
  for whl in "$WHEELS"/*.whl; do
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$whl" 2>/tmp/gpu_check_pip.err; then
      echo "[gpu_check.sh] installed $(basename "$whl")"
    else
      echo "[gpu_check.sh] could not install $(basename "$whl"): $(tail -n 1 /tmp/gpu_check_pip.err)" >&2
    fi
  done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "[gpu_check.sh] no wheels in $WHEELS (run 'bash bench/gpu_check.sh --prepare' here and carry .cache/gpu_wheels)" >&2
fi
exec "$PY" bench/gpu_check.py --device cuda "${args[@]}"
