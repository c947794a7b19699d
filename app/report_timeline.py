"""The timeline section of the run report: a `predict.py --window` timeline as a band of the top-1
class per window and a table of every window's top classes."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from app.report_html import DASH, Cell, Col, code, dl, figure, table
from app.report_svg import (
    COLORS,
    timeline_band,
)


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
    cols, rows = window_table(windows, fps, unit)
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


def window_table(windows: list[dict[str, Any]], fps: Any, unit: str) -> tuple[list[Col], list[list[Any]]]:
    """The columns and rows of the per-window table: the window, its span, its top classes."""
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
    return cols, rows
