#!/usr/bin/env bash
# Offline demo, CPU only: about 5 minutes on 2 cores, 7 with the first set-up of .venv:
#   1. set up .venv (scripts/setup_env.sh, idempotent; skipped when PYTHON names an interpreter)
#   2. generate the synthetic action dataset into data/demo (skipped when the same one is there)
#   3. train a tiny CLIP-shaped model from random weights (configs/demo/demo_<head>.yaml)
#   4. multi-view test of the best checkpoint (3 crops x 2 clips) with test.py
#   5. print a summary (accuracy per head, output folders); each run folder holds report.html
# Usage: bash scripts/run_demo.sh [transf|meanp|both|compare]   (default transf)
#   compare: the paper's comparison, Text4Vis (frozen classifier, CE: demo_transf.yaml) against the
#   original's contrastive baseline (text tower in the loop, NCE loss: demo_nce.yaml) with the same
#   model, data and budget, then both side by side with python -m app.results (about 12 minutes)
# Environment: DEMO_DATA (default data/demo), DEMO_OUT (default exp/demo/<timestamp>),
#   PYTHON (an interpreter with text4vis's requirements, instead of .venv),
#   DEMO_OPTS (extra config overrides for training, e.g. "solver.epochs=2"),
#   DEMO_MOTIONS (pair kinds of the generated classes, default horizontal,scale,vertical).
# `sh script.sh` runs dash on Debian/Ubuntu: re-run this script under bash (POSIX-safe line).
[ -n "${BASH_VERSION:-}" ] || { command -v bash >/dev/null 2>&1 && exec bash "$0" "$@"; echo "error: $0 needs bash" >&2; exit 127; }
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
  -h|--help)  # the usage line, then the comment block at the top of this file without its '# '
    echo "usage: $(basename "$0") [transf|meanp|both|compare]   (default transf)"
    echo
    sed -n '2,/^# `sh/{/^# `sh/d;/^# Usage:/d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[0]}"
    exit 0 ;;
esac
cd "$ROOT"
HEADS="${1:-transf}"
[ "$HEADS" = "both" ] && HEADS="transf meanp"
[ "$HEADS" = "compare" ] && HEADS="transf nce"
for h in $HEADS; do
  [ -f "configs/demo/demo_$h.yaml" ] || { echo "error: unknown run '$h' (transf, meanp, both or compare)" >&2; exit 2; }
done
T0=$(date +%s)
[ -n "${PYTHON:-}" ] || bash scripts/setup_env.sh
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export HF_HUB_OFFLINE=1 PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"
DATA="${DEMO_DATA:-data/demo}"
OUT="${DEMO_OUT:-exp/demo/$(date +%Y%m%d_%H%M%S)}"
mkdir -p "$OUT"

GEN_ARGS=(--format frames --motions "${DEMO_MOTIONS:-horizontal,scale,vertical}" --videos-per-class 32
          --val-videos-per-class 16)
# $DATA/demo_args.txt records how the data was generated: other arguments regenerate it; lists
# that were not written by this script are used as they are
MARK="$DATA/demo_args.txt"
if [ ! -f "$DATA/train.txt" ] || [ ! -f "$DATA/val.txt" ] || [ ! -f "$DATA/labels.csv" ] \
   || { [ -f "$MARK" ] && [ "$(cat "$MARK")" != "${GEN_ARGS[*]}" ]; }; then
  echo "[demo] generating the synthetic dataset into $DATA"
  "$PY" -m datasets.synthetic --out "$DATA" "${GEN_ARGS[@]}"
  echo "${GEN_ARGS[*]}" > "$MARK"
elif [ ! -f "$MARK" ]; then
  echo "[demo] using the lists already in $DATA (delete the folder to regenerate)"
fi
DATA_OPTS=(data.train_root="$DATA/frames" data.val_root="$DATA/frames" data.train_list="$DATA/train.txt"
           data.val_list="$DATA/val.txt" data.label_list="$DATA/labels.csv")

for h in $HEADS; do
  CFG="configs/demo/demo_$h.yaml"
  echo "[demo] training ($h): $CFG -> $OUT/$h"
  # shellcheck disable=SC2086
  "$PY" train.py --config "$CFG" --output "$OUT/$h" --opts "${DATA_OPTS[@]}" ${DEMO_OPTS:-}
  W="$OUT/$h/model_best.pt"
  if [ ! -f "$W" ]; then  # train.py keeps a best model only once validation rises above 0 %
    echo "[demo] no model_best.pt (validation top-1 stayed at 0 %): testing last_model.pt"
    W="$OUT/$h/last_model.pt"
  fi
  echo "[demo] multi-view test ($h): 3 crops x 2 clips"
  # shellcheck disable=SC2086
  "$PY" test.py --config "$CFG" --weights "$W" --test_crops 3 --test_clips 2 \
    --output "$OUT/$h/test_3x2" --opts "${DATA_OPTS[@]}" ${DEMO_OPTS:-}
  "$PY" -m app.report "$OUT/$h"  # the run's page (train.py wrote it) again, now with its test
done

T1=$(date +%s)
"$PY" - "$OUT" "$((T1 - T0))" $HEADS <<'PYEOF'
import csv, json, sys
from pathlib import Path
out, seconds, heads = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
print("\n" + "=" * 72)
print(f"Text4Vis offline demo: {seconds // 60} min {seconds % 60} s; run folder {out}")
for h in heads:
    rows = list(csv.DictReader(open(out / h / "metrics.csv")))
    best = max(float(r["val_top1"]) for r in rows if r.get("val_top1"))
    res_path = out / h / "test_3x2" / "results.json"
    res = json.loads(res_path.read_text()) if res_path.is_file() else {}
    test = f"{res['top1']:.1f} % top-1, {res['top5']:.1f} % top-5" if res else "no result"
    print(f"  {h:7s} val top-1 (1 view, best epoch) {best:5.1f} %   test 3 crops x 2 clips: {test}")
    print(f"          {out / h}/ (report.html, log.txt, metrics.csv, curves.png, model_best.pt)")
print("=" * 72)
PYEOF
if [ "$#" -gt 0 ] && [ "$1" = "compare" ]; then
  echo "[demo] side by side (python -m app.results; also $OUT/compare.md, $OUT/compare.csv):"
  # shellcheck disable=SC2086
  "$PY" -m app.results $(for h in $HEADS; do echo "$OUT/$h"; done) --md "$OUT/compare.md" --csv "$OUT/compare.csv"
  # shellcheck disable=SC2046
  "$PY" -m app.report $(for h in $HEADS; do echo "$OUT/$h"; done) --out "$OUT/compare.html"
fi
