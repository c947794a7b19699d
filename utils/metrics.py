"""Classification metrics over per-video scores, computed once on the gathered outputs.

All functions take `scores` (N, C) (logits or probabilities: only their order per row or per
column matters) and integer `labels` (N,), as torch tensors or numpy arrays, and return plain
Python numbers. Top-k counts are exact integers, so results from several processes never need
averaging of averages (the original averaged per-batch percentages across ranks).

`mean_average_precision` is ActivityNet's metric as the original computed it with torchnet's
`mAPMeter`: for every class, rank all videos by that class's score (descending), average the
precision at the rank of every positive video, divide by the number of positives (a class with
no positive video therefore scores AP 0 and still counts in the mean), then average over all
classes. Ties are broken by video order (a stable sort), where torchnet's unstable sort left
them unspecified; with continuous scores there are no ties and the value equals scikit-learn's
`average_precision_score(one_hot, scores, average="macro")`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence


def _as_tensor(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().cpu()
    return t.to(dtype) if dtype is not None else t


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.dim() != 2 or labels.dim() != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")


def topk_correct(scores: ArrayLike, labels: ArrayLike, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Number of videos whose label is among the k highest scores, for each k (k capped at C)."""
    s, y = _as_tensor(scores, torch.float32), _as_tensor(labels, torch.long)
    _check(s, y)
    ks = list(ks)
    if s.shape[0] == 0:
        return {k: 0 for k in ks}
    kmax = min(max(ks), s.shape[1])
    top = s.topk(kmax, dim=1).indices
    hit = top.eq(y[:, None])
    return {k: int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent for each k (0 for an empty set)."""
    n = len(labels)
    return {k: 100.0 * c / n if n else 0.0 for k, c in topk_correct(scores, labels, ks).items()}


def mean_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean over the classes that have at least one video of their top-1 recall, in percent."""
    s, y = _as_tensor(scores, torch.float32), _as_tensor(labels, torch.long)
    _check(s, y)
    if y.numel() == 0:
        return 0.0
    pred = s.argmax(dim=1)
    num_classes = max(s.shape[1], int(y.max()) + 1)
    total = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y[pred.eq(y)], minlength=num_classes).double()
    present = total > 0
    return float((correct[present] / total[present]).mean() * 100.0)


def average_precision_per_class(scores: ArrayLike, targets: ArrayLike) -> torch.Tensor:
    """AP of every column of `scores` (N, C) against binary `targets` (N, C), torchnet's way."""
    s = _as_tensor(scores, torch.float64)
    t = _as_tensor(targets, torch.float64)
    if s.shape != t.shape or s.dim() != 2:
        raise ValueError(f"scores and targets must both be (N, C), got {tuple(s.shape)} and {tuple(t.shape)}")
    order = torch.sort(s, dim=0, descending=True, stable=True).indices
    truth = t.gather(0, order)
    ranks = torch.arange(1, s.shape[0] + 1, dtype=torch.float64)[:, None]
    precision = truth.cumsum(0) / ranks
    return (precision * truth).sum(0) / truth.sum(0).clamp(min=1)


def mean_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """ActivityNet mAP in percent: mean over all C classes of the AP against one-hot labels."""
    s, y = _as_tensor(scores, torch.float64), _as_tensor(labels, torch.long)
    _check(s, y)
    targets = torch.nn.functional.one_hot(y, num_classes=s.shape[1]).double()
    return float(average_precision_per_class(s, targets).mean() * 100.0)


def classification_report(scores: ArrayLike, labels: ArrayLike, *, with_map: bool = False) -> dict:
    """top1/top5 (percent), their exact counts, mean class accuracy, n videos, and mAP on request."""
    counts = topk_correct(scores, labels, (1, 5))
    n = len(labels)
    out = {
        "top1": 100.0 * counts[1] / n if n else 0.0,
        "top5": 100.0 * counts[5] / n if n else 0.0,
        "top1_correct": counts[1],
        "top5_correct": counts[5],
        "mean_class_accuracy": mean_class_accuracy(scores, labels),
        "num_videos": n,
    }
    if with_map:
        out["mAP"] = mean_average_precision(scores, labels)
        num_classes = _as_tensor(scores).shape[1]
        present = torch.unique(_as_tensor(labels, torch.long)).numel()
        out["mAP_classes_without_videos"] = int(num_classes - present)  # each counts as AP 0
    return out
