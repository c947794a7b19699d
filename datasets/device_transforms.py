"""The clip transforms on a whole batch, on the device the batch is on (`data.transform_device: cuda`).

With deferred transforms the dataset decodes and samples frames, draws the clip's random
parameters with the same generator and the same order of draws as `TrainTransform`
(`TrainTransform.draw`), and returns the un-augmented clip with them; the loader collates them into
`RawClips`. `BatchTransform` then applies the parameters to the batch: the per-clip crop boxes
differ, so randaug + crop + resize run per clip, while flip, grayscale and solarize run once on the
whole (B, N, 3, S, S) batch. Every operation is the same torchvision functional as on the CPU, so
on CPU tensors the result equals `TrainTransform` / `EvalTransform` pixel for pixel (tested); on a
GPU torchvision resizes uint8 through float32, which can differ from its CPU uint8 kernel by one
grey level.

The training loop moves and transforms a batch with `ClipsToDevice` (a no-op `.to(device)` for a
batch that the CPU already transformed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from datasets.transforms import ClipParams, EvalTransform, TrainTransform, eval_crop_plan
from datasets.transforms import normalize as clip_normalize


@dataclass
class RawClips:
    """A batch of decoded, untransformed clips and their random parameters (None for evaluation).

    `frames` is one (B, N, 3, H, W) uint8 tensor when every clip has the same size, else a list of
    (N, 3, H_i, W_i) tensors."""

    frames: torch.Tensor | list[torch.Tensor]
    params: list[ClipParams | None]

    def __len__(self) -> int:
        return len(self.params)

    def pin_memory(self) -> RawClips:  # called by the DataLoader's pin-memory thread
        if isinstance(self.frames, torch.Tensor):
            return RawClips(self.frames.pin_memory(), self.params)
        return RawClips([f.pin_memory() for f in self.frames], self.params)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RawClips:
        if isinstance(self.frames, torch.Tensor):
            return RawClips(self.frames.to(device, non_blocking=non_blocking), self.params)
        return RawClips([f.to(device, non_blocking=non_blocking) for f in self.frames], self.params)


def collate_raw(
    items: Sequence[tuple[torch.Tensor, int, int, ClipParams | None]],
) -> tuple[RawClips, torch.Tensor, torch.Tensor]:
    """DataLoader collate for deferred items `(clip, label, index, params)` → `(RawClips, labels, indices)`."""
    clips = [it[0] for it in items]
    frames: torch.Tensor | list[torch.Tensor] = clips
    if len({tuple(c.shape) for c in clips}) == 1:
        frames = torch.stack(clips)
    labels = torch.tensor([int(it[1]) for it in items])
    indices = torch.tensor([int(it[2]) for it in items])
    return RawClips(frames, [it[3] for it in items]), labels, indices


class BatchTransform:
    """`TrainTransform` / `EvalTransform` on a batch: `(clips, params) -> uint8 (B, V*N, 3, S, S)`
    on the clips' device (float, CLIP-normalised, with `normalize=True`)."""

    def __init__(self, transform: TrainTransform | EvalTransform, normalize: bool = False):
        self.transform = transform
        self.normalize = normalize

    def __call__(
        self, clips: RawClips | torch.Tensor | Sequence[torch.Tensor], params: Sequence[ClipParams | None] | None = None
    ) -> torch.Tensor:
        frames: torch.Tensor | Sequence[torch.Tensor]
        if isinstance(clips, RawClips):
            frames, params = clips.frames, clips.params
        else:
            frames = clips
        if isinstance(self.transform, TrainTransform):
            if params is None or any(p is None for p in params):
                raise ValueError("training clips need their ClipParams")
            out = self._train(frames, [p for p in params if p is not None])
        else:
            out = self._eval(frames)
        return clip_normalize(out) if self.normalize else out

    def _train(self, frames: torch.Tensor | Sequence[torch.Tensor], params: list[ClipParams]) -> torch.Tensor:
        tf = self.transform
        assert isinstance(tf, TrainTransform)
        if len(frames) != len(params):
            raise ValueError(f"{len(frames)} clips but {len(params)} parameter sets")
        # TrainTransform.apply is already device-agnostic: one code path, so the GPU result is the
        # CPU result (flip, grayscale and solarize batched would save little next to the crops).
        return torch.stack([tf.apply(clip, p) for clip, p in zip(frames, params, strict=True)])

    def _eval(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        tf = self.transform
        assert isinstance(tf, EvalTransform)
        if not isinstance(frames, torch.Tensor):  # clips of different sizes: one resize each
            return torch.stack([tf(clip)[0] for clip in frames])
        b, n = frames.shape[:2]
        (rh, rw), plan = eval_crop_plan(frames.shape[-2], frames.shape[-1], tf.input_size, tf.scale_size, tf.crops)
        x = frames
        if (rh, rw) != tuple(x.shape[-2:]):
            x = F.resize(
                x.reshape(b * n, *x.shape[2:]), [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True
            ).reshape(b, n, 3, rh, rw)
        views = []
        for (top, left, h, w), flip in plan:
            view = x[..., top : top + h, left : left + w]
            views.append(view.flip(-1) if flip else view)
        return torch.cat(views, dim=1)


class ClipsToDevice:
    """A loader batch's clips → uint8 (B, V*N, 3, S, S) on `device`: CPU-transformed batches are
    copied; `RawClips` are copied and transformed there by `BatchTransform`."""

    def __init__(self, transform: TrainTransform | EvalTransform | None, device: torch.device | str):
        self.batch = BatchTransform(transform) if transform is not None else None
        self.device = torch.device(device)

    def __call__(self, clips: RawClips | torch.Tensor) -> torch.Tensor:
        if isinstance(clips, RawClips):
            if self.batch is None:
                raise ValueError("a deferred batch needs the dataset's transform")
            return self.batch(clips.to(self.device, non_blocking=True))
        return clips.to(self.device, non_blocking=True)


def clips_to_device(dataset: Any, device: torch.device | str) -> ClipsToDevice:
    """The `ClipsToDevice` of a dataset: its transform runs on the device when it is deferred
    (`data.transform_device: cuda`), otherwise batches are only copied."""
    return ClipsToDevice(dataset.transform if getattr(dataset, "defer_transform", False) else None, device)
