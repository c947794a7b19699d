"""Inline SVG charts of the run report: line charts, stacked bars, the confusion matrix and a
timeline band. Plain strings, no plotting library: the page must open offline and print.

Every series differs by colour (Okabe-Ito, safe for colour-blind readers) *and* by dash and
marker shape, and every chart has axis labels and a text legend, so nothing is told by colour
alone. Charts scale with the page (viewBox); text is sized for the chart's natural width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999933")
DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 2", "1 2")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "triangle-down")
FONT = 12


def fmt(v: float, digits: int = 3) -> str:
    """A short number for axis ticks and labels (`0.5`, `1e-05`, `120`)."""
    if v == 0:
        return "0"
    if abs(v) < 1e-3 or abs(v) >= 1e5:
        mantissa, exponent = f"{v:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:.{digits}g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten (with 2 and 5 between them when the range is short) covering [lo, hi] > 0."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mult = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [m * 10.0**e for e in range(a, b + 1) for m in mult]
    inside = [t for t in ticks if lo <= t <= hi]
    below = [t for t in ticks if t < lo]
    above = [t for t in ticks if t > hi]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


def marker(shape: str, x: float, y: float, r: float, color: str, fill: str | None = None) -> str:
    """A marker shape centred at (x, y)."""
    f = fill or color
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{f}" stroke="{color}"/>'
    if shape == "square":
        side = f'width="{2 * r:.1f}" height="{2 * r:.1f}"'
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" {side} fill="{f}" stroke="{color}"/>'
    if shape in ("triangle", "triangle-down"):
        s = 1 if shape == "triangle" else -1
        base = y + s * r * 0.8
        pts = f"{x:.1f},{y - s * r * 1.2:.1f} {x - r * 1.1:.1f},{base:.1f} {x + r * 1.1:.1f},{base:.1f}"
        return f'<polygon points="{pts}" fill="{f}" stroke="{color}"/>'
    if shape == "diamond":
        q = r * 1.3
        pts = f"{x:.1f},{y - q:.1f} {x + q:.1f},{y:.1f} {x:.1f},{y + q:.1f} {x - q:.1f},{y:.1f}"
        return f'<polygon points="{pts}" fill="{f}" stroke="{color}"/>'
    return (
        f'<path d="M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}" '
        f'stroke="{color}" stroke-width="2"/>'
    )


def swatch(style: int, line: bool = True) -> str:
    """The legend sample of series style `style`: its line, dash and marker."""
    c, d, m = style_of(style)
    dash = f' stroke-dasharray="{d}"' if d else ""
    seg = f'<line x1="1" y1="7" x2="33" y2="7" stroke="{c}" stroke-width="2"{dash}/>' if line else ""
    return f'<svg class="swatch" width="34" height="14" aria-hidden="true">{seg}{marker(m, 17, 7, 4, c)}</svg>'


def style_of(i: int) -> tuple[str, str, str]:
    return COLORS[i % len(COLORS)], DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)]


def legend(entries: Sequence[tuple[int, str]], line: bool = True) -> str:
    """The HTML legend under a chart: (style, label) entries."""
    items = "".join(f"<li>{swatch(s, line)}{escape(label)}</li>" for s, label in entries)
    return f'<ul class="legend">{items}</ul>'


@dataclass
class Series:
    """One line: its label, (x, y) points and style index (colour, dash, marker)."""

    label: str
    points: list[tuple[float, float]]
    style: int = 0


@dataclass
class Mark:
    """A vertical line at x with a label (the best epoch), and the point it highlights."""

    x: float
    label: str
    y: float | None = None


@dataclass
class Frame:
    """Plot area and scales of a chart."""

    width: int
    height: int
    left: int = 62
    right: int = 14
    top: int = 26
    bottom: int = 44
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    log_y: bool = False
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        lo, hi = self.x_range
        return self.left + (x - lo) / ((hi - lo) or 1.0) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        lo, hi = self.y_range
        if self.log_y:
            y, lo, hi = math.log10(y), math.log10(lo), math.log10(hi)
        return self.height - self.bottom - (y - lo) / ((hi - lo) or 1.0) * (self.height - self.top - self.bottom)


def _axes(f: Frame, xticks: Sequence[float], yticks: Sequence[float], x_label: str, y_label: str) -> None:
    x0, x1, y0, y1 = f.left, f.width - f.right, f.height - f.bottom, f.top
    for t in yticks:
        y = f.py(t)
        f.parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" class="grid"/>')
        f.parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    for t in xticks:
        x = f.px(t)
        f.parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 5}" class="axis"/>')
        f.parts.append(f'<text x="{x:.1f}" y="{y0 + 18}" text-anchor="middle">{fmt(t)}</text>')
    f.parts.append(f'<path d="M{x0},{y1}V{y0}H{x1}" class="axis" fill="none"/>')
    f.parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{f.height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    cy = (y0 + y1) / 2
    f.parts.append(
        f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">{escape(y_label)}</text>'
    )


def svg(f: Frame, title: str, desc: str = "", cls: str = "chart") -> str:
    body = "".join(f.parts)
    return (
        f'<svg class="{cls}" viewBox="0 0 {f.width} {f.height}" width="{f.width}" height="{f.height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + (f"<desc>{escape(desc)}</desc>" if desc else "")
        + body
        + "</svg>"
    )


@dataclass(frozen=True)
class ChartAxes:
    """A line chart's axes: their labels, a log y axis, a y range that reaches down to `y_floor`,
    x ticks on whole numbers only (`integer_x`: epochs)."""

    x_label: str
    y_label: str
    log_y: bool = False
    y_floor: float | None = None
    integer_x: bool = True


def line_chart(
    title: str,
    series: Sequence[Series],
    axes: ChartAxes,
    *,
    marks: Sequence[Mark] = (),
    width: int = 520,
    height: int = 290,
) -> str:
    """A line chart with markers at every point, axis labels and optional vertical marks."""
    x_label, y_label, log_y, y_floor = axes.x_label, axes.y_label, axes.log_y, axes.y_floor
    pts = [(x, y) for s in series for x, y in s.points if math.isfinite(y) and (not log_y or y > 0)]
    f = Frame(width, height, log_y=log_y)
    if not pts:
        f.parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no values yet</text>')
        return svg(f, title)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt = nice_ticks(min(xs), max(xs), 6)
    if min(xs) == max(xs):  # one epoch: its tick alone, the point in the middle, not on the axis
        xt = [min(xs)]
    elif axes.integer_x:
        xt = sorted({int(round(t)) for t in xt if abs(t - round(t)) < 1e-9}) or [int(min(xs))]
    lo, hi = min(ys), max(ys)
    if y_floor is not None:
        lo = min(lo, y_floor)
    yt = log_ticks(lo, hi) if log_y else nice_ticks(lo, hi, 5)
    f.x_range = (min(xt[0], min(xs)), max(xt[-1], max(xs)))
    if f.x_range[0] == f.x_range[1]:
        f.x_range = (f.x_range[0] - 1, f.x_range[0] + 1)
    f.y_range = (yt[0], yt[-1])
    _axes(f, xt, yt, x_label, y_label)
    for s in series:
        c, d, m = style_of(s.style)
        good = [(x, y) for x, y in s.points if math.isfinite(y) and (not log_y or y > 0)]
        if len(good) > 1:
            path = "M" + "L".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in good)
            dash = f' stroke-dasharray="{d}"' if d else ""
            f.parts.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        r = 3.5 if len(good) <= 40 else 2.0
        for x, y in good:
            f.parts.append(marker(m, f.px(x), f.py(y), r, c))
    for mk in marks:
        x = f.px(mk.x)
        f.parts.append(f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{height - f.bottom}" class="mark"/>')
        if mk.y is not None and (not log_y or mk.y > 0):
            f.parts.append(f'<circle cx="{x:.1f}" cy="{f.py(mk.y):.1f}" r="7" class="mark-ring"/>')
        right = x < width * 0.6
        tx = x + 5 if right else x - 5
        f.parts.append(
            f'<text x="{tx:.1f}" y="{f.top - 8}" text-anchor="{"start" if right else "end"}" class="mark-label">'
            f"{escape(mk.label)}</text>"
        )
    return svg(f, title, "; ".join(f"{s.label}: {len(s.points)} points" for s in series))


def stacked_bars(
    title: str,
    xs: Sequence[float],
    stacks: Sequence[tuple[str, Sequence[float]]],
    *,
    x_label: str,
    y_label: str,
    top_labels: Sequence[str] | None = None,
    width: int = 520,
    height: int = 290,
) -> str:
    """Bars at integer x (epochs), each stacked from `stacks` (label, values); the second stack is
    hatched as well as coloured. `top_labels` are written above the bars when they fit."""
    f = Frame(width, height)
    totals = [sum(v[i] for _, v in stacks) for i in range(len(xs))]
    if not xs:
        f.parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no values yet</text>')
        return svg(f, title)
    yt = nice_ticks(0.0, max(totals) or 1.0, 5)
    f.x_range = (min(xs) - 0.6, max(xs) + 0.6)
    f.y_range = (yt[0], yt[-1])
    xt = [t for t in nice_ticks(min(xs), max(xs), 8) if abs(t - round(t)) < 1e-9 and min(xs) <= t <= max(xs)]
    _axes(f, [int(round(t)) for t in xt] or list(xs), yt, x_label, y_label)
    bw = max(2.0, min(36.0, 0.7 * (f.px(1) - f.px(0))))
    for i, x in enumerate(xs):
        base = 0.0
        for k, (label, values) in enumerate(stacks):
            v = values[i]
            y_hi, y_lo = f.py(base + v), f.py(base)
            fill = "url(#t4v-hatch)" if k == 1 else COLORS[k]
            f.parts.append(
                f'<rect x="{f.px(x) - bw / 2:.1f}" y="{y_hi:.1f}" width="{bw:.1f}" height="{max(y_lo - y_hi, 0):.1f}" '
                f'fill="{fill}"><title>epoch {fmt(x)}: {escape(label)} {fmt(v)}</title></rect>'
            )
            base += v
        if top_labels and bw >= 22:
            f.parts.append(
                f'<text x="{f.px(x):.1f}" y="{f.py(base) - 4:.1f}" text-anchor="middle" class="small">'
                f"{escape(top_labels[i])}</text>"
            )
    return svg(f, title)


def bar_swatch(k: int) -> str:
    """Legend sample of stack k of `stacked_bars` (the second one hatched)."""
    fill = "url(#t4v-hatch)" if k == 1 else COLORS[k]
    return (
        '<svg class="swatch" width="18" height="14" aria-hidden="true">'
        f'<rect x="1" y="1" width="16" height="12" fill="{fill}"/></svg>'
    )


def heat(frac: float) -> str:
    """White to dark blue for 0..1 (one hue: the value reads as lightness in print and grey scale)."""
    t = min(max(frac, 0.0), 1.0) ** 0.6
    r, g, b = (round(255 + (a - 255) * t) for a in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def confusion_chart(
    counts: np.ndarray, names: Sequence[str], order: Sequence[int], *, title: str, label_names: bool = True
) -> str:
    """The (len(order))^2 block of a confusion matrix, rows = true class, columns = predicted; cells
    shaded by the share of the true class's videos, with the count written in each cell when the
    block is small and in every cell's tooltip."""
    n = len(order)
    sub = counts[np.ix_(order, order)]
    support = counts[list(order)].sum(axis=1)
    cell = max(6.0, min(44.0, 640.0 / max(n, 1)))
    labels = [f"{i}: {names[i]}" if label_names else str(i) for i in order]
    longest = max((len(s) for s in labels), default=1)
    font = 12 if cell >= 36 else 11 if cell >= 11 else max(6.0, cell - 1)
    pad = min(longest, 34) * font * 0.58 + 8
    size = f'style="font-size:{font:.0f}px"'
    left, top = pad + 20, pad * 0.87 + 24  # column labels rise at 60 degrees
    w, h = left + n * cell + pad * 0.5 + 10, top + n * cell + 10
    parts = []
    for r, i in enumerate(order):
        for c, j in enumerate(order):
            v = int(sub[r, c])
            if v == 0 and r != c:
                continue
            frac = v / support[r] if support[r] else 0.0
            x, y = left + c * cell, top + r * cell
            kind = "correct" if r == c else "predicted as"
            tip = (
                f"{names[i]} ({kind} {names[j]}): {v} of {int(support[r])}"
                if r != c
                else f"{names[i]}: {v} of {int(support[r])} right"
            )
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" fill="{heat(frac)}"'
                + (' class="diag"' if r == c else "")
                + f"><title>{escape(tip)}</title></rect>"
            )
            if n <= 30 and v:
                color = "#fff" if frac > 0.45 else "#111"
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + font * 0.35:.1f}" text-anchor="middle" '
                    f'style="fill:{color};font-size:{font:.0f}px">{v}</text>'
                )
    for k, text in enumerate(labels):
        short = text if len(text) <= 34 else text[:33] + "…"
        y = top + k * cell + cell / 2 + font * 0.35
        parts.append(f'<text x="{left - 4:.1f}" y="{y:.1f}" text-anchor="end" {size}>{escape(short)}</text>')
        x = left + k * cell + cell / 2 + font * 0.35
        parts.append(
            f'<text x="{x:.1f}" y="{top - 4:.1f}" {size} transform="rotate(-60 {x:.1f} {top - 4:.1f})">'
            f"{escape(short)}</text>"
        )
    parts.append(f'<rect x="{left}" y="{top}" width="{n * cell:.1f}" height="{n * cell:.1f}" class="frame"/>')
    parts.append(f'<text x="{left + n * cell / 2:.1f}" y="12" text-anchor="middle">predicted class (top-1) →</text>')
    cy = top + n * cell / 2
    parts.append(
        f'<text x="12" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 12 {cy:.1f})">true class →</text>'
    )
    return (
        f'<svg class="confusion" viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}" height="{h:.0f}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>' + "".join(parts) + "</svg>"
    )


