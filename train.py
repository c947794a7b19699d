"""Train a Text4Vis video model: `python train.py --config CFG [--opts k=v ...]`.

One code path for one process (CPU or one GPU, no launcher), `torchrun --nproc_per_node=N`
(DDP; NCCL on GPU, gloo on CPU) and multi-node torchrun. Cross-entropy on exp(logit_scale)·cosine
logits against the frozen class embeddings; AdamW with the original's two LR groups; warm-up +
cosine (or multistep) LR at the fractional epoch; validation every `logging.eval_freq` epochs
through the shared evaluation engine; atomic `last_model.pt` / `model_best.pt`; exact resume.

Outputs (rank 0) in `--output DIR` or `exp/<dataset>/<arch>/<timestamp>`: config.yaml, log.txt,
metrics.csv, curves.png, last_model.pt, model_best.pt, tb/ (with `logging.tensorboard`),
fewshot_list.txt (with `data.shot`).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from utils.checkpoint import (BEST, LAST, find_resume, load_checkpoint, remove_stale_temporaries,
                              restore_training_state, rng_state, save_checkpoint, training_state, unwrap)
from utils.config import add_config_args, dump, load_config, to_dict
from utils.distributed import (DistInfo, all_gather_object, all_reduce_sum, barrier, broadcast_object,
                               broadcast_tensor, cleanup, init_distributed)
from utils.errors import UserError, run_cli
from utils.logger import MetricsLog, setup_logger
from utils.optim import build_optimizer, build_scheduler
from utils.precision import CHOICES as PRECISIONS, autocast, grad_scaler, resolve_precision


# ----------------------------------------------------------------------------- set-up helpers
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python `random` (the caller passes seed + rank)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def arch_folder(arch: str) -> str:
    """`ViT-B/32` -> `ViT-B-32` (one folder level; the original nested one per slash)."""
    return arch.replace("/", "-")


def output_folder(cfg: Any, output: str | None, log_time: str | None) -> Path:
    """`--output`, or `exp/<dataset>/<arch>/<timestamp>` (`exp_fewshot/...` with `data.shot`)."""
    if output:
        return Path(output)
    root = "exp_fewshot" if cfg.data.shot else "exp"
    stamp = log_time or time.strftime("%Y%m%d_%H%M%S")
    return Path(root) / cfg.data.dataset / arch_folder(cfg.network.arch) / stamp


def runs_root(cfg: Any) -> Path:
    return Path("exp_fewshot" if cfg.data.shot else "exp") / cfg.data.dataset / arch_folder(cfg.network.arch)


def versions() -> str:
    import torchvision
    try:
        import open_clip
        oc = open_clip.__version__
    except Exception:  # noqa: BLE001
        oc = "not installed"
    return (f"Python {platform.python_version()}, PyTorch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, open_clip {oc}")


def batch_to_device(clips: torch.Tensor, device: torch.device, num_frames: int) -> torch.Tensor:
    """uint8 (B, T, 3, S, S) or (B, T*3, S, S) -> normalised float (B, T, 3, S, S) on `device`."""
    from datasets.transforms import normalize
    x = clips.to(device, non_blocking=True)
    x = x.reshape(x.shape[0], num_frames, 3, *x.shape[-2:])
    return normalize(x)


# ----------------------------------------------------------------------------- training step
@dataclass
class EpochStats:
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    lrs: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.samples, 1)


class AverageMeter:
    def __init__(self) -> None:
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: torch.amp.GradScaler, *, epoch: int, device: torch.device,
                    num_frames: int, precision: str = "fp32", accumulation: int = 1,
                    clip_grad_norm: float | None = None, world_size: int = 1, print_freq: int = 10,
                    epochs: int = 1, log: Callable[[str], None] | None = None, progress: bool = False,
                    on_iteration: Callable[[int, float, list[float]], None] | None = None,
                    to_device: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EpochStats:
    """One pass over `loader` (items `(uint8 clips, labels, ...)`).

    Gradients of `accumulation` consecutive batches are summed before an optimiser step (DDP
    `no_sync` on all but the last); the last window of the epoch may be shorter and is stepped
    too, so nothing carries into the next epoch. Each batch's loss is divided by its window's
    length, so accumulating k batches of b equals one batch of k·b. The scheduler is stepped
    after every batch (the LR is a function of the loader iteration, as the original).
    """
    model.train()
    n = len(loader)  # type: ignore[arg-type]
    stats = EpochStats()
    batch_time, data_time, losses = AverageMeter(), AverageMeter(), AverageMeter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True, mininterval=1.0,
                   leave=False, file=sys.stderr, disable=None)  # None: off when not a terminal
    is_ddp = isinstance(model, DDP)
    optimizer.zero_grad(set_to_none=True)
    end = start = time.perf_counter()
    for i, batch in enumerate(loader):
        clips, labels = batch[0], batch[1]
        data_time.update(time.perf_counter() - end)
        window_start = (i // accumulation) * accumulation
        window = min(accumulation, n - window_start)
        last_in_window = (i - window_start) == window - 1
        x = to_device(clips) if to_device else batch_to_device(clips, device, num_frames)
        y = torch.as_tensor(labels).to(device, non_blocking=True).long().reshape(-1)
        sync = model.no_sync() if (is_ddp and not last_in_window) else nullcontext()
        with sync:
            with autocast(precision, device):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            scaler.scale(loss / window).backward()
        if last_in_window:
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            stats.steps += 1
        lrs = [g["lr"] for g in optimizer.param_groups]
        with warnings.catch_warnings():  # an accumulation window may begin before optimizer.step()
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        loss_val = float(loss.detach())
        b = int(y.shape[0])
        stats.loss_sum += loss_val * b
        stats.samples += b
        losses.update(loss_val, b)
        batch_time.update(time.perf_counter() - end)
        end = time.perf_counter()
        if on_iteration is not None:
            on_iteration(epoch * n + i, loss_val, lrs)
        if bar is not None:
            bar.set_postfix(loss=f"{losses.avg:.4f}", lr=f"{lrs[-1]:.2e}",
                            clips_s=f"{b * world_size / max(batch_time.avg, 1e-9):.1f}", refresh=False)
            bar.update(1)
        if log is not None and print_freq and i % print_freq == 0:
            eta = batch_time.avg * ((epochs - epoch) * n - i - 1)
            log(f"Epoch: [{epoch}][{i}/{n}], lr: {lrs[-1]:.2e}, eta: {_hms(eta)}\t"
                f"Time {batch_time.val:.3f} ({batch_time.avg:.3f})\t"
                f"Data {data_time.val:.3f} ({data_time.avg:.3f})\t"
                f"Loss {loss_val:.4f} ({losses.avg:.4f})")
        stats.lrs = lrs
    if bar is not None:
        bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------- validation
def validate(model: nn.Module, loader: Iterable, *, num_frames: int, device: torch.device,
             scale: float | None, with_map: bool, log: Callable[[str], None], print_freq: int,
             dist: DistInfo) -> dict:
    """Single-view validation through the shared engine: every video once, exact counts."""
    from utils.evaluate import evaluate
    report, _ = evaluate(model, loader, views=1, num_frames=num_frames, device=device, precision="fp32",
                         dist=dist, scale=scale, with_map=with_map, log=log, print_freq=print_freq)
    return report


# ----------------------------------------------------------------------------- model and data
def build_model_once(cfg: Any, class_names: list[str], dist: DistInfo, log: Callable[[str], None]) -> nn.Module:
    """Build VideoCLIP; rank 0 computes (or loads from the cache) the class embeddings first, the
    other ranks build after it and take rank 0's embeddings by broadcast."""
    from modules.builder import build_model
    model = None
    if dist.rank == 0:
        model = build_model(cfg, class_names, device=dist.device)
    barrier()
    if dist.rank != 0:
        model = build_model(cfg, class_names, device=dist.device)
    if dist.distributed:
        emb = broadcast_tensor(model.class_embeddings.detach() if dist.rank == 0 else None, src=0,
                               device=dist.device)
        with torch.no_grad():
            model.set_class_embeddings(emb)
    log(f"class embeddings: {tuple(model.class_embeddings.shape)} "
        f"({cfg.network.classifier}, computed on rank 0{' and broadcast' if dist.distributed else ''})")
    return model


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument("--output", default=None, help="run folder (default exp/<dataset>/<arch>/<timestamp>)")
    p.add_argument("--log_time", "--log-time", dest="log_time", default=None,
                   help="timestamp for the default run folder (scripts pass one)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="amp (fp16 autocast + GradScaler, CUDA default), bf16, fp16 (= amp), fp32 (CPU default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--stop_after_epochs", "--stop-after-epochs", dest="stop_after_epochs", type=int, default=None,
                   metavar="N", help="end this invocation after N epochs and save last_model.pt (the schedule "
                   "still spans solver.epochs); continue later with --opts resume=auto (job time limits)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    dist = init_distributed(args.device)
    try:
        return run(cfg, args, dist)
    finally:
        cleanup()


def run(cfg: Any, args: argparse.Namespace, dist: DistInfo) -> dict:
    seed_everything(cfg.seed + dist.rank)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(args.precision, dist.device)

    # output folder (rank 0 decides; `resume: auto` continues the newest run of this dataset/arch)
    resume_path = None
    if dist.rank == 0:
        out = output_folder(cfg, args.output, args.log_time)
        resume_path = find_resume(cfg.resume, args.output, None if args.output else runs_root(cfg))
        if resume_path is not None and cfg.resume == "auto" and not args.output:
            out = resume_path.parent
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    else:
        out = None
    out, resume_path = broadcast_object((out, resume_path))
    out = Path(out)
    logger = setup_logger(out, dist.rank)
    log = logger.info
    log(versions())
    log(f"world size {dist.world_size} ({'DDP' if dist.distributed else 'single process'}), "
        f"device {dist.device}, precision {precision}")
    log("config:\n" + dump(cfg))
    log(f"output folder: {out}")
    if dist.rank == 0:
        (out / "config.yaml").write_text(dump(cfg))
        try:
            shutil.copy(args.config, out / ("source_" + Path(args.config).name))
        except (OSError, shutil.SameFileError):
            pass

    from datasets import build_dataset, build_loader
    from datasets.lists import read_label_csv

    class_names = read_label_csv(cfg.data.label_list)
    model = build_model_once(cfg, class_names, dist, log)
    if cfg.pretrain and not resume_path:
        from modules.convert import load_weights
        load_weights(model, cfg.pretrain)
        log(f"pretrain: loaded weights from {cfg.pretrain}")
    model.to(dist.device)

    val_ds = build_dataset(cfg, "val")
    val_loader = build_loader(val_ds, cfg.data.batch_size, cfg.data.workers, train=False,
                              rank=dist.rank, world_size=dist.world_size, seed=cfg.seed)
    log(f"val: {len(val_ds)} videos; transforms: {getattr(val_ds, 'transform', '')}")
    num_frames = cfg.data.num_segments
    eval_scale = cfg.network.eval_logit_scale
    with_map = cfg.data.metric == "mAP"
    metric_key = "mAP" if with_map else "top1"
    vlog = log if dist.rank == 0 else (lambda _m: None)

    if cfg.solver.evaluate:
        if resume_path:
            ckpt = load_checkpoint(resume_path)
            unwrap(model).load_state_dict(ckpt["model"], strict=True)
        report = validate(model, val_loader, num_frames=num_frames, device=dist.device, scale=eval_scale,
                          with_map=with_map, log=vlog, print_freq=cfg.logging.print_freq, dist=dist)
        log(f"Testing Results: Prec@1 {report['top1']:.3f} Prec@5 {report['top5']:.3f}"
            + (f" mAP {report['mAP']:.3f}" if with_map else ""))
        return report

    train_ds = build_dataset(cfg, "train")
    train_loader = build_loader(train_ds, cfg.data.batch_size, cfg.data.workers, train=True,
                                rank=dist.rank, world_size=dist.world_size, seed=cfg.seed)
    log(f"train: {len(train_ds)} videos, {len(train_loader)} iterations per epoch; "
        f"transforms: {getattr(train_ds, 'transform', '')}")
    if cfg.data.shot and dist.rank == 0:
        from datasets import write_fewshot_list
        path = write_fewshot_list(train_ds, out)
        if path:
            log(f"few-shot selection written to {path}")

    optimizer = build_optimizer(model, lr=cfg.solver.lr, clip_ratio=cfg.solver.clip_ratio,
                                weight_decay=cfg.solver.weight_decay, betas=cfg.solver.betas,
                                eps=cfg.solver.eps, no_decay_norm_bias=cfg.solver.no_decay_norm_bias,
                                full_lr_names=_full_lr_names(model), device=dist.device)
    scheduler = build_scheduler(optimizer, kind=cfg.solver.type, epochs=cfg.solver.epochs,
                                warmup_epochs=cfg.solver.lr_warmup_step, iters_per_epoch=len(train_loader),
                                step_every=cfg.solver.lr_step_every, decay_step=cfg.solver.lr_decay_step,
                                decay_factor=cfg.solver.lr_decay_factor)
    scaler = grad_scaler(precision, dist.device)

    start_epoch, best, iteration = cfg.solver.start_epoch, 0.0, 0
    if resume_path:
        meta = restore_training_state(load_checkpoint(resume_path), model=model, optimizer=optimizer,
                                      scheduler=scheduler, scaler=scaler, rank=dist.rank, path=resume_path)
        start_epoch, best, iteration = meta["epoch"] + 1, meta["best_top1"], meta["iteration"]
        log(f"resumed from {resume_path}: epoch {meta['epoch']} done, best {best:.3f}")
    elif cfg.resume == "auto":
        log("resume: auto found no checkpoint; starting from scratch")

    ddp_model: nn.Module = model
    if dist.distributed:
        ddp_model = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    metrics = MetricsLog(out, enabled=dist.rank == 0, tensorboard=cfg.logging.tensorboard)
    report: dict = {}
    end_epoch = cfg.solver.epochs
    if args.stop_after_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + max(args.stop_after_epochs, 0))
    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)  # also sets the dataset's epoch (augmentation draws)
        stats = train_one_epoch(
            ddp_model, train_loader, optimizer, scheduler, scaler, epoch=epoch, device=dist.device,
            num_frames=num_frames, precision=precision, accumulation=cfg.solver.grad_accumulation_steps,
            clip_grad_norm=cfg.solver.clip_grad_norm, world_size=dist.world_size,
            print_freq=cfg.logging.print_freq, epochs=cfg.solver.epochs, log=vlog,
            progress=dist.rank == 0,
            on_iteration=(lambda step, loss, lrs: metrics.scalars(step, {"train/loss": loss, "train/lr": lrs[-1]}))
            if metrics.tb is not None else None)
        iteration += len(train_loader)
        totals = all_reduce_sum(torch.tensor([stats.loss_sum, stats.samples], dtype=torch.float64))
        train_loss = float(totals[0] / max(totals[1], 1))
        clips_s = float(totals[1]) / max(stats.seconds, 1e-9)
        log(f"Epoch {epoch} done: loss {train_loss:.4f}, {clips_s:.1f} clips/s, {stats.seconds:.1f} s")
        row = {"epoch": epoch, "iteration": iteration, "train_loss": f"{train_loss:.6f}",
               "lr": f"{stats.lrs[-1]:.6e}", "lr_visual": f"{stats.lrs[0]:.6e}",
               "clips_per_s": f"{clips_s:.3f}", "epoch_time_s": f"{stats.seconds:.2f}"}
        is_best = False
        if (epoch + 1) % cfg.logging.eval_freq == 0 or epoch == cfg.solver.epochs - 1:
            report = validate(model, val_loader, num_frames=num_frames, device=dist.device, scale=eval_scale,
                              with_map=with_map, log=vlog, print_freq=cfg.logging.print_freq, dist=dist)
            value = report[metric_key]
            log(f"Testing Results: Prec@1 {report['top1']:.3f} Prec@5 {report['top5']:.3f}"
                + (f" mAP {report['mAP']:.3f}" if with_map else ""))
            is_best = value > best
            best = max(best, value)
            log(f"Testing: {value}/{best}")
            row.update(val_top1=f"{report['top1']:.3f}", val_top5=f"{report['top5']:.3f}", best_top1=f"{best:.3f}")
            save_now = True
        else:
            save_now = epoch == end_epoch - 1  # stopping early: keep what was trained
        if save_now:
            rngs = all_gather_object(rng_state())
            if dist.rank == 0:
                log("Saving:")
                state = training_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                       epoch=epoch, iteration=iteration, best_top1=best, rng=rngs,
                                       config=to_dict(cfg))
                save_checkpoint(state, out / LAST)
                if is_best:
                    save_checkpoint(state, out / BEST)
            barrier()
        metrics.epoch(row)
    metrics.close()
    log(f"done: best {metric_key} {best:.3f}; run folder {out}")
    return {"output": str(out), "best": best, **report}


def _full_lr_names(model: nn.Module) -> list[str]:
    """In-backbone temporal parameters trained at the full LR (TokenT1D), as clip/ names them."""
    import clip
    return list(clip.full_lr_param_names(model))


if __name__ == "__main__":
    run_cli(main)
