"""Cosine logits between video and class embeddings: the one place the classifier's arithmetic
lives (the model's forward pass and the evaluation engine's scores both call it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(video: torch.Tensor, classes: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """scale · cos(video, class) in fp32: (..., D) x (C, D) -> (..., C). Neither input needs to be
    normalised (the original stored un-normalised text features and normalised at every use)."""
    v = F.normalize(video.float(), dim=-1)
    c = F.normalize(classes.float().to(v.device), dim=-1)
    return scale * v @ c.t()


def class_probabilities(video: torch.Tensor, classes: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """softmax(scale · cosine) over classes: (N, D) -> (N, C); (N, V, D) -> mean over the V views of
    the per-view probabilities (N, C)."""
    probs = cosine_logits(video, classes.detach(), scale).softmax(dim=-1)
    return probs.mean(dim=1) if probs.dim() == 3 else probs
