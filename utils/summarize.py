"""Mean ± std of the metrics of several `results.json` files (e.g. the three K600 zero-shot splits).

    python -m utils.summarize exp/test/k600_zero_shot_split{1,2,3}/*/results.json

Every numeric metric present in all files is summarised (nested keys are dotted, e.g.
`half_classes.top1_mean` of test_zeroshot.py's results); bookkeeping numbers (video counts,
timings, seeds) are left out. The std is the population std (ddof 0, as the half-classes
protocol) unless `--ddof 1` is given.
"""

from __future__ import annotations

import argparse

from utils.cli import cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("python -m utils.summarize", __doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="results.json files written by test.py / test_zeroshot.py")
    p.add_argument("--ddof", type=int, default=0, help="0: population std (default); 1: sample std")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


# --help answers here, before numpy is imported; the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.config_schema import flatten
from utils.errors import UserError, run_cli

METRIC_NAMES = ("top1", "top5", "mean_class_accuracy", "mAP", "top1_mean", "top5_mean")


def load_results(path: str | Path) -> dict[str, float]:
    """The metrics of one results.json, flattened to dotted names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        tree = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: expected a JSON object")
    return {
        k: float(v)
        for k, v in flatten(tree).items()
        if k.rsplit(".", 1)[-1] in METRIC_NAMES and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def summarize(paths: Sequence[str | Path], ddof: int = 0) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n, values...}} over the metrics that every file has."""
    if not paths:
        raise UserError("give at least one results.json")
    if ddof >= len(paths) and ddof > 0:
        raise UserError(f"--ddof {ddof} needs more than {ddof} files")
    runs = [load_results(p) for p in paths]
    common = [k for k in runs[0] if all(k in r for r in runs[1:])]
    if not common:
        raise UserError("no metric is present in every file: " + ", ".join(str(p) for p in paths))
    out = {}
    for key in common:
        vals = np.array([r[key] for r in runs])
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=ddof)),
            "n": len(vals),
            "values": vals.tolist(),
        }
    return out


def format_table(summary: dict[str, dict[str, Any]], paths: Sequence[str | Path]) -> str:
    width = max(len(k) for k in summary)
    lines = [f"{len(paths)} result file(s):"] + [f"  [{i}] {p}" for i, p in enumerate(paths)]
    for key, s in summary.items():
        vals = " ".join(f"{v:.2f}" for v in s["values"])
        lines.append(f"{key:<{width}}  {s['mean']:.2f} ± {s['std']:.2f}   ({vals})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    summary = summarize(a.results, a.ddof)
    print(json.dumps(summary, indent=2) if a.json else format_table(summary, a.results))


if __name__ == "__main__":
    run_cli(main)
