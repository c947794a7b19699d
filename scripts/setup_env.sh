#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it.
# Idempotent: a second run with unchanged requirements only checks a stamp and returns.
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
# torchcodec builds are tied to one torch version: change the three together.
TORCH_PIN="${TORCH_PIN:-torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0}"

stamp_src() { cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml"; echo "$TORCH_PIN"; }
want="$(stamp_src | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.text4vis-stamp"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import torch, open_clip" 2>/dev/null; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# This machine's pip.conf names local package folders that may be absent: drop those warnings only.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if ! "$VENV/bin/python" -c "import torch, torchvision, torchcodec" 2>/dev/null; then
  echo "[setup_env] installing $TORCH_PIN (large; about 2 minutes)"
  quiet "${PIP[@]}" install -q $TORCH_PIN
fi
echo "[setup_env] installing text4vis and its dependencies into $VENV"
quiet "${PIP[@]}" install -q -e "$ROOT[dev]"

# torchcodec (the fastest video decoder) needs FFmpeg's shared libraries (4 to 8), which pip cannot
# install. As root with apt (our machines, CI) install the distribution's; otherwise say so: videos
# are then decoded with decord or PyAV (PyAV bundles its own FFmpeg), the same pixels, slower.
tc_ok() { "$VENV/bin/python" -c "from torchcodec.decoders import VideoDecoder" >/dev/null 2>&1; }
if ! tc_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup_env] installing FFmpeg's shared libraries for torchcodec (apt-get)"
    find_pkgs() {
      for lib in libavcodec libavformat libavutil libswscale libswresample libavfilter libavdevice; do
        apt-cache search --names-only "^${lib}[0-9]+\$" 2>/dev/null | awk '{print $1}' | grep -E "^${lib}[0-9]+$" | sort -V | tail -n 1
      done
    }
    pkgs="$(find_pkgs)"
    [ -n "$pkgs" ] || { apt-get update -qq >/dev/null 2>&1 || true; pkgs="$(find_pkgs)"; }
    if [ -n "$pkgs" ]; then
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || true; }
    fi
  fi
  if tc_ok; then
    echo "[setup_env] torchcodec loads FFmpeg: videos are decoded with torchcodec"
  else
    echo "[setup_env] torchcodec cannot load FFmpeg's shared libraries (install them as root, e.g." \
         "apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 libavdevice59);" \
         "videos are decoded with decord or PyAV instead (data.decoder: auto)"
  fi
fi
echo "$want" > "$stamp"
