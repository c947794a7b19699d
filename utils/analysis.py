"""Per-class analysis of an evaluation: pure functions of the gathered scores and labels.

Inputs are the engine's output after fusion (`utils.evaluate.EvalOutput.scores`): `scores` (N, C)
class probabilities (or logits: only their order per row matters, except in the per-video rows,
which report them as probabilities) and integer `labels` (N,), each video once. Every count is an
exact integer, so nothing depends on the number of processes that produced the output.

* `confusion_matrix`: (C, C) counts, row = true class, column = top-1 prediction.
* `per_class`: support, top-1 / top-k correct and accuracy of every class.
* `most_confused_pairs`: the off-diagonal cells with the most videos.
* `worst_classes`: the classes with videos, lowest top-1 first.
* `confused_block`: the classes to show when C is too large for one legible picture.
* `per_video_rows`: one row per video (id, label, top-k names and probabilities, correct?).
* `class_analysis`: all of the above that fits a JSON document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence


def _np(x: ArrayLike, dtype: Any = None) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(dtype) if dtype is not None else arr


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be (N, C) and labels (N,), got {scores.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")


def topk_indices(scores: ArrayLike, k: int) -> np.ndarray:
    """(N, k) class indices, highest score first; ties keep the lower index first."""
    s = _np(scores, np.float64)
    k = min(k, s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def confusion_matrix(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """(C, C) int64 counts: [true class, top-1 predicted class]."""
    s, y = _np(scores), _np(labels, np.int64)
    _check(s, y)
    c = s.shape[1]
    pred = s.argmax(axis=1)
    return np.bincount(y * c + pred, minlength=c * c).reshape(c, c).astype(np.int64)


def per_class(scores: ArrayLike, labels: ArrayLike, k: int = 5) -> dict[str, np.ndarray]:
    """Per class: support (videos), top-1 and top-k correct counts, top-1 and top-k accuracy in
    percent (NaN for a class without videos)."""
    s, y = _np(scores), _np(labels, np.int64)
    _check(s, y)
    c = s.shape[1]
    support = np.bincount(y, minlength=c)
    hit1 = s.argmax(axis=1) == y
    hitk = (topk_indices(s, k) == y[:, None]).any(axis=1) if len(y) else np.zeros(0, bool)
    correct1 = np.bincount(y[hit1], minlength=c)
    correctk = np.bincount(y[hitk], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc1 = np.where(support > 0, 100.0 * correct1 / np.maximum(support, 1), np.nan)
        acck = np.where(support > 0, 100.0 * correctk / np.maximum(support, 1), np.nan)
    return {"support": support, "top1_correct": correct1, "topk_correct": correctk, "top1": acc1, "topk": acck}


def mean_class_accuracy(acc: np.ndarray) -> float:
    """Mean of the per-class top-1 accuracies over the classes that have videos (NaN excluded);
    equals `utils.metrics.mean_class_accuracy`."""
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else 0.0


def most_confused_pairs(conf: np.ndarray, k: int = 20) -> list[dict[str, int | float]]:
    """The k off-diagonal cells with most videos (count > 0), most first; ties by (true, predicted)
    index. `fraction` = count / videos of the true class."""
    off = conf.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    counts = off[true, pred]
    order = np.lexsort((pred, true, -counts))[:k]
    support = conf.sum(axis=1)
    return [
        {
            "true": int(true[i]),
            "predicted": int(pred[i]),
            "count": int(counts[i]),
            "fraction": float(counts[i] / support[true[i]]),
        }
        for i in order
    ]


def worst_classes(acc: np.ndarray, support: np.ndarray, k: int = 10) -> list[int]:
    """Indices of the k classes with videos and the lowest top-1 accuracy; ties: more videos first,
    then the lower index."""
    present = np.nonzero(support > 0)[0]
    order = np.lexsort((present, -support[present], acc[present]))
    return [int(present[i]) for i in order[:k]]


def confused_block(conf: np.ndarray, size: int = 30) -> list[int]:
    """At most `size` classes for a legible confusion picture, in display order.

    All classes when C <= size. Otherwise the classes of the most confused pairs, taken pair by pair
    (so that each class sits next to what it is confused with), then the least accurate remaining
    classes; when nothing is confused, the least accurate classes."""
    c = conf.shape[0]
    if c <= size:
        return list(range(c))
    chosen: list[int] = []
    for pair in most_confused_pairs(conf, k=c * c):
        for cls in (int(pair["true"]), int(pair["predicted"])):
            if cls not in chosen and len(chosen) < size:
                chosen.append(cls)
        if len(chosen) >= size:
            return chosen
    support = conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.inf)
    for cls in np.lexsort((np.arange(c), acc)):
        if int(cls) not in chosen:
            chosen.append(int(cls))
        if len(chosen) >= size:
            break
    return chosen


def per_video_rows(
    scores: ArrayLike, labels: ArrayLike, ids: Sequence[str], class_names: Sequence[str], k: int = 5
) -> list[dict[str, Any]]:
    """One dict per video: id, label, label_name, correct (top-1), in_topk, rank of the true class
    (1 = top-1), its probability, then pred{i}, pred{i}_prob for i = 1..k."""
    s, y = _np(scores, np.float64), _np(labels, np.int64)
    _check(s, y)
    if len(ids) != len(y):
        raise ValueError(f"{len(ids)} ids for {len(y)} videos")
    k = min(k, s.shape[1])
    top = topk_indices(s, s.shape[1])
    rows = []
    for n in range(len(y)):
        rank = int(np.nonzero(top[n] == y[n])[0][0]) + 1
        row: dict[str, Any] = {
            "id": ids[n],
            "label": int(y[n]),
            "label_name": class_names[int(y[n])],
            "correct": int(rank == 1),
            "in_topk": int(rank <= k),
            "label_rank": rank,
            "label_prob": float(s[n, y[n]]),
        }
        for i in range(k):
            row[f"pred{i + 1}"] = class_names[int(top[n, i])]
            row[f"pred{i + 1}_prob"] = float(s[n, top[n, i]])
        rows.append(row)
    return rows


def class_analysis(
    scores: ArrayLike, labels: ArrayLike, class_names: Sequence[str], *, k: int = 5, pairs: int = 20, worst: int = 10
) -> dict[str, Any]:
    """JSON-ready summary: the per-class table, mean class accuracy, the most confused pairs and the
    worst classes (names and numbers)."""
    s = _np(scores)
    if len(class_names) != s.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {s.shape[1]} score columns")
    table = per_class(s, labels, k)
    conf = confusion_matrix(s, labels)
    kk = min(k, s.shape[1])

    def num(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    classes = [
        {
            "index": i,
            "name": class_names[i],
            "support": int(table["support"][i]),
            "top1_correct": int(table["top1_correct"][i]),
            "top1": num(table["top1"][i]),
            f"top{kk}": num(table["topk"][i]),
        }
        for i in range(s.shape[1])
    ]
    confused = [
        {**p, "true_name": class_names[int(p["true"])], "predicted_name": class_names[int(p["predicted"])]}
        for p in most_confused_pairs(conf, pairs)
    ]
    return {
        "num_videos": int(len(_np(labels))),
        "num_classes": int(s.shape[1]),
        "classes_without_videos": int((table["support"] == 0).sum()),
        "mean_class_accuracy": mean_class_accuracy(table["top1"]),
        "worst_classes": [classes[i] for i in worst_classes(table["top1"], table["support"], worst)],
        "most_confused_pairs": confused,
        "per_class": classes,
    }
