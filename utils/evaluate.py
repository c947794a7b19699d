"""The one evaluation engine: per-video fused embeddings, exactly once per video, on every rank.

`collect` runs the visual side of the model over an eval loader whose items are
`(uint8 clips (B, V*T, 3, S, S), labels (B,), dataset indices (B,))` with the V = crops x clips
views in crop-major, then clip, then frame order. Each view of T frames is encoded separately
(`model.encode_video`, un-normalised), then the views are fused:

* `fuse="embeddings"` (the original's test.py): the V un-normalised embeddings are averaged;
  scores are later `softmax(scale * cos(mean embedding, class embedding))`.
* `fuse="scores"` (mmaction2 style): the per-view embeddings are kept (N, V, D) and the scores
  are the mean over views of the per-view softmax probabilities.

Results of all ranks are all-gathered (every rank gets the full set), de-duplicated by dataset
index and sorted by it, so any sampler works (ours gives each index to exactly one rank; a
padding `DistributedSampler` is also handled). Class scores are computed afterwards from the
output (`EvalOutput.scores`), which lets the zero-shot protocols restrict the class set without a
second pass over the data. train.py's validation, test.py, test_zeroshot.py and predict.py all go
through here. The engine imports nothing above `utils/`: the caller hands it the model, the
loader and the normalisation of the data pipeline (`datasets.transforms.normalize`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from utils.checkpoint import unwrap
from utils.choices import FUSIONS
from utils.distributed import all_gather_tensor, is_dist
from utils.metrics import classification_report
from utils.precision import autocast, resolve_precision
from utils.similarity import class_probabilities

Normalize = Callable[[torch.Tensor], torch.Tensor]
Prepare = Callable[[Any], torch.Tensor]


@dataclass(frozen=True)
class ViewSet:
    """How an eval batch's clips become model input: `views` views of `num_frames` frames each,
    moved to `device` (by `prepare(clips)`, which may apply a deferred transform there:
    `datasets.device_transforms.ClipsToDevice`; None: a plain copy), made model input by
    `normalize`, run at `precision`, at most `chunk` views per forward call (None: all at once)."""

    views: int
    num_frames: int
    device: torch.device | str
    normalize: Normalize
    precision: str = "fp32"
    chunk: int | None = None
    prepare: Prepare | None = None


@dataclass
class EvalOutput:
    """Gathered per-video results, sorted by dataset index (CPU, float32).

    embeddings: (N, D) views-averaged, un-normalised video embeddings.
    labels, indices: (N,) int64.
    seconds: wall-clock time of the pass (slowest rank).
    view_embeddings: (N, V, D) per-view embeddings, kept only for `fuse="scores"`.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    seconds: float
    fuse: str = "embeddings"
    view_embeddings: torch.Tensor | None = None
    views: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def scores(self, class_embeddings: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
        """Class probabilities (N, C) against (C, D) un-normalised class embeddings."""
        return class_probabilities(
            self.embeddings if self.view_embeddings is None else self.view_embeddings, class_embeddings, scale
        )

    def subset(self, mask: torch.Tensor) -> EvalOutput:
        """The videos selected by a boolean mask (N,), other fields unchanged."""
        ve = self.view_embeddings[mask] if self.view_embeddings is not None else None
        return EvalOutput(
            self.embeddings[mask],
            self.labels[mask],
            self.indices[mask],
            self.seconds,
            self.fuse,
            ve,
            self.views,
            dict(self.extra),
        )


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast (the original's test path); amp/fp16: float16 autocast on CUDA (fp32 on
    CPU, see utils.precision); bf16: bfloat16 autocast."""
    return autocast(resolve_precision(precision, device), device)


def _max_over_ranks(value: float) -> float:
    return float(all_gather_tensor(torch.tensor([value], dtype=torch.float64)).max())


@torch.no_grad()
def encode_views(
    model: torch.nn.Module,
    clips: torch.Tensor,
    *,
    views: int,
    num_frames: int,
    device: torch.device | str,
    normalize: Normalize,
    precision: str = "fp32",
    chunk: int | None = None,
) -> torch.Tensor:
    """uint8 clips (B, V*T, 3, S, S) -> per-view un-normalised embeddings (B, V, D), float32.

    `normalize` turns uint8 frames into the model's input; `chunk` bounds the number of views per
    forward call (memory); None = all at once.
    """
    return encode_views_frames(
        model, clips, ViewSet(views, num_frames, device, normalize, precision, chunk), frames=False
    )[0]


@torch.no_grad()
def encode_views_frames(
    model: torch.nn.Module, clips: torch.Tensor, view_set: ViewSet, *, frames: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`encode_views`, plus the per-frame embeddings the head fused, (B, V, T, D), when `frames`
    (the model's `encode_video_frames`; a ValueError for a model without them). `clips` are
    already where `view_set.prepare` would put them."""
    views, num_frames, normalize = view_set.views, view_set.num_frames, view_set.normalize
    net: Any = unwrap(model)  # a VideoCLIP (or an exported model, which has no per-frame output)
    b = clips.shape[0]
    if clips.shape[1] != views * num_frames:
        raise ValueError(f"a test clip has {clips.shape[1]} frames, expected views x frames = {views} x {num_frames}")
    x = clips.to(view_set.device, non_blocking=True).reshape(b * views, num_frames, *clips.shape[2:])
    step = view_set.chunk or x.shape[0]
    outs, frame_outs = [], []
    with autocast_context(view_set.device, view_set.precision):
        for s in range(0, x.shape[0], step):
            if not frames:
                outs.append(net.encode_video(normalize(x[s : s + step])).float())
                continue
            if not hasattr(net, "encode_video_frames"):
                raise ValueError("this model gives no per-frame embeddings (an exported model)")
            video, per_frame = net.encode_video_frames(normalize(x[s : s + step]))
            if per_frame is None:
                raise ValueError(
                    "this model gives no per-frame embeddings (network.joint_st fuses the frames "
                    "inside the visual encoder)"
                )
            outs.append(video.float())
            frame_outs.append(per_frame.float())
    emb = torch.cat(outs).reshape(b, views, -1)
    return emb, (torch.cat(frame_outs).reshape(b, views, num_frames, -1) if frames else None)


def _sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def collect(
    model: torch.nn.Module,
    loader: Iterable,
    view_set: ViewSet,
    *,
    fuse: str = "embeddings",
    log: Callable[[str], None] | None = None,
    print_freq: int = 0,
) -> EvalOutput:
    """Run the model over `loader` and return the fused per-video embeddings of all ranks.

    The model is put in eval mode for the pass and its previous mode restored. Every rank
    returns the same gathered `EvalOutput` (sorted by dataset index, each index once) when a
    process group is initialised (`utils.distributed`).
    `log(msg)` is called every `print_freq` batches with the progress and seconds per video.
    """
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    device = torch.device(view_set.device)
    prepare = view_set.prepare
    was_training = model.training
    model.eval()
    local = _Local()
    try:
        num_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = -1
    _sync(device)
    start = time.perf_counter()
    try:
        for i, batch in enumerate(loader):
            clips = prepare(batch[0]) if prepare is not None else batch[0]
            per_view = encode_views_frames(model, clips, replace(view_set, device=device), frames=False)[0]
            local.add(per_view, batch[1], batch[2], keep_views=fuse == "scores")
            if log is not None and print_freq and (i + 1) % print_freq == 0:
                _sync(device)
                spv = (time.perf_counter() - start) / max(local.seen, 1)
                log(f"Test: [{i + 1}/{num_batches}] {spv:.4f} s/video")
    finally:
        model.train(was_training)
    _sync(device)
    return local.gather(_max_over_ranks(time.perf_counter() - start), fuse, view_set.views)


@dataclass
class _Local:
    """This rank's results, batch by batch (embeddings stay on the device: no sync per batch)."""

    embs: list[torch.Tensor] = field(default_factory=list)
    view_embs: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)
    seen: int = 0

    def add(self, per_view: torch.Tensor, label: Any, index: Any, keep_views: bool) -> None:
        self.embs.append(per_view.mean(dim=1))
        if keep_views:
            self.view_embs.append(per_view)
        self.labels.append(torch.as_tensor(label).long().reshape(-1).cpu())
        self.indices.append(torch.as_tensor(index).long().reshape(-1).cpu())
        self.seen += per_view.shape[0]

    def gather(self, seconds: float, fuse: str, views: int) -> EvalOutput:
        """Every rank's results on every rank, sorted by dataset index, each index once."""
        dim = self.embs[0].shape[-1] if self.embs else 0
        emb = torch.cat(self.embs).cpu() if self.embs else torch.zeros(0, dim)
        lab = torch.cat(self.labels) if self.labels else torch.zeros(0, dtype=torch.long)
        idx = torch.cat(self.indices) if self.indices else torch.zeros(0, dtype=torch.long)
        if is_dist():
            # A rank that got no batch still takes part in the gathers; agree on D first.
            dim = int(all_gather_tensor(torch.tensor([dim])).max())
            if emb.shape[0] == 0:
                emb = torch.zeros(0, dim)
        emb, lab, idx = all_gather_tensor(emb), all_gather_tensor(lab), all_gather_tensor(idx)
        vemb = None
        if fuse == "scores":
            mine = torch.cat(self.view_embs).cpu() if self.view_embs else torch.zeros(0, views, dim)
            vemb = all_gather_tensor(mine)
        order = torch.argsort(idx, stable=True)
        idx_sorted = idx[order]
        keep = torch.ones_like(idx_sorted, dtype=torch.bool)
        keep[1:] = idx_sorted[1:] != idx_sorted[:-1]  # drop duplicates of a padding sampler
        order = order[keep]
        return EvalOutput(
            emb[order], lab[order], idx[order], seconds, fuse, vemb[order] if vemb is not None else None, views
        )


