#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it.
# Idempotent: a second run with unchanged requirements only checks a stamp and returns.
# Usage: bash scripts/setup_env.sh [--with-browser]
#   --with-browser: also Debian's chromium (apt-get, as root), with which tests/test_report.py opens
#   the run report in a real browser (skipped without it, except under TEXT4VIS_CI=1).
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
# torchcodec builds are tied to one torch version: change the three together.
TORCH_PIN="${TORCH_PIN:-torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0}"

WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) WITH_BROWSER=1 ;;
    *) echo "error: unknown argument '$arg' (usage: bash scripts/setup_env.sh [--with-browser])" >&2; exit 2 ;;
  esac
done
if [ "$WITH_BROWSER" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup_env] installing chromium (apt-get) for the report's browser test"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { echo "[setup_env] error: apt-get install chromium failed" >&2; exit 1; }
  else
    echo "[setup_env] --with-browser: no chromium here; as root: apt-get install -y chromium"
  fi
fi

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
# install; its import succeeds without them, so it is checked by decoding a frame of a tiny clip
# (datasets.video_reader.decoder_problem, what `data.decoder: auto` uses). As root with apt (our
# machines, CI) the distribution's libraries are installed and the check repeated; otherwise one
# line says which decoder videos will use (decord or PyAV: the same pixels, slower) and the command
# that enables torchcodec.
probe() {  # two lines: the decoder `auto` takes here, and why torchcodec cannot run (empty: it can)
  (cd "$ROOT" && "$VENV/bin/python" -c "from datasets.video_reader import available_decoders as a, decoder_problem as p
print((a() or ['no decoder'])[0]); print(p('torchcodec') or '')" 2>/dev/null) || printf 'PyAV\nthe decoder check failed\n'
}
ffmpeg_pkgs() {
  for lib in libavcodec libavformat libavutil libswscale libswresample libavfilter libavdevice; do
    apt-cache search --names-only "^${lib}[0-9]+\$" 2>/dev/null | awk '{print $1}' | grep -E "^${lib}[0-9]+$" | sort -V | tail -n 1
  done | tr '\n' ' ' | sed 's/ *$//'
}
{ read -r chosen; read -r problem; } < <(probe)
if [ -n "$problem" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup_env] torchcodec cannot decode yet: installing FFmpeg's shared libraries (apt-get)"
  pkgs="$(ffmpeg_pkgs)"
  [ -n "$pkgs" ] || { apt-get update -qq >/dev/null 2>&1 || true; pkgs="$(ffmpeg_pkgs)"; }
  if [ -n "$pkgs" ]; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || true; }
  fi
  { read -r chosen; read -r problem; } < <(probe)
fi
if [ -z "$problem" ]; then
  echo "[setup_env] videos are decoded with torchcodec (it decoded a test clip here)"
else
  if command -v apt-get >/dev/null 2>&1; then
    sudo="$([ "$(id -u)" = 0 ] || echo "sudo ")"
    pkgs="$(ffmpeg_pkgs)"
    fix="${sudo}apt-get update && ${sudo}apt-get install -y ${pkgs:-libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 libavdevice59}"
  else
    fix="install FFmpeg 4-8's shared libraries with your system's package manager"
  fi
  echo "[setup_env] videos will be decoded with $chosen, not torchcodec: ${problem%%; to use it,*}; to use torchcodec (faster), run: $fix"
fi
echo "$want" > "$stamp"
