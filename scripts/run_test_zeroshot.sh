#!/usr/bin/env bash
# Usage: bash scripts/run_test_zeroshot.sh CONFIG WEIGHTS [extra args for test_zeroshot.py]
#   e.g. bash scripts/run_test_zeroshot.sh configs/ucf101/ucf_zero_shot.yaml k400-vitl-14-f8.pt
# Same launcher as scripts/run_test.sh (one process per local GPU; NPROC/GPUS override).
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ENTRY=test_zeroshot.py exec bash "$(dirname "${BASH_SOURCE[0]}")/run_test.sh" "$@"