def class_embeddings_of(model: torch.nn.Module) -> torch.Tensor:
    """The model's (C, D) class embeddings (un-normalised), detached on CPU."""
    net: Any = unwrap(model)
    return net.class_embeddings.detach().float().cpu()


def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    view_set: ViewSet,
    *,
    fuse: str = "embeddings",
    scale: float | None = 100.0,
    with_map: bool = False,
    log: Callable[[str], None] | None = None,
    print_freq: int = 0,
) -> tuple[dict, EvalOutput]:
    """One call for validation and test: collect, score against the model's classes, report.

    Returns (report, output): report has top1, top5 (percent), their exact counts,
    mean_class_accuracy, num_videos, views, seconds, seconds_per_video and mAP when asked.
    `scale` None uses the model's learned exp(logit_scale).
    """
    out = collect(model, loader, view_set, fuse=fuse, log=log, print_freq=print_freq)
    scores = out.scores(class_embeddings_of(model), eval_scale(model, scale))
    report = classification_report(scores, out.labels, with_map=with_map)
    report.update(
        views=view_set.views, seconds=out.seconds, seconds_per_video=out.seconds / len(out) if len(out) else 0.0
    )
    out.extra["scores"] = scores
    return report, out


def eval_scale(model: torch.nn.Module, scale: float | None) -> float:
    """The logit scale of evaluation: `scale` (100 as the original), or exp(logit_scale) if None."""
    if scale is None:
        net: Any = unwrap(model)
        return float(net.logit_scale.detach().exp().item())
    return float(scale)
