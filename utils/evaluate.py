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
through here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.transforms import normalize as normalize_clip
from utils.distributed import all_gather_tensor, barrier, is_dist
from utils.errors import UserError
from utils.metrics import classification_report
from utils.precision import CHOICES, autocast, resolve_precision

PRECISIONS = CHOICES
CROP_CHOICES = (1, 3, 5, 10)
FUSIONS = ("embeddings", "scores")


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
        return class_scores(self.embeddings if self.view_embeddings is None else self.view_embeddings,
                            class_embeddings, scale)

    def subset(self, mask: torch.Tensor) -> "EvalOutput":
        """The videos selected by a boolean mask (N,), other fields unchanged."""
        ve = self.view_embeddings[mask] if self.view_embeddings is not None else None
        return EvalOutput(self.embeddings[mask], self.labels[mask], self.indices[mask], self.seconds,
                          self.fuse, ve, self.views, dict(self.extra))


def class_scores(video_embeddings: torch.Tensor, class_embeddings: torch.Tensor,
                 scale: float = 100.0) -> torch.Tensor:
    """softmax(scale * cosine) over classes; (N, D) -> (N, C), or (N, V, D) -> mean over views."""
    v = F.normalize(video_embeddings.float(), dim=-1)
    c = F.normalize(class_embeddings.detach().float().to(v.device), dim=-1)
    probs = (scale * v @ c.t()).softmax(dim=-1)
    return probs.mean(dim=1) if probs.dim() == 3 else probs


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast (the original's test path); amp/fp16: float16 autocast on CUDA (fp32 on
    CPU, see utils.precision); bf16: bfloat16 autocast."""
    return autocast(resolve_precision(precision, device), device)


def _max_over_ranks(value: float) -> float:
    return float(all_gather_tensor(torch.tensor([value], dtype=torch.float64)).max())


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from utils.checkpoint import unwrap  # DDP and torch.compile wrappers
    return unwrap(model)


@torch.no_grad()
def encode_views(model: torch.nn.Module, clips: torch.Tensor, *, views: int, num_frames: int,
                 device: torch.device, precision: str = "fp32", chunk: int | None = None,
                 normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 clips (B, V*T, 3, S, S) -> per-view un-normalised embeddings (B, V, D), float32.

    `chunk` bounds the number of views per forward call (memory); None = all at once.
    """
    net = _unwrap(model)
    b = clips.shape[0]
    if clips.shape[1] != views * num_frames:
        raise ValueError(f"a test clip has {clips.shape[1]} frames, expected views x frames = "
                         f"{views} x {num_frames}")
    x = clips.to(device, non_blocking=True).reshape(b * views, num_frames, *clips.shape[2:])
    norm = normalize or normalize_clip
    step = chunk or x.shape[0]
    outs = []
    with autocast_context(device, precision):
        for s in range(0, x.shape[0], step):
            outs.append(net.encode_video(norm(x[s:s + step])).float())
    return torch.cat(outs).reshape(b, views, -1)


