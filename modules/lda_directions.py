"""IJCV `lda` classifier: class directions fitted by Linear Discriminant Analysis on video features
(`python -m app.lda` extracts the features of a trained model and calls `fit_lda`).

The original's file was called `lda_0.1.pt`; how it was made is not in its repository. We read
"0.1" as the LDA shrinkage and use `solver="lsqr", shrinkage=0.1` by default (documented guess).
The rows are the discriminant directions `coef_` (Σ⁻¹ μ_k); the intercepts are dropped because the
model compares directions (cosine) only.
"""

from __future__ import annotations

import numpy as np
import torch

from utils.errors import UserError


def fit_lda(
    features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, shrinkage: float | str | None = 0.1
) -> torch.Tensor:
    """(N, D) features and (N,) integer labels 0..C-1 -> (C, D) float32 class directions."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # heavy; only this tool needs it

    x = np.asarray(
        features.detach().cpu().double() if isinstance(features, torch.Tensor) else features, dtype=np.float64
    )
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"fit_lda needs (N, D) features and (N,) labels, got {x.shape} and {y.shape}")
    classes = np.unique(y)
    num_classes = int(y.max()) + 1
    if len(classes) != num_classes:
        missing = sorted(set(range(num_classes)) - set(classes.tolist()))
        raise UserError(f"LDA needs at least one training video of every class; none for classes {missing[:10]}")
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)
    lda.fit(x, y)
    coef = lda.coef_
    if num_classes == 2:  # sklearn keeps one direction (class 1 vs 0); give each class its own
        coef = np.concatenate([-coef, coef]) / 2
    return torch.from_numpy(coef).float()
