"""The training section of the run report (metrics.csv, best_val_per_class.csv): headline numbers,
curves with the best epoch marked, data wait against compute, every epoch's row."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

from app.report_data import Training, number
from app.report_facts import get
from app.report_html import DASH, Cell, Col, cards, figure, table
from app.report_svg import (
    ChartAxes,
    Mark,
    Series,
    bar_swatch,
    fmt,
    legend,
    line_chart,
    stacked_bars,
)

SKIPPED = re.compile(r"skip|non_?finite", re.I)


def class_count(t: Training) -> int | None:
    if t.best_per_class:
        return len(t.best_per_class)
    n = get(t.config, "data.num_classes")
    if n:
        return int(n)
    label_list = Path(str(get(t.config, "data.label_list", "")))
    try:
        return max(len(label_list.read_text().splitlines()) - 1, 0) or None
    except OSError:
        return None


def skipped_columns(t: Training) -> list[str]:
    return [k for k in (t.metrics[0] if t.metrics else {}) if SKIPPED.search(k)]


def best_mark(t: Training) -> Mark | None:
    best = t.best_row()
    if best is None:
        return None
    return Mark(
        float(best["epoch"]), f"best: epoch {best['epoch']}, {float(best['val_top1']):.2f} %", float(best["val_top1"])
    )


def training_section(t: Training, uid: str) -> str:
    skipped = skipped_columns(t)
    skipped_total = sum(int(number(r.get(k)) or 0) for r in t.metrics for k in skipped)
    parts = [cards(summary_cards(t, skipped, skipped_total))]
    if not skipped:
        parts.append('<p class="note">metrics.csv has no column of skipped non-finite steps (older run).</p>')
    charts = epoch_charts(t)
    wait_chart = data_wait_chart(t)
    if wait_chart:
        charts.append(wait_chart)
    if skipped and skipped_total:
        series = [Series(k, list(zip(*t.column(k), strict=True)), i) for i, k in enumerate(skipped)]
        charts.append(
            figure(
                line_chart("skipped non-finite steps per epoch", series, ChartAxes("epoch", "steps")),
                "Optimiser steps skipped because the loss or a gradient was not finite.",
                legend([(i, k) for i, k in enumerate(skipped)]),
            )
        )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    parts.append(metrics_table(t))
    if t.best_per_class:
        parts.append(best_per_class_table(t))
    return f'<h3 id="{uid}-training">Training</h3>' + "".join(parts)


def summary_cards(t: Training, skipped: list[str], skipped_total: int) -> list[tuple[str, str, str, Any]]:
    """The cards above the charts: best and last validation, epochs, time, skipped steps."""
    best = t.best_row()
    epochs = len(t.metrics)
    seconds = sum(number(r.get("epoch_time_s")) or 0.0 for r in t.metrics)
    last_val = next((r for r in reversed(t.metrics) if number(r.get("val_top1")) is not None), None)
    items: list[tuple[str, str, str, Any]] = []
    if best is not None:
        v = float(best["val_top1"])
        items.append((f"best val top-1 (epoch {best['epoch']})", f"{v:.2f} %", "best_val_top1", v))
        if number(best.get("val_top5")) is not None:
            items.append(
                ("its val top-5", f"{float(best['val_top5']):.2f} %", "best_val_top5", float(best["val_top5"]))
            )
    if last_val is not None and last_val is not best:
        items.append((f"last val top-1 (epoch {last_val['epoch']})", f"{float(last_val['val_top1']):.2f} %", "", None))
    items.append(("epochs", str(epochs), "epochs", epochs))
    items.append(("training time", f"{seconds / 60:.1f} min", "", None))
    if skipped:
        items.append(("skipped non-finite steps", str(skipped_total), "skipped_steps", skipped_total))
    return items


def epoch_charts(t: Training) -> list[str]:
    """Training loss, validation accuracy and learning rate per epoch (the best epoch marked)."""
    mark = best_mark(t)
    marks = [mark] if mark else []
    loss = Series("train loss", list(zip(*t.column("train_loss"), strict=True)), 0)
    top1 = Series("val top-1", list(zip(*t.column("val_top1"), strict=True)), 0)
    top5 = Series("val top-5", list(zip(*t.column("val_top5"), strict=True)), 1)
    lr = Series("head / text LR", list(zip(*t.column("lr"), strict=True)), 0)
    lrv = Series("visual encoder LR", list(zip(*t.column("lr_visual"), strict=True)), 1)
    return [
        figure(
            line_chart(
                "training loss per epoch", [loss], ChartAxes("epoch", "loss (mean over the epoch)"), marks=marks
            ),
            "Training loss, mean over each epoch's clips. Dashed line: the best validation epoch.",
        ),
        figure(
            line_chart("validation accuracy per epoch", [top1, top5], ChartAxes("epoch", "accuracy (%)"), marks=marks),
            "Validation accuracy (one view per video) of the epochs that were validated; ring: the best "
            "epoch, whose weights are model_best.pt.",
            legend([(0, "val top-1"), (1, "val top-5")]),
        ),
        figure(
            line_chart(
                "learning rate per epoch", [lr, lrv], ChartAxes("epoch", "learning rate (log scale)", log_y=True)
            ),
            "Learning rate at the end of each epoch (log scale), both parameter groups"
            + ("; they are equal (solver.clip_ratio 1), so the lines overlap." if lr.points == lrv.points else "."),
            legend([(0, "head / text LR"), (1, "visual encoder LR")]),
        ),
    ]


def data_wait_chart(t: Training) -> str | None:
    """Compute and data wait per training step, stacked per epoch (None: metrics.csv has no timings)."""
    waits = [(number(r.get("epoch")), number(r.get("data_wait_s")), number(r.get("step_s"))) for r in t.metrics]
    waits_ok = [(e, w, s) for e, w, s in waits if e is not None and w is not None and s is not None and s > 0]
    if not waits_ok:
        return None
    xs = [e for e, _, _ in waits_ok]
    wait = [w for _, w, _ in waits_ok]
    compute = [max(s - w, 0.0) for _, w, s in waits_ok]
    shares = [f"{100 * w / s:.0f}%" for _, w, s in waits_ok]
    return figure(
        stacked_bars(
            "data wait and compute per training step",
            xs,
            [("compute", compute), ("data wait", wait)],
            x_label="epoch",
            y_label="seconds per step",
            top_labels=shares,
        ),
        "Mean seconds per training step: compute, and waiting for the data loader (hatched); the "
        "share of waiting is written above each bar (logging.data_wait_alarm warns above its threshold).",
        f'<ul class="legend"><li>{bar_swatch(0)}compute</li><li>{bar_swatch(1)}data wait (hatched)</li></ul>',
    )


def metrics_table(t: Training) -> str:
    if not t.metrics:
        return ""
    keys = [k for k in t.metrics[0] if any(r.get(k) not in (None, "") for r in t.metrics)]
    cols = [Col(k, numeric=True) for k in keys]
    rows = []
    for r in t.metrics:
        row = []
        for k in keys:
            v = number(r.get(k))
            raw = escape(r.get(k) or "")
            row.append(Cell(DASH, "") if v is None else Cell(fmt(v, 6), repr(v), f' title="{raw}"'))
        rows.append(row)
    return "<h4>Every epoch (metrics.csv)</h4>" + table(cols, rows, sortable=True)


def best_per_class_table(t: Training) -> str:
    rows = t.best_per_class
    k5 = next((k for k in rows[0] if re.fullmatch(r"top[2-9]\d*", k)), None)
    epoch = rows[0].get("epoch", "?")
    cols = [Col("#", True), Col("class"), Col("support", True), Col("top-1 (%)", True)]
    if k5:
        cols.append(Col(k5.replace("top", "top-") + " (%)", True))
    body = []
    for r in rows:
        line: list[Any] = [int(r["index"]), r["name"], int(r["support"]), number(r["top1"])]
        if k5:
            line.append(number(r[k5]))
        body.append(line)
    return (
        f"<h4>Per class at the best epoch ({escape(epoch)}, validation, one view)</h4>"
        + '<p class="note">best_val_per_class.csv; click a column header to sort.</p>'
        + table(cols, body, sortable=True)
    )