def _sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def collect(model: torch.nn.Module, loader: Iterable, *, views: int, num_frames: int,
            device: torch.device | str, precision: str = "fp32", dist: Any = None,
            fuse: str = "embeddings", chunk: int | None = None,
            log: Callable[[str], None] | None = None, print_freq: int = 0,
            normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EvalOutput:
    """Run the model over `loader` and return the fused per-video embeddings of all ranks.

    The model is put in eval mode for the pass and its previous mode restored. Every rank
    returns the same gathered `EvalOutput` (sorted by dataset index, each index once) when a
    process group is initialised (`utils.distributed`); `dist` (a `DistInfo`) is accepted for
    symmetry with the other engines and is not needed otherwise.
    `log(msg)` is called every `print_freq` batches with the progress and seconds per video.
    """
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    embs, view_embs, labels, indices = [], [], [], []
    seen = 0
    try:
        num_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = -1
    _sync(device)
    start = time.perf_counter()
    try:
        for i, batch in enumerate(loader):
            clips, label, index = batch[0], batch[1], batch[2]
            per_view = encode_views(model, clips, views=views, num_frames=num_frames, device=device,
                                    precision=precision, chunk=chunk, normalize=normalize)
            embs.append(per_view.mean(dim=1))  # stays on the device: no sync per batch
            if fuse == "scores":
                view_embs.append(per_view)
            labels.append(torch.as_tensor(label).long().reshape(-1).cpu())
            indices.append(torch.as_tensor(index).long().reshape(-1).cpu())
            seen += clips.shape[0]
            if log is not None and print_freq and (i + 1) % print_freq == 0:
                _sync(device)
                spv = (time.perf_counter() - start) / max(seen, 1)
                log(f"Test: [{i + 1}/{num_batches}] {spv:.4f} s/video")
    finally:
        model.train(was_training)
    _sync(device)
    seconds = _max_over_ranks(time.perf_counter() - start)

    dim = embs[0].shape[-1] if embs else 0
    emb = torch.cat(embs).cpu() if embs else torch.zeros(0, dim)
    lab = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    idx = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    if is_dist():
        # A rank that got no batch still takes part in the gathers; agree on D first.
        dim = int(all_gather_tensor(torch.tensor([dim])).max())
        if emb.shape[0] == 0:
            emb = torch.zeros(0, dim)
    emb, lab, idx = all_gather_tensor(emb), all_gather_tensor(lab), all_gather_tensor(idx)
    vemb = None
    if fuse == "scores":
        local = torch.cat(view_embs).cpu() if view_embs else torch.zeros(0, views, dim)
        vemb = all_gather_tensor(local)

    order = torch.argsort(idx, stable=True)
    idx_sorted = idx[order]
    keep = torch.ones_like(idx_sorted, dtype=torch.bool)
    keep[1:] = idx_sorted[1:] != idx_sorted[:-1]  # drop duplicates of a padding sampler
    order = order[keep]
    return EvalOutput(emb[order], lab[order], idx[order], seconds, fuse,
                      vemb[order] if vemb is not None else None, views)


def class_embeddings_of(model: torch.nn.Module) -> torch.Tensor:
    """The model's (C, D) class embeddings (un-normalised), detached on CPU."""
    return _unwrap(model).class_embeddings.detach().float().cpu()


def evaluate(model: torch.nn.Module, loader: Iterable, *, views: int, num_frames: int,
             device: torch.device | str, precision: str = "fp32", dist: Any = None,
             fuse: str = "embeddings", scale: float | None = 100.0, with_map: bool = False,
             log: Callable[[str], None] | None = None, print_freq: int = 0,
             normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[dict, EvalOutput]:
    """One call for validation and test: collect, score against the model's classes, report.

    Returns (report, output): report has top1, top5 (percent), their exact counts,
    mean_class_accuracy, num_videos, views, seconds, seconds_per_video and mAP when asked.
    `scale` None uses the model's learned exp(logit_scale).
    """
    out = collect(model, loader, views=views, num_frames=num_frames, device=device,
                  precision=precision, dist=dist, fuse=fuse, log=log, print_freq=print_freq,
                  normalize=normalize)
    scores = out.scores(class_embeddings_of(model), eval_scale(model, scale))
    report = classification_report(scores, out.labels, with_map=with_map)
    report.update(views=views, seconds=out.seconds,
                  seconds_per_video=out.seconds / len(out) if len(out) else 0.0)
    out.extra["scores"] = scores
    return report, out


# --- zero-shot protocols (SPEC §5.3) -------------------------------------------------------------

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


def restrict_to_classes(out: EvalOutput, class_embeddings: torch.Tensor,
                        classes: np.ndarray | list[int]) -> tuple[EvalOutput, torch.Tensor]:
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


def zero_shot_report(out: EvalOutput, class_embeddings: torch.Tensor, *, scale: float = 100.0,
                     repeats: int = 10) -> dict:
    """Full-classes top-1/top-5 and the half-classes protocol (mean ± population std)."""
    full = classification_report(out.scores(class_embeddings, scale), out.labels)
    splits = []
    for seed, classes in enumerate(half_class_splits(class_embeddings.shape[0], repeats)):
        sub, emb = restrict_to_classes(out, class_embeddings, classes)
        rep = classification_report(sub.scores(emb, scale), sub.labels)
        splits.append({"seed": seed, "classes": sorted(int(c) for c in classes),
                       "num_videos": rep["num_videos"], "top1": rep["top1"], "top5": rep["top5"],
                       "mean_class_accuracy": rep["mean_class_accuracy"],
                       "classes_without_videos": int(len(classes) - sub.labels.unique().numel())})
    top1 = np.array([s["top1"] for s in splits])
    top5 = np.array([s["top5"] for s in splits])
    return {
        "full_classes": full,
        "half_classes": {
            "protocol": "half-classes",
            "repeats": repeats,
            "classes_per_split": class_embeddings.shape[0] // 2,
            "selection": "np.random.seed(s); np.random.permutation(C)[:C // 2], s = 0..repeats-1",
            "top1_mean": float(top1.mean()), "top1_std": float(top1.std(ddof=0)),
            "top5_mean": float(top5.mean()), "top5_std": float(top5.std(ddof=0)),
            "splits": splits,
        },
    }


# --- set-up shared by test.py, test_zeroshot.py and predict.py (the builders that read a config) --

def check_weights_file(path: str | None) -> Path:
    """A readable weights file, else a UserError naming it (before any model is built)."""
    if not path:
        raise UserError("--weights is required: a checkpoint of this project or of the original Text4Vis")
    p = Path(path)
    if not p.exists():
        raise UserError(f"weights file not found: {p}")
    if not p.is_file():
        raise UserError(f"weights path is not a file: {p}")
    if not os.access(p, os.R_OK):
        raise UserError(f"weights file is not readable (permissions): {p}")
    return p


def build_eval_model(cfg: Any, weights: str | Path, class_names: Sequence[str],
                     device: torch.device | str) -> torch.nn.Module:
    """The config's model with `weights` loaded (ours or the original's layout), in eval mode.

    The checkpoint is read first, so a missing or unreadable file fails before the model is
    built. When the classifier is trainable (`network.fix_text: False`) its rows come from the
    checkpoint, so their number must match the label CSV's; otherwise the class embeddings are
    computed from `class_names` and any class list works (zero-shot). A checkpoint of another
    architecture or head raises a UserError listing the differing keys (modules.convert).
    """
    from modules.builder import build_model
    from modules.convert import CLASS_KEY, extract_state_dict, load_weights, read_checkpoint

    path = check_weights_file(str(weights))
    ckpt = read_checkpoint(path)
    if not cfg.network.fix_text:
        state, _ = extract_state_dict(ckpt, str(path))
        stored = state.get(CLASS_KEY)
        if stored is not None and stored.shape[0] != len(class_names):
            raise UserError(
                f"the label CSV {cfg.data.label_list} has {len(class_names)} classes but the trainable "
                f"classifier (network.fix_text: False) in {path} has {stored.shape[0]} rows; use the label "
                f"CSV the model was trained with, or set network.fix_text: True to compute the classifier "
                f"from the CSV's class names")
    model = build_model(cfg, list(class_names), device="cpu")
    load_weights(model, ckpt, source=str(path))
    del ckpt
    return model.to(device).eval()


def eval_scale(model: torch.nn.Module, scale: float | None) -> float:
    """The logit scale of evaluation: `scale` (100 as the original), or exp(logit_scale) if None."""
    if scale is None:
        return float(_unwrap(model).logit_scale.detach().exp().item())
    return float(scale)


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by test.py and test_zeroshot.py."""
    from utils.config import add_config_args
    add_config_args(parser)
    parser.add_argument("--weights", required=True, help="checkpoint: ours or the original's layout")
    parser.add_argument("--test_crops", type=int, default=1, choices=CROP_CHOICES,
                        help="spatial crops per clip: 1 centre, 3 left/right/centre, 5 corners+centre, 10 = 5 + flips")
    parser.add_argument("--test_clips", type=int, default=1, help="temporal clips per video")
    parser.add_argument("--dense", action="store_true", default=None,
                        help="dense sampling (128-frame windows) instead of uniform segments")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "amp", "fp16", "bf16"),
                        help="fp32 as the original's test (default); amp/fp16 = float16 autocast on CUDA")
    parser.add_argument("--fuse", default="embeddings", choices=("embeddings", "scores"),
                        help="view fusion: average embeddings (original) or average softmax scores")
    parser.add_argument("--output", default=None, help="results folder (default exp/test/<config>/<weights>_<views>)")
    parser.add_argument("--save_predictions", action="store_true",
                        help="also write predictions.npz (probabilities, labels, video ids, class names)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def default_output(config: str, weights: str, frames: int, crops: int, clips: int, dense: bool) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(weights).stem)
    tag = f"{frames}x{crops}x{clips}" + ("_dense" if dense else "")
    return Path("exp") / "test" / Path(config).stem / f"{stem}_{tag}"


class EvalRun:
    """Everything test.py and test_zeroshot.py share: config, processes, model, data, output."""

    def __init__(self, args: argparse.Namespace) -> None:
        from utils.config import load_config
        from utils.distributed import init_distributed
        from utils.logger import setup_logger

        if args.test_clips < 1:
            raise UserError(f"--test_clips must be >= 1, got {args.test_clips}")
        self.args = args
        self.cfg = load_config(args.config, args.opts)
        check_weights_file(args.weights)
        self.dense = bool(self.cfg.data.dense if args.dense is None else args.dense)
        self.frames = int(self.cfg.data.num_segments)
        self.views = args.test_crops * args.test_clips
        self.dist = init_distributed(device=args.device)
        self.precision = resolve_precision(args.precision, self.dist.device)  # amp/fp16 -> fp32 on CPU
        self.output = Path(args.output) if args.output else default_output(
            args.config, args.weights, self.frames, args.test_crops, args.test_clips, self.dense)
        self.log = setup_logger(self.output, self.dist.rank)

    def build(self) -> None:
        from datasets import build_dataset, build_loader
        from datasets.lists import read_label_csv

        cfg, a = self.cfg, self.args
        self.class_names = read_label_csv(cfg.data.label_list)
        if cfg.data.num_classes is not None and cfg.data.num_classes != len(self.class_names):
            raise UserError(f"{a.config}: data.num_classes is {cfg.data.num_classes} but the label CSV "
                            f"{cfg.data.label_list} has {len(self.class_names)} classes")
        self.dataset = build_dataset(cfg, "test", test_crops=a.test_crops, test_clips=a.test_clips,
                                     dense=self.dense)
        self.loader = build_loader(self.dataset, cfg.data.batch_size, cfg.data.workers, train=False,
                                   rank=self.dist.rank, world_size=self.dist.world_size, seed=cfg.seed)
        # Rank 0 first: it computes (or caches) the class embeddings that the others then read.
        if self.dist.rank == 0:
            self.model = build_eval_model(cfg, a.weights, self.class_names, self.dist.device)
        barrier()
        if self.dist.rank != 0:
            self.model = build_eval_model(cfg, a.weights, self.class_names, self.dist.device)
        self.log.info(f"{len(self.dataset)} videos, {len(self.class_names)} classes, views "
                      f"{self.frames}x{a.test_crops}x{a.test_clips}{' dense' if self.dense else ''}, "
                      f"{self.dist.world_size} process(es) on {self.dist.device}, precision {self.precision}, "
                      f"fuse {a.fuse}")

    def collect(self) -> EvalOutput:
        return collect(self.model, self.loader, views=self.views, num_frames=self.frames,
                       device=self.dist.device, precision=self.precision, dist=self.dist,
                       fuse=self.args.fuse, log=self.log.info, print_freq=self.cfg.logging.print_freq)

    def header(self) -> dict[str, Any]:
        a = self.args
        return {"config": str(a.config), "weights": str(a.weights), "dataset": self.cfg.data.dataset,
                "arch": self.cfg.network.arch, "num_classes": len(self.class_names),
                "frames": self.frames, "test_crops": a.test_crops, "test_clips": a.test_clips,
                "views": self.views, "view_layout": f"{self.frames}x{a.test_crops}x{a.test_clips}",
                "dense": self.dense, "fuse": a.fuse, "precision": self.precision,
                "world_size": self.dist.world_size, "device": str(self.dist.device), "opts": list(a.opts)}

    def write_json(self, name: str, data: dict) -> Path:
        path = self.output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def save_predictions(self, out: EvalOutput, scores: torch.Tensor) -> Path:
        path = self.output / "predictions.npz"
        ids = np.array([self.dataset.records[int(i)].path for i in out.indices])
        np.savez_compressed(path, scores=scores.numpy().astype(np.float32), labels=out.labels.numpy(),
                            indices=out.indices.numpy(), video_ids=ids, class_names=np.array(self.class_names))
        return path

    def close(self) -> None:
        from utils.distributed import cleanup
        cleanup()


