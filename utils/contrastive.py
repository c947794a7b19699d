"""The training objectives: cross-entropy over the classes (train.py) and the video-text
contrastive losses of the original's baseline train_nce.py (docs/training.md#contrastive-baseline-train_ncepy), as
functions `objective(model, x, labels) -> loss` for the training engine.

NCE: over the global batch of N = world_size x B videos and their class texts (one text per video,
so a class present twice is two columns), logits = exp(logit_scale) · cos(video, text) (N x N), the
multi-positive target gt[i, k] = [label_i == label_k], and for each direction (video -> text and
its transpose) KL(softmax(10 · gt) || softmax(logits)) per row, averaged over rows (the original's
`KLDivLoss(reduction='mean') · N`); the loss is the mean of both directions. DS (dual softmax)
first re-weights each direction's logits: logits · softmax(logits / 1000, dim=0) · N.
Across ranks, embeddings and labels are gathered without gradient and this rank's rows are its own
tensors, so the gradient flows through the local rows only (as the original).

Imports nothing above `utils/`: the model is called as `model(x)` -> logits (frozen classifier) or
`model(x, texts=class_indices)` -> (video embeddings, text embeddings, exp(logit_scale)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.choices import CONTRASTIVE_LOSSES, LOSS_TYPES
from utils.distributed import all_gather_keep_local_grad, all_gather_tensor
from utils.similarity import cosine_logits

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
TARGET_SHARPNESS = 10.0  # softmax(10 · gt): the original's soft multi-positive targets
DS_TEMPERATURE = 1000.0  # the original's dual-softmax temperature


def multi_positive_targets(labels: torch.Tensor) -> torch.Tensor:
    """gt (N, N): 1 where two videos share a label (every video is a positive of itself)."""
    return (labels[:, None] == labels[None, :]).float()


def kl_to_targets(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """KL(softmax(10 · gt) || softmax(logits)) per row, summed over columns, averaged over rows."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.softmax(TARGET_SHARPNESS * gt, dim=1), reduction="batchmean")


def dual_softmax(logits: torch.Tensor) -> torch.Tensor:
    """The DS re-weighting: logits · softmax(logits / 1000 over rows) · N."""
    return logits * F.softmax(logits / DS_TEMPERATURE, dim=0) * logits.shape[0]


def contrastive_loss(
    video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, labels: torch.Tensor, kind: str = "NCE"
) -> torch.Tensor:
    """The NCE / DS loss of this rank's videos (B, D), their texts (B, D) and labels (B,) over the
    global batch (see the module docstring); fp32."""
    if kind not in CONTRASTIVE_LOSSES:
        raise ValueError(f"contrastive loss must be one of {CONTRASTIVE_LOSSES}, got {kind!r}")
    v = all_gather_keep_local_grad(F.normalize(video.float(), dim=-1))
    t = all_gather_keep_local_grad(F.normalize(text.float(), dim=-1))
    gt = multi_positive_targets(all_gather_tensor(labels))
    per_video = scale * v @ t.t()
    per_text = per_video.t()
    if kind == "DS":
        per_video, per_text = dual_softmax(per_video), dual_softmax(per_text)
    return (kl_to_targets(per_video, gt) + kl_to_targets(per_text, gt)) / 2


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """train.py's objective: cross-entropy of the model's logits against the frozen classes."""
    return F.cross_entropy(model(x).float(), y)


def text_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """train_nce.py's CE: every class prompt through the text tower at each step, then cross-entropy
    of exp(logit_scale) · cos(video, class text)."""
    classes = torch.arange(_num_classes(model), device=y.device)
    video, text, scale = model(x, texts=classes)
    return F.cross_entropy(cosine_logits(video, text, scale), y)


def _num_classes(model: nn.Module) -> int:
    inner: Any = getattr(model, "module", model)  # under DDP
    return int(inner.num_classes)


def make_objective(loss_type: str, text_tower: bool) -> Objective:
    """The objective of `solver.loss_type`; `text_tower` says whether the model keeps its text tower."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "CE":
        return text_cross_entropy if text_tower else cross_entropy
    if not text_tower:
        raise ValueError(f"loss_type {loss_type} needs a model with a text tower")

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        video, text, scale = model(x, texts=y)
        return contrastive_loss(video, text, scale, y, loss_type)

    return objective
