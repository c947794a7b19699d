"""Pictures of an evaluation and of a prediction timeline (matplotlib, Agg, written atomically).

Each function takes plain arrays and names, draws one PNG and returns its path, or None when
matplotlib is not installed (the numbers are always written by the callers as CSV / JSON too).
Legibility at K400 scale (400 classes) comes first: a picture never names more classes than fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.analysis import confused_block
from utils.fileio import atomic_write

FULL_MATRIX = 30  # classes up to which the whole confusion matrix is drawn with names
FULL_BARS = 40  # classes up to which every class gets a named bar
NAME_CHARS = 32


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _short(name: str, n: int = NAME_CHARS) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _save(fig: Any, plt: Any, path: str | Path, dpi: int = 100) -> Path:
    out = atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return out


def _matrix_panel(ax: Any, conf: np.ndarray, classes: list[int], names: Sequence[str], title: str) -> Any:
    """Rows normalised by the true class's videos (colour) with the counts written in the cells."""
    sub = conf[np.ix_(classes, classes)].astype(np.float64)
    support = conf[classes].sum(axis=1).astype(np.float64)
    frac = sub / np.maximum(support, 1)[:, None]
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    k = len(classes)
    font = 9 if k <= 15 else 7 if k <= 30 else 5
    labels = [_short(names[c]) for c in classes]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(k), [f"{lab} ({int(n)})" for lab, n in zip(labels, support, strict=True)], fontsize=font)
    ax.set_xlabel("predicted class (top-1)")
    ax.set_ylabel("true class (videos)")
    ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            if sub[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(sub[i, j])),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if frac[i, j] > 0.55 else "black",
                )
    return im


CURVES = (("train_loss", "train loss"), ("lr", "learning rate (head)"), ("val_top1", "val top-1 (%)"))


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """`curves.png` of a training run (utils.logger.MetricsLog): train loss, LR and validation
    top-1 against the epoch, with whole epochs on the axis (a 1-2 epoch run has no 0.25 ticks)."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = [int(float(r["epoch"])) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs and max(epochs) - min(epochs) < 4:  # few epochs: room around the points
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path, dpi=80)


def plot_confusion(
    conf: np.ndarray, class_names: Sequence[str], path: str | Path, block: int = FULL_MATRIX
) -> Path | None:
    """The confusion matrix: whole and named up to `block` classes; beyond, the `block` most
    confused classes named (pairs next to each other) beside the whole matrix as a picture with
    classes sorted by accuracy (worst first)."""
    plt = _pyplot()
    if plt is None:
        return None
    c = conf.shape[0]
    if c <= block:
        side = max(5.0, 0.32 * c + 3.0)
        fig, ax = plt.subplots(figsize=(side + 1.5, side))
        im = _matrix_panel(
            ax,
            conf,
            list(range(c)),
            class_names,
            f"confusion matrix ({int(conf.sum())} videos, {c} classes; numbers = videos)",
        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("fraction of the true class's videos")
        return _save(fig, plt, path)
    classes = confused_block(conf, block)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(24, 12), gridspec_kw={"width_ratios": [1.2, 1]})
    im = _matrix_panel(
        ax,
        conf,
        classes,
        class_names,
        f"the {len(classes)} most confused of {c} classes (numbers = videos)",
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("fraction of the true class's videos")
    support = conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.inf)
    order = np.lexsort((np.arange(c), acc))
    frac = conf[np.ix_(order, order)] / np.maximum(support[order], 1)[:, None]
    import matplotlib.colors as mcolors

    # square-root colour scale: the few videos off the diagonal stay visible; the bar reads in fractions
    whole = ax2.imshow(
        frac, cmap="magma_r", norm=mcolors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0), interpolation="nearest"
    )
    ax2.set_title(f"all {c} classes, sorted by top-1 accuracy (worst first)", fontsize=10)
    ax2.set_xlabel("predicted class (rank by accuracy)")
    ax2.set_ylabel("true class (rank by accuracy)")
    bar = fig.colorbar(whole, ax=ax2, fraction=0.046, pad=0.04, ticks=[0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
    bar.set_label("fraction of the true class's videos (square-root scale)")
    fig.tight_layout()
    return _save(fig, plt, path, dpi=100)


LOW_ACCURACY = 50.0  # bars below it are red
LOW_COLOUR, OK_COLOUR = "#d62728", "#1f77b4"


def _accuracy_colours(acc: np.ndarray) -> list[str]:
    return [LOW_COLOUR if a < LOW_ACCURACY else OK_COLOUR for a in acc]


def _accuracy_legend(ax: Any, mean: float, **where: Any) -> None:
    """What the bar colours and the dashed line mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color=OK_COLOUR, label=f"top-1 ≥ {LOW_ACCURACY:.0f} %"),
        Patch(color=LOW_COLOUR, label=f"top-1 < {LOW_ACCURACY:.0f} %"),
        Line2D([], [], color="gray", ls="--", lw=1, label=f"mean class accuracy {mean:.1f} %"),
    ]
    ax.legend(handles=handles, fontsize=8, framealpha=0.9, **where)


