"""What a report reads from disk: a training run folder, a test / zero-shot results folder or a
`predict.py --window` timeline, as plain data (no torch). Every file is optional except the one
that says what the folder is; a damaged file is a UserError naming it.

* training run: `metrics.csv`, `config.yaml` (and `source_*.yaml`, `best_val_per_class.csv`,
  `log.txt`, `model_best.pt`), with any `results.json` below it (a test of the run);
* results folder: `results.json` (test.py or test_zeroshot.py), `analysis.json`,
  `confusion.npz`, `log.txt`;
* timeline: `<name>.timeline.json` files (a file, or the folder holding them);
* any of them: `run_info.json` (app.report_runinfo: command line, commit, versions, machine).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from app.report_runinfo import read_run_info
from utils.errors import UserError

RESULTS = "results.json"
TIMELINE_SUFFIX = ".timeline.json"
LOG_TIME = re.compile(r"^\[(\d\d/\d\d \d\d:\d\d:\d\d) ")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err})") from None
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read it as CSV ({err})") from None


def number(text: Any) -> float | None:
    """A CSV cell as a float; None for an empty or non-numeric cell."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


@dataclass
class LogFacts:
    """What `log.txt` says about a run: the first and last time stamp (month/day, no year) and the
    versions line of train.py."""

    first: str | None = None
    last: str | None = None
    versions: str | None = None


def read_log(path: Path) -> LogFacts:
    facts = LogFacts()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return facts
    stamps = [m.group(1) for m in map(LOG_TIME.match, lines) if m]
    if stamps:
        facts.first, facts.last = stamps[0], stamps[-1]
    for line in lines:
        if "]: Python " in line and "PyTorch" in line:
            facts.versions = line.split("]: ", 1)[1]
            break
    return facts


@dataclass
class Evaluation:
    """One results folder of test.py (kind "test") or test_zeroshot.py (kind "zero-shot")."""

    folder: Path
    results: dict[str, Any]
    analysis: dict[str, Any] | None = None
    confusion: np.ndarray | None = None
    class_names: list[str] | None = None
    run_info: dict[str, Any] | None = None
    log: LogFacts = field(default_factory=LogFacts)

    @property
    def kind(self) -> str:
        r = self.results
        return "zero-shot" if "protocols" in r or "full_classes" in r else "test"


@dataclass
class Training:
    """One training run folder."""

    folder: Path
    config: dict[str, Any]
    metrics: list[dict[str, str]]
    best_per_class: list[dict[str, str]] = field(default_factory=list)
    source_config: str | None = None
    run_info: dict[str, Any] | None = None
    log: LogFacts = field(default_factory=LogFacts)

    def column(self, key: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of a metrics.csv column, rows without a value left out."""
        xs, ys = [], []
        for row in self.metrics:
            x, y = number(row.get("epoch")), number(row.get(key))
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys

    def best_row(self) -> dict[str, str] | None:
        """The validated epoch with the highest val_top1 (the first of equal ones, as train.py keeps;
        a non-finite value is never the best)."""
        best, best_value = None, -math.inf
        for row in self.metrics:
            v = number(row.get("val_top1"))
            if v is not None and math.isfinite(v) and v > best_value:
                best, best_value = row, v
        return best


@dataclass
class Run:
    """One RUN argument: a training run, its evaluations, and timelines."""

    path: Path
    name: str
    training: Training | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    timelines: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    run_info: dict[str, Any] | None = None  # of the RUN folder itself (predict.py --window's --out)


def load_evaluation(path: Path) -> Evaluation:
    folder = path.parent
    ev = Evaluation(folder, read_json(path), run_info=read_run_info(folder), log=read_log(folder / "log.txt"))
    if (folder / "analysis.json").is_file():
        ev.analysis = read_json(folder / "analysis.json")
    if (folder / "confusion.npz").is_file():
        try:
            with np.load(folder / "confusion.npz", allow_pickle=False) as z:
                ev.confusion = np.asarray(z["counts"], dtype=np.int64)
                ev.class_names = [str(n) for n in z["class_names"]]
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"{folder / 'confusion.npz'}: cannot read it ({err})") from None
    return ev


def load_training(folder: Path) -> Training:
    metrics = read_csv_rows(folder / "metrics.csv")
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{folder / 'config.yaml'}: cannot read it ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder / 'config.yaml'}: expected a mapping of config sections")
    sources = sorted(folder.glob("source_*.y*ml"))
    best = folder / "best_val_per_class.csv"
    return Training(
        folder,
        config,
        metrics,
        best_per_class=read_csv_rows(best) if best.is_file() else [],
        source_config=sources[0].name.removeprefix("source_") if sources else None,
        run_info=read_run_info(folder),
        log=read_log(folder / "log.txt"),
    )


def load_run(path: str | Path) -> Run:
    """A RUN argument of `python -m app.report`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"not found: {p}")
    if p.is_file():
        if p.name.endswith(TIMELINE_SUFFIX):
            return Run(p, p.name.removesuffix(TIMELINE_SUFFIX), timelines=[(p, read_json(p))])
        if p.suffix == ".json":
            return Run(p.parent, p.parent.name, evaluations=[load_evaluation(p)])
        raise UserError(f"{p}: give a run folder, a results.json or a .timeline.json file")
    run = Run(p, p.resolve().name, run_info=read_run_info(p))
    if (p / "metrics.csv").is_file() and (p / "config.yaml").is_file():
        run.training = load_training(p)
    run.evaluations = [load_evaluation(f) for f in sorted(p.rglob(RESULTS))]
    run.timelines = [(f, read_json(f)) for f in sorted(p.rglob("*" + TIMELINE_SUFFIX))]
    if run.training is None and not run.evaluations and not run.timelines:
        raise UserError(
            f"{p}: not a training run folder (metrics.csv and config.yaml), and holds no results.json "
            f"or *{TIMELINE_SUFFIX} below it"
        )
    return run
