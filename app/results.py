"""The model-zoo table of a set of runs: `python -m app.results RUN_DIR_OR_RESULTS_JSON ... [--md F] [--csv F]`.

One row per `results.json` (test.py: top-1 / top-5 / mAP; test_zeroshot.py: full-class, half-class
and official-split top-1) given, or found at any depth below the given folders (`exp/` gives them
all); a training run folder (metrics.csv, config.yaml) without any in it gives one row of its best
train-time validation (T x 1 x 1). Each row also has the cost of
the model its config describes:

* **GFLOPs per view**: multiply-adds of one forward pass over one view (T frames at
  `data.input_size`: visual encoder per frame, temporal head, class logits) in units of 10^9, the
  convention of the papers in this field (ViT-B/32 at 224²: 4.41 per frame). Counted with
  `torch.utils.flop_counter.FlopCounterMode` on the meta device (no arithmetic is run); the
  counter counts 2 FLOPs per multiply-add, the table divides by 2. Per video: × views.
* **params (M)**: the video model that evaluation runs: visual encoder + temporal head +
  logit_scale; not the (C, D) class-embedding matrix, nor a text tower (its class embeddings are
  computed once).

The CSV holds the numbers of the results files unrounded; the Markdown rounds to 2 decimals.
"""

from __future__ import annotations

import argparse

from utils.cli import cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("python -m app.results", (__doc__ or "").split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="results.json files, or folders searched for them (run folders)")
    p.add_argument("--md", default=None, help="write the Markdown table here (it is printed either way)")
    p.add_argument("--csv", default=None, help="write the rows as CSV (numbers unrounded)")
    return p


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from app.load_weights import open_weights
from modules.model_builder import build_model
from utils.checkpoint import BEST, LAST
from utils.config import Config, load_config, replace
from utils.errors import UserError, run_cli
from utils.fileio import atomic_write_text

RESULTS = "results.json"
COLUMNS = (
    "run",
    "kind",
    "dataset",
    "arch",
    "head",
    "training",
    "views",
    "top1",
    "top5",
    "mAP",
    "zs_full_top1",
    "zs_half_top1",
    "zs_half_top1_std",
    "zs_splits_top1",
    "zs_splits_top1_std",
    "gflops_per_view",
    "num_views",
    "params_m",
    "source",
)
HEADERS = {
    "run": "run",
    "kind": "kind",
    "dataset": "dataset",
    "arch": "arch",
    "head": "head",
    "training": "training",
    "views": "frames×crops×clips",
    "top1": "top-1",
    "top5": "top-5",
    "mAP": "mAP",
    "zs_full_top1": "zero-shot full",
    "zs_half_top1": "zero-shot half",
    "zs_splits_top1": "zero-shot splits",
    "gflops_per_view": "GFLOPs/view",
    "params_m": "params (M)",
}
_cost_cache: dict[str, tuple[float, float]] = {}


def count_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of `module(*inputs)` (FlopCounterMode / 2) on the meta device: shapes only."""
    meta = module.to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # meta tensors also skip MHA's fused CPU path, which is not counted
        meta(*[x.to("meta") for x in inputs])
    return counter.get_total_flops() // 2


def model_cost(cfg: Config) -> tuple[float, float]:
    """(G multiply-adds per view, M parameters of visual + head + logit_scale) of `cfg`'s model."""
    net, data = cfg.network, cfg.data
    key = json.dumps([net.arch, net.sim_header, net.tm, net.joint_st, data.num_segments, data.input_size])
    if key not in _cost_cache:
        spec = replace(cfg, **{"network.pretrained": "none", "network.text_tower": False})
        spec = replace(spec, **{"network.classifier": "random", "network.n_emb": None})
        model = build_model(spec, ["a", "b"])  # random weights: the cost depends on shapes only
        params = sum(p.numel() for n, p in model.named_parameters() if n != "class_embeddings")
        view = torch.zeros(1, int(data.num_segments), 3, int(data.input_size), int(data.input_size))
        _cost_cache[key] = (count_macs(model, view) / 1e9, params / 1e6)
    return _cost_cache[key]


def _config_of(res: dict) -> Config | None:
    """The config a results.json was computed with: its weights' stored config, else its --config."""
    opts = [str(o) for o in res.get("opts", [])]
    weights = Path(str(res.get("weights", "")))
    if weights.is_file():
        try:
            cfg = open_weights(weights).stored_config(opts)
        except UserError:
            cfg = None
        if cfg is not None:
            return cfg
    config = Path(str(res.get("config", "")))
    return load_config(config, opts) if config.is_file() else None


def training(cfg: Config) -> str:
    """What the model was trained with, in a few words."""
    net = cfg.network
    if net.text_tower:
        return f"{cfg.solver.loss_type}, text tower {'frozen' if net.fix_text else 'trained'}"
    return f"{cfg.solver.loss_type}, {net.classifier} classifier {'frozen' if net.fix_text else 'trained'}"


def _run_name(res: dict, path: Path) -> str:
    weights = Path(str(res.get("weights", "")))
    return weights.parent.name if weights.name in (BEST, LAST) else (weights.stem or path.parent.name)


