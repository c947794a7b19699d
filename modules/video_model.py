"""The video model: CLIP's visual encoder per frame, a temporal head, and a fixed class matrix.

frames (B, T, 3, S, S) -> visual (B·T, D) -> (B, T, D) -> head -> video (B, D);
logits = scale · cos(video, class_embeddings), scale = exp(logit_scale) in training and a fixed
value (100, `network.eval_logit_scale`) at evaluation, as the original.

State-dict keys follow the original's checkpoints (`visual.*`, `fusion_model.*`, `logit_scale`)
plus `class_embeddings` (the original recomputed them from the label CSV at start-up).
`ContrastiveVideoCLIP` (the original's train_nce.py) adds CLIP's text tower under `text.*`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.text_tower import CHUNK, TextTower
from utils.similarity import cosine_logits

LOG_100 = math.log(100.0)  # CLIP's pretrained logit_scale: exp(logit_scale) = 100


class VideoCLIP(nn.Module):
    """Visual encoder + fusion head + class embeddings (C, D).

    `fix_text=True` (default) keeps the class embeddings a persistent buffer (no gradient, not in
    the optimiser); `False` makes them a trainable Parameter. `joint_st=True` means the visual
    encoder already returns one embedding per video and the head is bypassed.
    """

    has_text_tower = False

    def __init__(
        self,
        visual: nn.Module,
        fusion_model: nn.Module,
        class_embeddings: torch.Tensor,
        fix_text: bool = True,
        logit_scale: float | torch.Tensor = LOG_100,
        joint_st: bool = False,
    ):
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

    def refresh_class_embeddings(self) -> None:
        """Make the class embeddings current: nothing to do, they are a constant or trained as they are."""

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

    def logits_from_embeddings(
        self, video_emb: torch.Tensor, scale: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """scale · cos(video, class) in fp32; scale None = exp(logit_scale) (training)."""
        return cosine_logits(video_emb, self.class_embeddings, self.logit_scale.exp() if scale is None else scale)

    def forward(self, x: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) -> logits (B, C). Pass scale=100 (`network.eval_logit_scale`) to evaluate
        as the original."""
        return self.logits_from_embeddings(self.encode_video(x), scale)


class ContrastiveVideoCLIP(VideoCLIP):
    """VideoCLIP that keeps CLIP's text tower (`text.*`), as the original's train_nce.py.

    `forward(x, texts=class_indices)` returns (video embeddings, text embeddings of those classes'
    prompts, exp(logit_scale)) for the training objectives; `forward(x)` gives logits against
    `class_embeddings`, the text tower's embeddings of every class as of the last
    `refresh_class_embeddings()` (train.py calls it before every validation and save), so the
    evaluation engine, test.py and predict.py use the model as any other. `train_text=False`
    freezes the tower (`network.fix_text`); `logit_scale` trains either way.
    `prompt_tokens` (C, K, 77): each class in the K templates; several templates are combined as
    the text classifier does (mean of the L2-normalised embeddings).
    """

    has_text_tower = True

    def __init__(
        self,
        visual: nn.Module,
        fusion_model: nn.Module,
        text: TextTower,
        prompt_tokens: torch.Tensor,
        class_embeddings: torch.Tensor,
        *,
        train_text: bool = True,
        logit_scale: float | torch.Tensor = LOG_100,
        joint_st: bool = False,
    ):
        super().__init__(
            visual, fusion_model, class_embeddings, fix_text=True, logit_scale=logit_scale, joint_st=joint_st
        )
        if prompt_tokens.ndim != 3 or prompt_tokens.shape[0] != self.num_classes:
            raise ValueError(f"prompt tokens must be (C={self.num_classes}, K, L), got {tuple(prompt_tokens.shape)}")
        self.text = text
        self.text.requires_grad_(train_text)
        self.register_buffer("prompt_tokens", prompt_tokens.long(), persistent=False)

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) text embeddings of the prompts of `classes` (class indices; None = every class),
        un-normalised with one template; a class repeated in `classes` is encoded once."""
        all_tokens = self.get_buffer("prompt_tokens")
        if classes is None:
            classes = torch.arange(self.num_classes, device=all_tokens.device)
        unique, inverse = torch.unique(classes, return_inverse=True)
        tokens = all_tokens[unique.to(all_tokens.device)]
        n, k = tokens.shape[:2]
        flat = tokens.reshape(n * k, -1)
        feats = torch.cat([self.text(flat[i : i + CHUNK]) for i in range(0, n * k, CHUNK)]).float()
        feats = feats.reshape(n, k, -1)
        emb = feats[:, 0] if k == 1 else F.normalize(feats, dim=-1).mean(dim=1)
        return emb[inverse.to(emb.device)]

    @torch.no_grad()
    def refresh_class_embeddings(self) -> None:
        """class_embeddings = the current text tower's embeddings of every class (eval mode)."""
        was_training = self.text.training
        self.text.eval()
        try:
            self.class_embeddings.copy_(self.encode_classes())
        finally:
            self.text.train(was_training)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        scale: float | torch.Tensor | None = None,
        texts: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, C) as VideoCLIP; with `texts` (class indices), the training triple (video
        embeddings, text embeddings of those classes, exp(logit_scale))."""
        if texts is None:
            return super().forward(x, scale)
        return self.encode_video(x), self.encode_classes(texts), self.logit_scale.exp()