def plot_class_accuracy(
    acc: np.ndarray, support: np.ndarray, class_names: Sequence[str], path: str | Path, named: int = FULL_BARS
) -> Path | None:
    """Per-class top-1 accuracy: every class named up to `named` classes (worst at the top); beyond,
    the `named` worst classes named beside the sorted accuracy of all classes."""
    plt = _pyplot()
    if plt is None:
        return None
    present = np.nonzero(support > 0)[0]
    order = present[np.lexsort((present, -support[present], acc[present]))]
    mean = float(acc[present].mean()) if len(present) else 0.0
    c = len(class_names)

    def bars(ax: Any, idx: np.ndarray, title: str) -> None:
        y = np.arange(len(idx))
        ax.barh(y, acc[idx], color=_accuracy_colours(acc[idx]))
        ax.set_yticks(
            y, [f"{_short(class_names[i])} (n={int(support[i])})" for i in idx], fontsize=8 if len(idx) <= 30 else 6
        )
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.axvline(mean, color="gray", ls="--", lw=1)
        ax.set_xlabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=10)
        font = 8 if len(idx) <= 30 else 6
        for yy, i in zip(y, idx, strict=True):
            inside = acc[i] > 80  # the label at the end of the bar: inside in white, else after it
            ax.text(
                acc[i] - 1 if inside else acc[i] + 1,
                yy,
                f"{acc[i]:.0f}%",
                va="center",
                fontsize=font,
                ha="right" if inside else "left",
                color="white" if inside else "black",
            )

    missing = c - len(present)
    note = f"; {missing} classes without videos" if missing else ""
    if len(order) <= named:
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.25 * len(order) + 1.5)))
        bars(ax, order, f"per-class top-1 accuracy{note}")
        _accuracy_legend(ax, mean, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside: never on a bar
        fig.tight_layout()
        return _save(fig, plt, path)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 9), gridspec_kw={"width_ratios": [1, 1.2]})
    worst = min(named, FULL_MATRIX)
    bars(ax, order[:worst], f"the {worst} worst of {len(order)} classes")
    ranked = acc[order]
    ax2.bar(np.arange(len(ranked)), ranked, width=1.0, color=_accuracy_colours(ranked))
    ax2.axhline(mean, color="gray", ls="--", lw=1)
    ax2.set_ylim(0, 100)
    ax2.set_xlim(-0.5, len(ranked) - 0.5)
    ax2.set_xlabel("classes, sorted by top-1 accuracy")
    ax2.set_ylabel("top-1 accuracy (%)")
    ax2.set_title(f"all {len(order)} classes with videos{note}", fontsize=10)
    _accuracy_legend(ax2, mean, loc="upper left")  # one legend for both panels: low bars on the left
    fig.tight_layout()
    return _save(fig, plt, path)


def window_stretches(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Edges of the stretch of time each window stands for in the picture: the part nearer to its
    centre than to a neighbour's (the first from its start, the last to its end). Band and line
    share them, so each window's bar and step are centred on the window, also when windows overlap."""
    if not len(starts):
        return np.zeros(1)
    mids = (starts + ends) / 2
    return np.concatenate([[starts[0]], (mids[1:] + mids[:-1]) / 2, [ends[-1]]])


def plot_timeline(
    starts: Sequence[float],
    ends: Sequence[float],
    top_names: Sequence[str],
    top_probs: Sequence[float],
    path: str | Path,
    *,
    unit: str = "s",
    title: str = "",
    max_classes: int = 15,
) -> Path | None:
    """Top-1 class over time: one row per class that is top-1 somewhere (at most `max_classes`, the
    others as 'other'), a bar per window shaded by its probability; below, the top-1 probability
    as a step line over the same stretches of time, with a dot at each window's centre."""
    plt = _pyplot()
    if plt is None:
        return None
    import matplotlib.colors as mcolors

    starts_a, ends_a = np.asarray(starts, float), np.asarray(ends, float)
    mids = (starts_a + ends_a) / 2
    # rows in order of first appearance, most frequent kept
    counts: dict[str, int] = {}
    for n in top_names:
        counts[n] = counts.get(n, 0) + 1
    keep = sorted(counts, key=lambda n: (-counts[n], top_names.index(n)))[:max_classes]
    rows = [n for n in dict.fromkeys(top_names) if n in keep]
    if len(counts) > len(keep):
        rows.append("other")
    row_of = {n: rows.index(n if n in keep else "other") for n in counts}
    palette = list(mcolors.TABLEAU_COLORS.values())
    fig, (ax, ax2) = plt.subplots(
        2,
        1,
        figsize=(12, 1.2 + 0.35 * len(rows) + 2.0),
        sharex=True,
        gridspec_kw={"height_ratios": [max(1.0, 0.35 * len(rows)), 1.6]},
    )
    edges = window_stretches(starts_a, ends_a)
    for s, e, name, p in zip(edges[:-1], edges[1:], top_names, top_probs, strict=True):
        r = row_of[name]
        ax.barh(
            r,
            e - s,
            left=s,
            height=0.8,
            color=palette[r % len(palette)],
            alpha=0.25 + 0.75 * float(p),
            edgecolor="none",
        )
    ax.set_yticks(range(len(rows)), [_short(n, 40) for n in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title or "top-1 class per window (shade = probability)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if len(mids):
        ax2.stairs(np.asarray(top_probs, float), edges, baseline=None, lw=1.2, color="#1f77b4")
        ax2.plot(mids, top_probs, "o", ms=3, color="#1f77b4")
        ax2.set_xlim(float(edges[0]), float(edges[-1]))
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("top-1 prob.")
    ax2.set_xlabel("time (s)" if unit == "s" else "frame")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)