def row_from_results(path: Path) -> dict[str, Any]:
    """One table row from a results.json of test.py or test_zeroshot.py."""
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable results file ({err})") from None
    if not isinstance(res, dict):
        raise UserError(f"{path}: not a results file of test.py / test_zeroshot.py (not a JSON object)")
    row: dict[str, Any] = {
        "run": _run_name(res, path),
        "source": str(path),
        "dataset": res.get("dataset"),
        "arch": res.get("arch"),
        "views": res.get("view_layout"),
        "num_views": res.get("views"),
    }
    if "protocols" in res or "full_classes" in res:
        row["kind"] = "zero-shot"
        row["zs_full_top1"] = res.get("full_classes", {}).get("top1")
        row["zs_half_top1"] = res.get("half_classes", {}).get("top1_mean")
        row["zs_half_top1_std"] = res.get("half_classes", {}).get("top1_std")
        row["zs_splits_top1"] = res.get("splits", {}).get("top1_mean")
        row["zs_splits_top1_std"] = res.get("splits", {}).get("top1_std")
    else:
        row.update(kind="test", top1=res.get("top1"), top5=res.get("top5"), mAP=res.get("mAP"))
    return _with_model(row, _config_of(res))


def row_from_run_folder(folder: Path) -> dict[str, Any]:
    """A training run without results.json: its best train-time validation (1 view)."""
    with (folder / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_top1")]
    if not rows:
        raise UserError(f"{folder}/metrics.csv has no validation row yet")
    best = max(rows, key=lambda r: float(r["val_top1"]))
    cfg = load_config(folder / "config.yaml")
    row = {
        "run": folder.name,
        "kind": f"val (epoch {best['epoch']})",
        "source": str(folder / "metrics.csv"),
        "dataset": cfg.data.dataset,
        "arch": cfg.network.arch,
        "views": f"{cfg.data.num_segments}x1x1",
        "num_views": 1,
        "top1": float(best["val_top1"]),
        "top5": float(best["val_top5"]),
    }
    return _with_model(row, cfg)


def _with_model(row: dict[str, Any], cfg: Config | None) -> dict[str, Any]:
    if cfg is not None:
        row["head"], row["training"] = str(cfg.network.sim_header), training(cfg)
        row["gflops_per_view"], row["params_m"] = model_cost(cfg)
    return {c: row.get(c) for c in COLUMNS}


def is_run_folder(folder: Path) -> bool:
    """A training run folder: train.py's metrics.csv and config.yaml."""
    return (folder / "metrics.csv").is_file() and (folder / "config.yaml").is_file()


def find_below(folder: Path) -> tuple[list[Path], list[Path]]:
    """(every results.json, every training run folder without a results.json in it or below it)
    at any depth below `folder`, in path order; symbolic links to folders are not followed."""
    results, runs = [], []
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        if RESULTS in files:
            results.append(Path(here) / RESULTS)
        elif is_run_folder(Path(here)):
            runs.append(Path(here))
    return sorted(results), [r for r in sorted(runs) if not any(r in f.parents for f in results)]


def collect_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows of every results.json in `paths` (files, or folders searched at any depth), and of
    every training run folder found without one (its best validation), in order. A run folder
    found below a given folder that has no validation row yet is left out with a note."""
    rows = []
    for p in map(Path, paths):
        if p.is_file():
            rows.append(row_from_results(p))
        elif p.is_dir():
            results, runs = find_below(p)
            if not results and not runs:
                raise UserError(
                    f"{p}: no {RESULTS} below it and no training run folder (metrics.csv, config.yaml) "
                    f"in it or below it"
                )
            rows += [row_from_results(f) for f in results]
            for run in runs:
                try:
                    rows.append(row_from_run_folder(run))
                except UserError as err:
                    if run == p:
                        raise
                    print(f"note: left out {run}: {err}", file=sys.stderr, flush=True)
        else:
            raise UserError(f"not found: {p}")
    return rows


def _cell(row: dict[str, Any], col: str) -> str:
    value = row[col]
    if value is None:
        return ""
    if col in ("zs_half_top1", "zs_splits_top1") and row[f"{col}_std"] is not None:
        return f"{value:.2f} ± {row[f'{col}_std']:.2f}"
    if col == "gflops_per_view" and row["num_views"]:
        return f"{value:.2f} × {row['num_views']}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README model-zoo style table (columns without any value are left out)."""
    cols = [c for c in HEADERS if any(r[c] is not None for r in rows)]
    lines = ["| " + " | ".join(HEADERS[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in rows]
    note = (
        "GFLOPs/view: multiply-adds (10^9) of one view (frames × input size²) through the visual encoder, "
        "the head and the class logits, × views per video; params: visual encoder + head."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {c: ("" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c]) for c in COLUMNS} for r in rows
    )
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    rows = collect_rows(a.paths)
    table = markdown(rows)
    print(table, end="")
    if a.md:
        atomic_write_text(Path(a.md), table)
    if a.csv:
        atomic_write_text(Path(a.csv), to_csv(rows))


if __name__ == "__main__":
    run_cli(main)
