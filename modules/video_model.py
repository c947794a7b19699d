"""The video model: CLIP's visual encoder per frame, a temporal head, and a fixed class matrix.

frames (B, T, 3, S, S) -> visual (B·T, D) -> (B, T, D) -> head -> video (B, D);
logits = scale · cos(video, class_embeddings), scale = exp(logit_scale) in training and a fixed
value (100, `network.eval_logit_scale`) at evaluation, as the original.

State-dict keys follow the original's checkpoints (`visual.*`, `fusion_model.*`, `logit_scale`)
plus `class_embeddings` (the original recomputed them from the label CSV at start-up).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from utils.similarity import cosine_logits

LOG_100 = math.log(100.0)  # CLIP's pretrained logit_scale: exp(logit_scale) = 100


class VideoCLIP(nn.Module):
    """Visual encoder + fusion head + class embeddings (C, D).

    `fix_text=True` (default) keeps the class embeddings a persistent buffer (no gradient, not in
    the optimiser); `False` makes them a trainable Parameter. `joint_st=True` means the visual
    encoder already returns one embedding per video and the head is bypassed.
    """

    def __init__(self, visual: nn.Module, fusion_model: nn.Module, class_embeddings: torch.Tensor,
                 fix_text: bool = True, logit_scale: float | torch.Tensor = LOG_100,
                 joint_st: bool = False):
        super().__init__()
        self.visual = visual
        self.fusion_model = fusion_model
        self.logit_scale = nn.Parameter(torch.as_tensor(logit_scale, dtype=torch.float32).detach().clone().reshape(()))
        self.fix_text = bool(fix_text)
        self.joint_st = bool(joint_st)
        self._set_emb(class_embeddings)

    def _set_emb(self, emb: torch.Tensor) -> None:
        emb = torch.as_tensor(emb).detach().float()
        if emb.ndim != 2:
            raise ValueError(f"class embeddings must be (C, D), got shape {tuple(emb.shape)}")
        if "class_embeddings" in self._buffers:
            del self._buffers["class_embeddings"]
        if "class_embeddings" in self._parameters:
            del self._parameters["class_embeddings"]
        if self.fix_text:
            self.register_buffer("class_embeddings", emb.clone(), persistent=True)
        else:
            self.class_embeddings = nn.Parameter(emb.clone())

    def set_class_embeddings(self, emb: torch.Tensor) -> None:
        """Swap the class set (zero-shot, predict). Kept on the model's device; a trainable matrix
        becomes a new Parameter (re-create the optimiser if you train after this)."""
        device = self.logit_scale.device
        self._set_emb(torch.as_tensor(emb).to(device))

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) per-frame embeddings (or (B, D) with joint_st)."""
        return self.visual(frames)

    def encode_video(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) normalised float frames -> (B, D) un-normalised video embeddings."""
        return self.encode_video_frames(x)[0]

    def encode_video_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, 3, S, S) -> (video embeddings (B, D), per-frame embeddings (B, T, D) that the head
        fused), both un-normalised; the frames are None with joint_st (no per-frame embedding)."""
        if x.ndim != 5:
            raise ValueError(f"encode_video expects (B, T, 3, S, S) frames, got shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        feats = self.encode_frames(x.reshape(b * t, *x.shape[2:]))
        if self.joint_st:
            if feats.shape[0] != b:
                raise ValueError(f"joint_st visual encoder returned {feats.shape[0]} rows for {b} videos")
            return feats, None
        if feats.shape[0] != b * t:
            raise ValueError(f"visual encoder returned {feats.shape[0]} rows for {b}x{t} frames")
        frames = feats.reshape(b, t, -1)
        return self.fusion_model(frames), frames

    def logits_from_embeddings(self, video_emb: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
        """scale · cos(video, class) in fp32; scale None = exp(logit_scale) (training)."""
        return cosine_logits(video_emb, self.class_embeddings, self.logit_scale.exp() if scale is None else scale)

    def forward(self, x: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) -> logits (B, C). Pass scale=100 (`network.eval_logit_scale`) to evaluate
        as the original."""
        return self.logits_from_embeddings(self.encode_video(x), scale)
