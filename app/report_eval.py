"""The evaluation sections of the run report: test.py's numbers, the per-class table, the most
confused pairs and the confusion matrix; test_zeroshot.py's protocols with mean ± std."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from app.report_data import Evaluation, Run
from app.report_facts import eval_facts, relative
from app.report_html import DASH, Cell, Col, cards, cell, code, figure, pct, table
from app.report_svg import (
    confusion_chart,
    heat_scale,
)

FULL_MATRIX_UP_TO = 100  # classes; beyond, the most confused block
BLOCK = 30
NAMES_UP_TO = 40  # class names on the matrix axes up to this many classes, indices beyond


def test_cards(ev: Evaluation) -> str:
    r = ev.results
    items: list[tuple[str, str, str, Any]] = []
    for key, label in (
        ("top1", "top-1"),
        ("top5", "top-5"),
        ("mAP", "mAP"),
        ("mean_class_accuracy", "mean class accuracy"),
    ):
        if isinstance(r.get(key), (int, float)):
            items.append((f"{label} (%)", f"{r[key]:.2f}", key, r[key]))
    if "num_videos" in r:
        items.append(("videos", str(r["num_videos"]), "num_videos", r["num_videos"]))
    if "views" in r:
        items.append(
            ("views per video", f"{r['views']} ({escape(str(r.get('view_layout', '')))})", "views", r["views"])
        )
    if isinstance(r.get("seconds_per_video"), (int, float)):
        items.append(("seconds per video", f"{r['seconds_per_video']:.3f}", "", None))
    counts = ""
    if "top1_correct" in r and "num_videos" in r:
        counts = (
            f'<p class="note">{r["top1_correct"]} of {r["num_videos"]} videos right at top-1, '
            f"{r.get('top5_correct', '?')} at top-5.</p>"
        )
    if r.get("mAP_classes_without_videos"):
        counts += (
            f'<p class="warn">{r["mAP_classes_without_videos"]} classes have no video in the list; each counts as '
            f"AP 0 in the mAP.</p>"
        )
    return cards(items) + counts


def most_confused_with(conf: np.ndarray | None, i: int, names: list[str]) -> Cell:
    if conf is None or i >= conf.shape[0]:
        return Cell(DASH, "")
    row = conf[i].copy()
    row[i] = 0
    j = int(row.argmax())
    if row[j] == 0:
        return Cell(DASH, "")
    share = 100.0 * row[j] / max(int(conf[i].sum()), 1)
    return Cell(f"{escape(names[j])} ({int(row[j])}, {share:.0f} %)", names[j])


def per_class_section(ev: Evaluation, uid: str) -> str:
    a = ev.analysis
    if not a or not a.get("per_class"):
        return '<p class="note">No per-class analysis in this folder (test.py --no_analysis).</p>'
    names = ev.class_names or [c["name"] for c in a["per_class"]]
    kk = next((k for k in a["per_class"][0] if re.fullmatch(r"top[2-9]\d*", k)), None)
    cols = [Col("#", True), Col("class"), Col("support", True, "videos of this class"), Col("top-1 (%)", True)]
    if kk:
        cols.append(Col(kk.replace("top", "top-") + " (%)", True))
    cols.append(Col("most confused with (videos, share)"))
    rows = []
    for c in a["per_class"]:
        line: list[Any] = [c["index"], c["name"], c["support"], cell(c["top1"], key="class_top1")]
        if kk:
            line.append(c[kk])
        line.append(most_confused_with(ev.confusion, int(c["index"]), names))
        rows.append(line)
    out = [
        f'<h4 id="{uid}-classes">Per class</h4>',
        f'<p class="note">{a.get("num_classes", len(rows))} classes, {a.get("classes_without_videos", 0)} without '
        f"videos; mean class accuracy {pct(a.get('mean_class_accuracy'))} %. Click a column header to sort "
        "(e.g. top-1 to find the worst classes).</p>",
        table(cols, rows, sortable=True, cls="per-class"),
    ]
    pairs = a.get("most_confused_pairs") or []
    if pairs:
        pc = [Col("true class"), Col("predicted as"), Col("videos", True), Col("share of the true class (%)", True)]
        pr = [[p["true_name"], p["predicted_name"], p["count"], 100.0 * p["fraction"]] for p in pairs]
        out += [f"<h4>Most confused pairs (top {len(pairs)})</h4>", table(pc, pr, cls="pairs")]
    else:
        out.append("<p>Every video is classified right: no confused pair.</p>")
    if ev.confusion is not None:
        out.append(confusion_section(ev.confusion, names))
    return "".join(out)


def confusion_section(conf: np.ndarray, names: list[str]) -> str:
    c = conf.shape[0]
    if c <= FULL_MATRIX_UP_TO:
        order = list(range(c))
        what = f"all {c} classes"
    else:
        from utils.analysis import confused_block  # torch: imported only for this large case

        order = confused_block(conf, BLOCK)
        what = (
            f"the {len(order)} classes of the most confused pairs (of {c}; the full matrix is in confusion.npz), "
            "each next to what it is confused with"
        )
    chart = confusion_chart(
        conf, names, order, title=f"confusion matrix, {what}", label_names=len(order) <= NAMES_UP_TO
    )
    note = "Counts are written in the cells" if len(order) <= 30 else "Hover a cell for its count"
    return "<h4>Confusion matrix</h4>" + figure(
        chart,
        f"Rows: true class, columns: top-1 prediction; {what}. Shade: share of the true class's videos "
        f"(key below); green outline: the diagonal. {note}"
        + ("" if len(order) <= NAMES_UP_TO else "; axes show class numbers (# in the per-class table)")
        + ".",
        heat_scale(),
    )


def zero_shot_section(ev: Evaluation, uid: str) -> str:
    r = ev.results
    out = [cards(zs_items(r))]
    half = r.get("half_classes")
    if half:
        if half.get("warning"):
            out.append(f'<p class="warn">{escape(half["warning"])}</p>')
        cols = [
            Col("seed", True),
            Col("videos", True),
            Col("top-1 (%)", True),
            Col("top-5 (%)", True),
            Col("classes without videos", True),
        ]
        rows = [
            [s["seed"], s["num_videos"], s["top1"], s["top5"], s.get("classes_without_videos")] for s in half["splits"]
        ]
        out.append(
            f"<h4>Half classes: {half.get('repeats')} random selections of {half.get('classes_per_split')} classes</h4>"
            + f'<p class="note">top-1 {ms(half, "top1")} %, top-5 {ms(half, "top5")} % (mean ± population std); '
            + f"selection: {escape(str(half.get('selection', '')))}</p>"
            + table(cols, rows)
        )
    splits = r.get("splits")
    if splits:
        cols = [
            Col("split"),
            Col("classes", True),
            Col("videos", True),
            Col("top-1 (%)", True),
            Col("top-5 (%)", True),
            Col("videos from"),
        ]
        rows = [
            [Path(str(s["split"])).name, s["num_classes"], s["num_videos"], s["top1"], s["top5"], s["videos_from"]]
            for s in splits["per_split"]
        ]
        out.append(
            f"<h4>Official test splits ({len(rows)})</h4>"
            + f'<p class="note">top-1 {ms(splits, "top1")} %, top-5 {ms(splits, "top5")} % (mean ± population std)</p>'
            + table(cols, rows)
        )
    if r.get("templates"):
        out.append(
            f'<p class="note">{len(r["templates"])} prompt templates; logit scale {r.get("eval_logit_scale")}.</p>'
        )
    return "".join(out)


def ms(d: dict[str, Any], key: str) -> str:
    return f"{d[f'{key}_mean']:.2f} ± {d[f'{key}_std']:.2f}"


def zs_items(r: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    items: list[tuple[str, str, str, Any]] = []
    full = r.get("full_classes")
    if full:
        items += [
            (
                f"full classes top-1 (%), {full.get('num_videos')} videos",
                f"{full['top1']:.2f}",
                "zs_full_top1",
                full["top1"],
            ),
            ("full classes top-5 (%)", f"{full['top5']:.2f}", "zs_full_top5", full["top5"]),
        ]
    for key, label in (("half_classes", "half classes"), ("splits", "official splits")):
        d = r.get(key)
        if d:
            items.append((f"{label} top-1 (%), mean ± std", ms(d, "top1"), f"zs_{key}_top1_mean", d["top1_mean"]))
    return items


def evaluation_section(ev: Evaluation, run: Run, uid: str) -> str:
    title = "Zero-shot evaluation" if ev.kind == "zero-shot" else "Evaluation"
    head = f'<h3 id="{uid}">{title}: {code(relative(ev.folder, run.path))}</h3>'
    body = zero_shot_section(ev, uid) if ev.kind == "zero-shot" else test_cards(ev) + per_class_section(ev, uid)
    return head + eval_facts(ev) + body
