"""Training throughput: ours against a configuration matching the original, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train.py [--arch ViT-B/32[,ViT-B/16,...]] [--frames 8] [--batch 2]
        [--steps 3] [--rounds 2] [--device cpu|cuda] [--precision fp32|bf16|amp]
        [--data DIR [--videos 16] [--workers 4] [--transform-device cpu|cuda] [--decoder auto]] [--peak-tflops T]

Both sides run `utils.training.train_one_epoch` (AdamW, CE on cosine logits, the Transf head) on the same
random clips and random weights (`pretrained: none`); only the visual encoder differs:

* original: gradient checkpointing on every residual block and, nested inside it, again around
  the attention branch and the MLP branch (re-entrant, as the original's `clip/model.py` since
  2023-04-18), so the backward pass recomputes each block's forward twice over;
* ours: no checkpointing (the default; `network.grad_checkpointing: true` is the memory option).

The two are measured in alternating rounds so that a change of machine load hits both; the
median clips/s per side is reported, with the visual encoder's model TFLOP/s (3x its forward
matmul FLOPs) and, where the device's peak is known (H100/H200, A100, L40S, A10G, L4, or
`--peak-tflops`), the model FLOPs utilisation. On CUDA the peak memory is printed too.

With `--data DIR` the clips come from K400-like videos (bench/k400_like.py: 10 s, 340x256,
generated once into DIR and pre-processed by `python -m datasets.preprocess`) through
`build_dataset` + `build_loader` with `--workers`, as train.py reads them, and the share of the
step spent waiting for data is reported (the meter of `logging.data_wait_alarm`; each round's
first step, which waits for the workers to start, is left out).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.k400_like import FOLDERS, make_data, runnable_decoders  # noqa: E402
from clip.archs import resolve_arch  # noqa: E402
from datasets import build_dataset, build_loader  # noqa: E402
from datasets.device_transforms import clips_to_device  # noqa: E402
from datasets.transforms import normalize  # noqa: E402
from modules.model_builder import build_model  # noqa: E402
from utils.config import resolve, to_config  # noqa: E402
from utils.data_wait import DataWaitMeter  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.optim import build_optimizer, build_scheduler  # noqa: E402
from utils.precision import grad_scaler, resolve_precision  # noqa: E402
from utils.training import EpochReport, StepRecipe, train_one_epoch  # noqa: E402


class OriginalCheckpointedBlock(nn.Module):
    """An open_clip residual block run the way the original's vendored CLIP runs it: the whole
    block under `checkpoint`, and inside it the attention and MLP branches under `checkpoint` again."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        return b.ls_1(b.attention(q_x=b.ln_1(x)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        return b.ls_2(b.mlp(b.ln_2(x)))

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        x = x + checkpoint(self._attn, x, use_reentrant=True)
        return x + checkpoint(self._mlp, x, use_reentrant=True)

    def forward(self, q_x: torch.Tensor, k_x=None, v_x=None, attn_mask=None) -> torch.Tensor:
        return checkpoint(self._inner, q_x, use_reentrant=True)


def make_original_like(model: nn.Module) -> int:
    """Wrap every visual residual block in place; returns how many were wrapped."""
    blocks = model.visual.transformer.resblocks
    for i in range(len(blocks)):
        blocks[i] = OriginalCheckpointedBlock(blocks[i])
    return len(blocks)


def build(arch: str, frames: int, size: int, classes: int, device: torch.device) -> nn.Module:
    cfg = to_config(
        resolve(
            {
                "seed": 0,
                "data": {"num_segments": frames, "input_size": size, "dataset": "bench"},
                "network": {"arch": arch, "pretrained": "none", "sim_header": "Transf", "classifier": "random"},
            },
            "bench",
        )
    )
    torch.manual_seed(0)
    return build_model(cfg, [f"class {i}" for i in range(classes)], device=device)


