"""The zero-shot protocols of docs/evaluation.md#zero-shot-test_zeroshotpy-every-protocol-in-one-command
over the engine's gathered output (no second pass over the data): full classes, and the
half-classes protocol (10 random halves of the class set, mean ± population std).
The selection reproduces the original's classes exactly."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from utils.evaluate import EvalOutput
from utils.metrics import classification_report


def half_class_splits(num_classes: int, repeats: int = 10) -> list[np.ndarray]:
    """The original's half-classes selections: for s in 0..repeats-1, numpy's legacy global
    generator seeded with s, `permutation(C)[:C // 2]`. The global RNG state is restored after."""
    state = np.random.get_state()
    try:
        splits = []
        for s in range(repeats):
            np.random.seed(s)
            splits.append(np.random.permutation(num_classes)[: num_classes // 2])
        return splits
    finally:
        np.random.set_state(state)


def restrict_to_classes(
    out: EvalOutput, class_embeddings: torch.Tensor, classes: np.ndarray | list[int]
) -> tuple[EvalOutput, torch.Tensor]:
    """Keep the videos of `classes`, re-index their labels to positions in the sorted selection
    and restrict the class embeddings to the same rows.

    Unlike the original (which took the classes from the labels present, so a selected class with
    no video vanished and shifted the labels after it), every selected class stays in the
    restricted classifier, with or without videos.
    """
    selected = torch.as_tensor(np.sort(np.asarray(classes)), dtype=torch.long)
    position = torch.full((class_embeddings.shape[0],), -1, dtype=torch.long)
    position[selected] = torch.arange(selected.numel())
    new_labels = position[out.labels]
    keep = new_labels >= 0
    sub = out.subset(keep)
    sub.labels = new_labels[keep]
    return sub, class_embeddings[selected]


def too_few_classes_warning(num_classes: int) -> str | None:
    """Below 4 classes a half holds at most one class: each split is 100 % (or empty) by construction."""
    per_split = num_classes // 2
    if per_split >= 2:
        return None
    return (
        f"half-classes protocol on {num_classes} classes: each split holds {per_split} class"
        f"{'' if per_split == 1 else 'es'}, so its top-1 is 100 % (or undefined) whatever the model; the "
        f"half-classes numbers mean nothing below 4 classes (the full-classes numbers stand)"
    )


def mean_std(rows: list[dict], keys: tuple[str, ...] = ("top1", "top5")) -> dict[str, float]:
    """`<key>_mean` and `<key>_std` over `rows`, each key in turn; the population std (ddof 0), as
    the original's half-classes protocol reports it."""
    out = {}
    for key in keys:
        values = np.array([row[key] for row in rows])
        out[f"{key}_mean"], out[f"{key}_std"] = float(values.mean()), float(values.std(ddof=0))
    return out


def zero_shot_report(
    out: EvalOutput, class_embeddings: torch.Tensor, *, scale: float = 100.0, repeats: int = 10
) -> dict:
    """Full-classes top-1/top-5 and the half-classes protocol (mean ± population std). With fewer
    than 4 classes the half-classes result is meaningless: a UserWarning, and `half_classes.warning`."""
    warning = too_few_classes_warning(class_embeddings.shape[0])
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=2)
    full = classification_report(out.scores(class_embeddings, scale), out.labels)
    splits = []
    for seed, classes in enumerate(half_class_splits(class_embeddings.shape[0], repeats)):
        sub, emb = restrict_to_classes(out, class_embeddings, classes)
        rep = classification_report(sub.scores(emb, scale), sub.labels)
        splits.append(
            {
                "seed": seed,
                "classes": sorted(int(c) for c in classes),
                "num_videos": rep["num_videos"],
                "top1": rep["top1"],
                "top5": rep["top5"],
                "mean_class_accuracy": rep["mean_class_accuracy"],
                "classes_without_videos": int(len(classes) - sub.labels.unique().numel()),
            }
        )
    return {
        "full_classes": full,
        "half_classes": {
            **({"warning": warning} if warning else {}),
            "protocol": "half-classes",
            "repeats": repeats,
            "classes_per_split": class_embeddings.shape[0] // 2,
            "selection": "np.random.seed(s); np.random.permutation(C)[:C // 2], s = 0..repeats-1",
            **mean_std(splits),
            "splits": splits,
        },
    }
