"""The side-by-side section of a report of several runs: one table row per evaluation of each run,
and the curves of every run overlaid."""

from __future__ import annotations

from html import escape
from typing import Any

from app.report_data import Run, number
from app.report_eval import ms
from app.report_facts import get, relative, training_words
from app.report_html import DASH, Cell, Col, cell, figure, table
from app.report_svg import (
    ChartAxes,
    Series,
    legend,
    line_chart,
)

COMPARE = (
    ("run", Col("run")),
    ("results", Col("results")),
    ("dataset", Col("dataset")),
    ("model", Col("model", title="architecture, temporal head")),
    ("training", Col("training")),
    ("epochs", Col("epochs", True)),
    ("best_val_top1", Col("best val top-1 (%)", True, "train-time validation, one view")),
    ("views", Col("views", title="frames × crops × clips")),
    ("top1", Col("top-1 (%)", True)),
    ("top5", Col("top-5 (%)", True)),
    ("mAP", Col("mAP (%)", True)),
    ("mean_class_accuracy", Col("mean class acc. (%)", True)),
    ("zs_full", Col("zero-shot full top-1 (%)", True)),
    ("zs_half", Col("zero-shot half top-1 (%)")),
    ("zs_splits", Col("zero-shot splits top-1 (%)")),
)


def compare_rows(n: int, run: Run) -> list[dict[str, Any]]:
    """The side-by-side rows of one run: one per evaluation (one row for a run without any)."""
    t = run.training
    c = t.config if t else {}
    best = t.best_row() if t else None
    common: dict[str, Any] = {"run": Cell(f'<a href="#run-{n}">{escape(run.name)}</a>', run.name)}
    if t is not None:
        common.update(
            dataset=get(c, "data.dataset"),
            model=f"{get(c, 'network.arch')}, {get(c, 'network.sim_header')}",
            training=training_words(c),
            epochs=len(t.metrics),
            best_val_top1=cell(number(best["val_top1"]) if best else None, key="best_val_top1"),
            views=f"{get(c, 'data.num_segments')}x1x1 (val)",
        )
    rows = []
    for ev in run.evaluations:
        r = ev.results
        row = {**common, "results": relative(ev.folder, run.path), "views": r.get("view_layout")}
        row.setdefault("dataset", r.get("dataset"))
        row.setdefault("model", r.get("arch"))
        for key in ("top1", "top5", "mAP", "mean_class_accuracy"):
            row[key] = cell(r.get(key), key=key)
        if ev.kind == "zero-shot":
            full = r.get("full_classes") or {}
            row["zs_full"] = cell(full.get("top1"), key="zs_full_top1")
            for key in ("half_classes", "splits"):
                if r.get(key):
                    row["zs_" + key.split("_")[0]] = Cell(ms(r[key], "top1"), repr(r[key]["top1_mean"]))
        rows.append(row)
    return rows or ([common] if t is not None else [])


def compare_section(runs: list[Run]) -> str:
    rows = [row for n, run in enumerate(runs) for row in compare_rows(n, run)]
    keys = [k for k, _ in COMPARE if any(row.get(k) not in (None, "") and not empty(row[k]) for row in rows)]
    cols = [col for k, col in COMPARE if k in keys]
    body = [[row.get(k) for k in keys] for row in rows]
    out = [
        '<h2 id="compare">Side by side</h2>',
        '<p class="note">One row per evaluation of each run (its training row alone when it has none); '
        "click a column header to sort.</p>",
        table(cols, body, sortable=True, cls="compare"),
    ]
    trained = [(n, r, r.training) for n, r in enumerate(runs) if r.training is not None]
    if not trained:
        return "".join(out)
    ent = [(n, r.name) for n, r, _ in trained]
    lg = legend(ent)

    def series(key: str) -> list[Series]:
        return [Series(r.name, list(zip(*t.column(key), strict=True)), n) for n, r, t in trained]

    bests = [
        f"{r.name} epoch {b['epoch']} ({float(b['val_top1']):.2f} %)" for _, r, t in trained if (b := t.best_row())
    ]
    out.append(
        '<div class="charts">'
        + figure(
            line_chart("validation top-1 of every run", series("val_top1"), ChartAxes("epoch", "val top-1 (%)")),
            "Validation top-1 (one view) per epoch" + (f"; best: {'; '.join(bests)}" if bests else "") + ".",
            lg,
        )
        + figure(
            line_chart("training loss of every run", series("train_loss"), ChartAxes("epoch", "training loss")),
            "Training loss per epoch (each run's own objective: CE and contrastive losses differ in scale).",
            lg,
        )
        + figure(
            line_chart(
                "learning rate of every run", series("lr"), ChartAxes("epoch", "head LR (log scale)", log_y=True)
            ),
            "Learning rate of the head / text group at the end of each epoch.",
            lg,
        )
        + "</div>"
    )
    return "".join(out)


def empty(v: Any) -> bool:
    return isinstance(v, Cell) and v.text == DASH