def vit_flops_per_clip(model: nn.Module, frames: int, size: int) -> float:
    """Forward FLOPs of the visual encoder for one clip (2 * multiply-adds of the matmuls)."""
    v = model.visual
    width = v.conv1.out_channels
    patch = v.conv1.kernel_size[0]
    n = (size // patch) ** 2 + 1
    layers = len(v.transformer.resblocks)
    per_layer = 2 * (n * width * 3 * width + 2 * n * n * width + n * width * width + 2 * n * width * 4 * width)
    embed = 2 * (size // patch) ** 2 * (3 * patch * patch) * width
    return frames * (layers * per_layer + embed)


# dense bf16/fp16 tensor-core peaks (TFLOP/s) for MFU; --peak-tflops for other devices
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """The device's peak for the MFU line: --peak-tflops, else the table for a known GPU."""
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


class FirstBatches:
    """The first `steps` batches of a loader (a fresh pass each round: the workers restart)."""

    def __init__(self, loader: Iterable, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.loader), self.steps)


def loader_from_clips(args: argparse.Namespace) -> tuple[FirstBatches, Any]:
    """K400-like clips (bench/k400_like.py, pre-processed by `python -m datasets.preprocess`) through
    `build_dataset` + `build_loader`, as train.py reads them: (batches, prepare)."""
    root = Path(args.data)
    make_data(root, args.videos, workers=os.cpu_count() or 1, frames_and_shards=False)
    data = {
        "num_segments": args.frames,
        "input_size": args.size,
        "label_list": str(root / "labels.csv"),
        "modality": "video",
        "train_root": str(root / FOLDERS["pre"]),
        "train_list": str(root / "video.txt"),
        "transform_device": args.transform_device,
        "decoder": runnable_decoders(args.decoder)[0],
    }
    ds = build_dataset(to_config(resolve({"seed": 0, "data": data}, "bench")), "train")
    loader = build_loader(ds, args.batch, args.workers, train=True, rank=0, world_size=1, seed=0, drop_last=True)
    if len(loader) < args.steps:
        raise UserError(
            f"--videos {args.videos} gives {len(loader)} batches of {args.batch}: fewer than --steps "
            f"(give at least --batch x --steps videos)"
        )
    return FirstBatches(loader, args.steps), clips_to_device(ds, torch.device(args.device))


def run_side(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    precision: str,
    frames: int,
    prepare: Any = None,
    meter: DataWaitMeter | None = None,
) -> float:
    opt = build_optimizer(model, lr=1e-5, clip_ratio=0.1, weight_decay=0.2, device=device)
    steps = len(batches)  # type: ignore[arg-type]
    sched = build_scheduler(opt, kind="cosine", epochs=1, warmup_epochs=0, iters_per_epoch=steps, step_every=1)
    scaler = grad_scaler(precision, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    stats = train_one_epoch(
        model,
        batches,
        opt,
        sched,
        scaler,
        StepRecipe(device=device, num_frames=frames, normalize=normalize, precision=precision, prepare=prepare),
        report=EpochReport(meter=meter),
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return stats.samples / stats.seconds


@dataclass
class ArchResult:
    """One architecture's medians (clips/s per side), model TFLOP/s, MFU, peak memory and data wait."""

    arch: str
    clips: dict[str, float]
    tflops: dict[str, float]
    mfu: dict[str, float | None]
    peak_gib: dict[str, float]
    data_wait: float
    peak_tflops: float | None


def measure(arch: str, args: argparse.Namespace, batches: Any, prepare: Any, precision: str) -> ArchResult:
    """Both sides of one architecture in alternating rounds, after one warm-up step each."""
    device = torch.device(args.device)
    ours = build(arch, args.frames, args.size, args.classes, device)
    orig = build(arch, args.frames, args.size, args.classes, device)
    n_blocks = make_original_like(orig)
    print(
        f"{arch}, {args.frames} frames, batch {args.batch}, {args.size}px, {precision} on {device} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads); original-like: {n_blocks} blocks "
        f"checkpointed, attention and MLP nested",
        flush=True,
    )
    warm = FirstBatches(batches.loader, 1) if isinstance(batches, FirstBatches) else batches[:1]
    for m in (ours, orig):  # allocator, kernels
        run_side(m, warm, device, precision, args.frames, prepare)
    results: dict[str, list[float]] = {"original-like": [], "ours": []}
    waits: list[float] = []
    peak: dict[str, float] = {}
    for r in range(args.rounds):
        for name, m in (("original-like", orig), ("ours", ours)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            meter = DataWaitMeter(threshold=0.0, warmup=1)  # the first step waits for the workers to start
            cps = run_side(m, batches, device, precision, args.frames, prepare, meter)
            results[name].append(cps)
            if name == "ours":
                waits.append(meter.fraction)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2**30
            print(f"round {r + 1} {name:14s} {cps:7.3f} clips/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    flops = 3 * vit_flops_per_clip(ours, args.frames, args.size)
    top = peak_tflops(device, args.peak_tflops)
    tflops = {k: flops * v / 1e12 for k, v in med.items()}
    mfu = {k: (100 * v / top if top else None) for k, v in tflops.items()}
    return ArchResult(arch, med, tflops, mfu, peak, statistics.median(waits), top)


def report(r: ArchResult, args: argparse.Namespace) -> None:
    print(f"\n{r.arch} clips/s (median of {args.rounds} rounds x {args.steps} steps):")
    for name in ("original-like", "ours"):
        extra = f"  peak mem {r.peak_gib[name]:.2f} GiB" if name in r.peak_gib else ""
        extra += f"  visual-encoder model TFLOP/s {r.tflops[name]:.3g}"
        mfu = r.mfu[name]
        if mfu is not None:
            extra += f"  MFU {mfu:.1f} % of {r.peak_tflops:g}"
        print(f"  {name:14s} {r.clips[name]:8.3f}{extra}")
    print(f"  speed-up       {r.clips['ours'] / r.clips['original-like']:8.2f}x")
    source = f"{args.workers} workers, K400-like clips in {args.data}" if args.data else "random clips in memory"
    share = 100 * r.data_wait
    print(f"data wait (ours, {source}, step 1 of each round left out): median {share:.1f} % of the step time")


def summary(results: list[ArchResult]) -> None:
    """One markdown row per architecture (ours), for docs/training.md."""
    print("\n| arch | original-like clips/s | ours clips/s | speed-up | ours TFLOP/s | MFU | peak mem | data wait |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        mfu = r.mfu["ours"]
        mem = r.peak_gib.get("ours")
        print(
            f"| {r.arch} | {r.clips['original-like']:.3f} | {r.clips['ours']:.3f} | "
            f"{r.clips['ours'] / r.clips['original-like']:.2f}x | {r.tflops['ours']:.3g} | "
            f"{'-' if mfu is None else f'{mfu:.1f} %'} | {'-' if mem is None else f'{mem:.2f} GiB'} | "
            f"{100 * r.data_wait:.1f} % |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B/32", help="one or more, comma-separated: ViT-B/32,ViT-B/16,ViT-L/14")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="timed optimiser steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None, help="fp32 (CPU default), bf16, amp")
    p.add_argument("--classes", type=int, default=400)
    p.add_argument(
        "--data",
        default=None,
        help="read K400-like pre-processed clips generated into this folder through the real loader "
        "(and report the data wait); default: random clips held in memory",
    )
    p.add_argument("--videos", type=int, default=16, help="with --data: clips to generate (10 s each)")
    p.add_argument("--workers", type=int, default=4, help="with --data: DataLoader workers")
    p.add_argument("--transform-device", default="cpu", choices=("cpu", "cuda"), help="with --data")
    p.add_argument(
        "--decoder",
        default="auto",
        help="with --data: video decoder, or a comma-separated list whose first one that runs here is used "
        "(the others left out with the reason)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the MFU line (default: known GPUs)")
    args = p.parse_args()
    # The original's nested re-entrant checkpoints run their inner forward under no_grad, which makes
    # torch warn on every call; the recomputation in backward does get gradients (checked equal).
    warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if not archs:
        raise UserError(f"--arch {args.arch!r} names no architecture (e.g. ViT-B/32,ViT-B/16)")
    for arch in archs:  # a misspelt name fails now, not after the others were measured
        resolve_arch(arch)
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    g = torch.Generator().manual_seed(0)
    batches: Any = [
        (
            torch.randint(0, 256, (args.batch, args.frames, 3, args.size, args.size), dtype=torch.uint8, generator=g),
            torch.randint(0, args.classes, (args.batch,), generator=g),
            None,
        )
        for _ in range(args.steps)
    ]
    prepare = None
    if args.data:
        batches, prepare = loader_from_clips(args)
    results = []
    for arch in archs:
        results.append(measure(arch, args, batches, prepare, precision))
        report(results[-1], args)
    if len(results) > 1:
        summary(results)


if __name__ == "__main__":
    run_cli(main)
