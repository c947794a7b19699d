#!/usr/bin/env bash
# Zero-shot evaluation with test_zeroshot.py, launched as scripts/run_test.sh launches test.py.
#   e.g. bash scripts/run_test_zeroshot.sh configs/ucf101/ucf_zero_shot.yaml k400-vitl-14-f8.pt --protocol all
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ENTRY=test_zeroshot.py SCRIPT_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/run_test.sh" "$@"
