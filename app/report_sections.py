"""The sections of the run report, each a function of the loaded data (app.report_data) that
returns HTML: what ran, training, evaluation, zero-shot, timelines, and the side-by-side
comparison of several runs."""

from __future__ import annotations

import re
import shlex
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from app.report_data import Evaluation, Run, Training, number
from app.report_html import DASH, Cell, Col, cards, cell, code, dl, figure, pct, table
from app.report_svg import (
    COLORS,
    Mark,
    Series,
    bar_swatch,
    confusion_chart,
    fmt,
    heat_scale,
    legend,
    line_chart,
    stacked_bars,
    timeline_band,
)

FULL_MATRIX_UP_TO = 100  # classes; beyond, the most confused block
BLOCK = 30
NAMES_UP_TO = 40  # class names on the matrix axes up to this many classes, indices beyond
SKIPPED = re.compile(r"skip|non_?finite", re.I)


def get(tree: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """`tree["a"]["b"]` for "a.b", or `default`."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def file_size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} kB"


# ----------------------------------------------------------------------------- what ran
def invocations(info: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The facts of run_info.json: command, commit, versions, machine, start / end."""
    if not info or not info.get("invocations"):
        return []
    runs = info["invocations"]
    last = runs[-1]
    git = last.get("git") or {}
    commit = (
        code(git["commit"][:12]) + (" with uncommitted changes" if git.get("dirty") else "")
        if git.get("commit")
        else ""
    )
    vers = ", ".join(f"{k} {v}" for k, v in (last.get("versions") or {}).items())
    m = last.get("machine") or {}
    machine = ", ".join(
        filter(
            None,
            [
                m.get("system"),
                m.get("machine"),
                f"{m['cpus']} CPUs ({m.get('cpu') or '?'})" if m.get("cpus") else "",
                "GPU: " + ", ".join(m["gpus"]) if m.get("gpus") else "no GPU",
            ],
        )
    )
    pairs = [
        ("command", "<br>".join(code(r["command"]) for r in runs if r.get("command"))),
        ("run from", code(last["cwd"]) if last.get("cwd") else ""),
        ("git commit", commit),
        ("versions", escape(vers)),
        ("machine", escape(machine)),
        ("started", escape(str(runs[0].get("started") or DASH))),
        ("ended", escape(str(last.get("ended") or DASH))),
    ]
    if len(runs) > 1:
        pairs.append(("invocations", f"{len(runs)} (a resumed run: each command above, in order)"))
    return pairs


def log_times(facts: Any, recorded: bool) -> list[tuple[str, str]]:
    """Start / end from log.txt's time stamps when run_info.json does not record them."""
    if recorded or not facts.first:
        return []
    return [("started", escape(facts.first + " (log.txt, no year)")), ("last log line", escape(str(facts.last)))]


def training_facts(t: Training, classes: int | None) -> str:
    c = t.config
    epochs_done = len({row.get("epoch") for row in t.metrics})
    text_tower = get(c, "network.text_tower")
    training = f"{get(c, 'solver.loss_type', 'CE')} loss; " + (
        f"text tower {'frozen' if get(c, 'network.fix_text') else 'trained'}"
        if text_tower
        else f"{get(c, 'network.classifier', '?')} classifier "
        + ("frozen" if get(c, "network.fix_text", True) else "trained")
    )
    best, last = t.folder / "model_best.pt", t.folder / "last_model.pt"
    ckpts = ", ".join(code(str(p)) + f" ({file_size(p)})" for p in (best, last) if p.is_file())
    reproduce = shlex.join(["python", "train.py", "--config", str(t.folder / "config.yaml"), "--output", "NEW_FOLDER"])
    pairs = [
        (
            "config",
            code(t.source_config) + " (as given; resolved: " + code("config.yaml") + ")"
            if t.source_config
            else code("config.yaml"),
        ),
        (
            "model",
            escape(
                f"{get(c, 'network.arch')}, head {get(c, 'network.sim_header')}"
                + (f", temporal module {get(c, 'network.tm')}" if get(c, "network.tm") else "")
                + f", pretrained {get(c, 'network.pretrained')}"
            ),
        ),
        ("training", escape(training)),
        (
            "frames × crops × clips",
            escape(f"{get(c, 'data.num_segments')}×1×1 (validation, one view), {get(c, 'data.input_size')} px"),
        ),
        ("dataset", escape(f"{get(c, 'data.dataset')}, {classes if classes else '?'} classes")),
        ("lists", " ".join(code(str(get(c, f"data.{k}"))) for k in ("train_list", "val_list", "label_list"))),
        (
            "schedule",
            escape(
                f"{epochs_done} of {get(c, 'solver.epochs')} epochs, batch {get(c, 'data.batch_size')}, "
                f"lr {get(c, 'solver.lr')} ({get(c, 'solver.type')}), seed {get(c, 'seed')}"
            ),
        ),
        ("checkpoints", ckpts),
        *invocations(t.run_info),
        *log_times(t.log, bool(t.run_info)),
        ("versions (log.txt)", escape(t.log.versions or "") if not t.run_info else ""),
        ("reproduce", code(reproduce) + " (the recorded, resolved config)"),
    ]
    return dl(pairs)


def eval_facts(ev: Evaluation) -> str:
    r = ev.results
    views = f"{r.get('view_layout', '?')} = {r.get('views', '?')} views per video" + (
        " (dense)" if r.get("dense") else ""
    )
    weights = Path(str(r.get("weights", "")))
    script = "test_zeroshot.py" if ev.kind == "zero-shot" else "test.py"
    argv = ["python", script]
    if r.get("config") and " (stored config)" not in str(r["config"]):
        argv += ["--config", str(r["config"])]
    for k in ("weights", "test_crops", "test_clips"):
        if r.get(k) is not None:
            argv += [f"--{k}", str(r[k])]
    if r.get("fuse") not in (None, "embeddings"):
        argv += ["--fuse", str(r["fuse"])]
    if ev.kind == "zero-shot" and r.get("protocols"):
        argv += ["--protocol", *map(str, r["protocols"])]
    if r.get("opts"):
        argv += ["--opts", *map(str, r["opts"])]
    pairs = [
        ("config", code(str(r.get("config", DASH)))),
        ("checkpoint", code(str(weights)) + (f" ({file_size(weights)})" if weights.is_file() else "")),
        ("model", escape(str(r.get("arch", DASH)))),
        ("dataset", escape(f"{r.get('dataset', '?')}, {r.get('num_classes', '?')} classes")),
        ("frames × crops × clips", escape(views)),
        (
            "evaluation",
            escape(
                f"fuse {r.get('fuse', '?')}, precision {r.get('precision', '?')}, {r.get('world_size', 1)} process(es) "
                f"on {r.get('device', '?')}"
            ),
        ),
        *invocations(ev.run_info),
        *log_times(ev.log, bool(ev.run_info)),
        ("reproduce", code(shlex.join(argv)) if not ev.run_info else ""),
    ]
    return dl(pairs)


# ----------------------------------------------------------------------------- training
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
    best = t.best_row()
    mark = best_mark(t)
    marks = [mark] if mark else []
    epochs = len(t.metrics)
    seconds = sum(number(r.get("epoch_time_s")) or 0.0 for r in t.metrics)
    skipped = skipped_columns(t)
    skipped_total = sum(int(number(r.get(k)) or 0) for r in t.metrics for k in skipped)
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
    parts = [cards(items)]
    if not skipped:
        parts.append('<p class="note">metrics.csv has no column of skipped non-finite steps (older run).</p>')

    loss = Series("train loss", list(zip(*t.column("train_loss"), strict=True)), 0)
    top1 = Series("val top-1", list(zip(*t.column("val_top1"), strict=True)), 0)
    top5 = Series("val top-5", list(zip(*t.column("val_top5"), strict=True)), 1)
    lr = Series("head / text LR", list(zip(*t.column("lr"), strict=True)), 0)
    lrv = Series("visual encoder LR", list(zip(*t.column("lr_visual"), strict=True)), 1)
    charts = [
        figure(
            line_chart(
                "training loss per epoch", [loss], x_label="epoch", y_label="loss (mean over the epoch)", marks=marks
            ),
            "Training loss, mean over each epoch's clips. Dashed line: the best validation epoch.",
        ),
        figure(
            line_chart(
                "validation accuracy per epoch", [top1, top5], x_label="epoch", y_label="accuracy (%)", marks=marks
            ),
            "Validation accuracy (one view per video) of the epochs that were validated; ring: the best "
            "epoch, whose weights are model_best.pt.",
            legend([(0, "val top-1"), (1, "val top-5")]),
        ),
        figure(
            line_chart(
                "learning rate per epoch", [lr, lrv], x_label="epoch", y_label="learning rate (log scale)", log_y=True
            ),
            "Learning rate at the end of each epoch (log scale), both parameter groups"
            + ("; they are equal (solver.clip_ratio 1), so the lines overlap." if lr.points == lrv.points else "."),
            legend([(0, "head / text LR"), (1, "visual encoder LR")]),
        ),
    ]
    waits = [(number(r.get("epoch")), number(r.get("data_wait_s")), number(r.get("step_s"))) for r in t.metrics]
    waits_ok = [(e, w, s) for e, w, s in waits if e is not None and w is not None and s is not None and s > 0]
    if waits_ok:
        xs = [e for e, _, _ in waits_ok]
        wait = [w for _, w, _ in waits_ok]
        compute = [max(s - w, 0.0) for _, w, s in waits_ok]
        shares = [f"{100 * w / s:.0f}%" for _, w, s in waits_ok]
        charts.append(
            figure(
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
        )
    if skipped and skipped_total:
        series = [Series(k, list(zip(*t.column(k), strict=True)), i) for i, k in enumerate(skipped)]
        charts.append(
            figure(
                line_chart("skipped non-finite steps per epoch", series, x_label="epoch", y_label="steps"),
                "Optimiser steps skipped because the loss or a gradient was not finite.",
                legend([(i, k) for i, k in enumerate(skipped)]),
            )
        )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    parts.append(metrics_table(t))
    if t.best_per_class:
        parts.append(best_per_class_table(t))
    return f'<h3 id="{uid}-training">Training</h3>' + "".join(parts)


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


# ----------------------------------------------------------------------------- evaluation
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


# ----------------------------------------------------------------------------- timelines
def timeline_section(path: Path, tl: dict[str, Any], uid: str) -> str:
    windows = tl.get("windows") or []
    fps = tl.get("fps")
    unit = "s" if fps else "frame"
    top_classes: list[str] = []
    for w in windows:
        name = w["predictions"][0]["class"]
        if name not in top_classes:
            top_classes.append(name)
    style = {n: i for i, n in enumerate(top_classes)}
    spans = [
        (
            (w["start_s"] if fps else w["start_frame"]),
            (w["end_s"] if fps else w["end_frame"]),
            style[w["predictions"][0]["class"]],
            float(w["predictions"][0]["probability"]),
        )
        for w in windows
    ]
    keys = {i: n for n, i in style.items()}
    band = timeline_band(spans, keys, unit=unit, title=f"top-1 class per window of {path.name}")
    key_list = "".join(
        f'<li><svg class="swatch" width="18" height="14" aria-hidden="true"><rect x="1" y="1" width="16" height="12" '
        f'fill="{COLORS[i % len(COLORS)]}"/></svg><b>{i + 1}</b>&nbsp;{escape(n)}</li>'
        for i, n in enumerate(top_classes)
    )
    k = max((len(w["predictions"]) for w in windows), default=0)
    cols = [Col("window", True), Col(f"start ({unit})", True), Col(f"end ({unit})", True)]
    cols += [Col(f"top-{i + 1} (probability %)") for i in range(k)]
    rows = []
    for w in windows:
        line: list[Any] = [
            w["index"],
            w["start_s"] if fps else w["start_frame"],
            w["end_s"] if fps else w["end_frame"],
        ]
        line += [Cell(f"{escape(p['class'])} ({100 * p['probability']:.1f})", p["class"]) for p in w["predictions"]]
        line += [Cell(DASH, "")] * (k - len(w["predictions"]))
        rows.append(line)
    duration = f"{tl['duration_s']:.1f} s, " if tl.get("duration_s") else ""
    facts = dl(
        [
            ("input", code(str(tl.get("input")))),
            ("length", escape(f"{duration}{tl.get('num_frames')} frames" + (f" at {fps:g} fps" if fps else ""))),
            (
                "windows",
                escape(
                    f"{len(windows)} of {tl.get('window', {}).get('given')} every {tl.get('stride', {}).get('given')}, "
                    f"views {tl.get('views')}"
                ),
            ),
            ("file", code(str(path))),
        ]
    )
    return (
        f'<h3 id="{uid}">Timeline: {escape(Path(str(tl.get("input", path))).name)}</h3>'
        + facts
        + figure(
            band,
            "Band: the top-1 class of each window (number = class key); bars: its probability.",
            f'<ul class="legend">{key_list}</ul>',
        )
        + "<h4>Top classes per window</h4>"
        + table(cols, rows, sortable=True)
    )


# ----------------------------------------------------------------------------- several runs
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


def training_words(c: dict[str, Any]) -> str:
    """The objective and what is trained, in a few words (the comparison demo's two paradigms)."""
    return f"{get(c, 'solver.loss_type', 'CE')}, " + (
        f"text tower {'frozen' if get(c, 'network.fix_text') else 'trained'}"
        if get(c, "network.text_tower")
        else f"{get(c, 'network.classifier')} classifier"
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


def relative(folder: Path, root: Path) -> str:
    """`folder` below the RUN it was found in (its own name when it is the RUN)."""
    try:
        rel = folder.relative_to(root)
    except ValueError:
        return str(folder)
    return str(rel) if str(rel) != "." else folder.resolve().name


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
            line_chart("validation top-1 of every run", series("val_top1"), x_label="epoch", y_label="val top-1 (%)"),
            "Validation top-1 (one view) per epoch" + (f"; best: {'; '.join(bests)}" if bests else "") + ".",
            lg,
        )
        + figure(
            line_chart("training loss of every run", series("train_loss"), x_label="epoch", y_label="training loss"),
            "Training loss per epoch (each run's own objective: CE and contrastive losses differ in scale).",
            lg,
        )
        + figure(
            line_chart(
                "learning rate of every run", series("lr"), x_label="epoch", y_label="head LR (log scale)", log_y=True
            ),
            "Learning rate of the head / text group at the end of each epoch.",
            lg,
        )
        + "</div>"
    )
    return "".join(out)


def empty(v: Any) -> bool:
    return isinstance(v, Cell) and v.text == DASH