def heat_scale() -> str:
    """The colour key of `confusion_chart`, with its numbers."""
    ticks = "".join(
        f'<text x="{20 + 200 * t:.0f}" y="34" text-anchor="middle">{int(100 * t)} %</text>'
        for t in (0, 0.25, 0.5, 0.75, 1)
    )
    return (
        '<svg class="scale" viewBox="0 0 240 40" width="240" height="40" role="img" '
        'aria-label="colour key: share of the true class\'s videos">'
        '<rect x="20" y="4" width="200" height="14" fill="url(#t4v-heat)" stroke="#555"/>' + ticks + "</svg>"
    )


def timeline_band(
    windows: Sequence[tuple[float, float, int, float]], keys: dict[int, str], *, unit: str, title: str, width: int = 900
) -> str:
    """Windows (start, end, class style index, probability) as a band coloured by the top-1 class,
    each segment with its class key written in it when it fits, and below it a bar of the top-1
    probability per window."""
    if not windows:
        return ""
    left, right, band_y, band_h, bar_h = 70, 14, 10, 34, 70
    lo, hi = min(w[0] for w in windows), max(w[1] for w in windows)
    scale = (width - left - right) / ((hi - lo) or 1.0)
    bar_top = band_y + band_h + 12
    height = bar_top + bar_h + 44
    parts = [f'<text x="{left - 6}" y="{band_y + band_h / 2 + 4}" text-anchor="end">top-1</text>']
    starts = [w[0] for w in windows] + [hi]
    for n, (s, e, style, p) in enumerate(windows):
        seg_end = min(e, starts[n + 1]) if n + 1 < len(windows) else e
        x0, x1 = left + (s - lo) * scale, left + (seg_end - lo) * scale
        color = COLORS[style % len(COLORS)]
        tip = f"{fmt(s)}-{fmt(e)} {unit}: {keys.get(style, '')} {100 * p:.1f} %"
        parts.append(
            f'<rect x="{x0:.1f}" y="{band_y}" width="{max(x1 - x0, 0.5):.1f}" height="{band_h}" fill="{color}" '
            f'stroke="#fff" stroke-width="0.5"><title>{escape(tip)}</title></rect>'
        )
        if x1 - x0 >= 16:
            parts.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{band_y + band_h / 2 + 4}" text-anchor="middle" class="on-dark">'
                f"{style + 1}</text>"
            )
        bh = p * bar_h
        parts.append(
            f'<rect x="{x0:.1f}" y="{bar_top + bar_h - bh:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" height="{bh:.1f}" '
            f'fill="{color}" opacity="0.75"><title>{escape(tip)}</title></rect>'
        )
    for t in (0.0, 0.5, 1.0):
        y = bar_top + bar_h - t * bar_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{int(100 * t)} %</text>')
    for t in nice_ticks(lo, hi, 8):
        if lo <= t <= hi:
            x = left + (t - lo) * scale
            parts.append(
                f'<line x1="{x:.1f}" y1="{bar_top + bar_h}" x2="{x:.1f}" y2="{bar_top + bar_h + 5}" class="axis"/>'
            )
            parts.append(f'<text x="{x:.1f}" y="{bar_top + bar_h + 18}" text-anchor="middle">{fmt(t)}</text>')
    parts.append(
        f'<text x="{left + (width - left - right) / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        f"{'time (s)' if unit == 's' else 'frame'}; bars: probability of the top-1 class</text>"
    )
    return (
        f'<svg class="band" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>' + "".join(parts) + "</svg>"
    )


def page_defs() -> str:
    """Patterns and gradients the page's charts share (ids must be unique in the document)."""
    stops = "".join(f'<stop offset="{t}" stop-color="{heat(t)}"/>' for t in (0, 0.25, 0.5, 0.75, 1))
    return (
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
        '<pattern id="t4v-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{COLORS[1]}"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" '
        'stroke-width="2"/></pattern>'
        f'<linearGradient id="t4v-heat">{stops}</linearGradient></defs></svg>'
    )
