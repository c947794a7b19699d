"""Train a Text4Vis video model: `python train.py --config CFG [--opts k=v ...]`.

One code path for one process (CPU or one GPU, no launcher), `torchrun --nproc_per_node=N`
(DDP; NCCL on GPU, gloo on CPU) and multi-node torchrun. Cross-entropy on exp(logit_scale)·cosine
logits against the frozen class embeddings, or (`solver.loss_type: NCE | DS`, the original's
train_nce.py baseline) a video-text contrastive loss with CLIP's text tower in the loop; AdamW
with the original's two LR groups; warm-up + cosine (or multistep) LR at the fractional epoch; validation every `logging.eval_freq` epochs
through the shared evaluation engine; atomic `last_model.pt` / `model_best.pt`; exact resume.

Outputs (rank 0) in `--output DIR` or `exp/<dataset>/<arch>/<timestamp>`: config.yaml, log.txt,
metrics.csv, curves.png, last_model.pt, model_best.pt, tb/ (with `logging.tensorboard`),
fewshot_train_list.txt (with `data.shot`).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import clip
from app.run_folder import check_resume_config, prepare_run_folder, record_config
from app.weights import add_trust_arg
from datasets import build_dataset, build_loader, write_fewshot_list
from datasets.builder import data_remedy, read_class_names
from datasets.device_transforms import ClipsToDevice, clips_to_device
from datasets.transforms import normalize
from modules.builder import build_model
from modules.convert import load_weights
from modules.video_model import VideoCLIP
from utils.checkpoint import (
    BEST,
    LAST,
    load_checkpoint,
    restore_training_state,
    rng_state,
    save_checkpoint,
    training_state,
    unwrap,
)
from utils.choices import DEVICES, PRECISIONS
from utils.cli import cli_parser
from utils.compile import compile_model
from utils.config import add_config_args, dump, load_config, to_dict
from utils.contrastive import Objective, make_objective
from utils.data_wait import DataWaitMeter
from utils.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_tensor,
    cleanup,
    init_distributed,
    rank_zero_first,
)
from utils.errors import run_cli
from utils.evaluate import evaluate
from utils.logger import MetricsLog, setup_logger
from utils.optim import build_optimizer, build_scheduler
from utils.precision import grad_scaler, resolve_precision
from utils.training import train_one_epoch

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- set-up helpers
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python `random` (the caller passes seed + rank)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def versions() -> str:
    return (f"Python {platform.python_version()}, PyTorch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, open_clip {open_clip.__version__}")


def build_model_once(cfg: Any, class_names: list[str], dist: DistInfo, log: Log,
                     trusted_pickles: list[str]) -> VideoCLIP:
    """Build VideoCLIP; rank 0 computes (or loads from the cache) the class embeddings first, the
    other ranks build after it and take rank 0's embeddings by broadcast."""
    with rank_zero_first():
        model = build_model(cfg, class_names, device=dist.device, trusted_pickles=trusted_pickles)
    if dist.distributed:
        emb = broadcast_tensor(model.class_embeddings.detach() if dist.rank == 0 else None, src=0,
                               device=dist.device)
        with torch.no_grad():
            model.set_class_embeddings(emb)
    log(f"class embeddings: {tuple(model.class_embeddings.shape)} "
        f"({cfg.network.classifier}, computed on rank 0{' and broadcast' if dist.distributed else ''})")
    return model


@dataclass
class Validation:
    """Single-view validation through the shared engine (every video once, exact counts), and the
    original's 'Testing Results' log line."""

    loader: Iterable
    num_frames: int
    device: torch.device
    scale: float | None
    with_map: bool
    print_freq: int
    log: Log
    prepare: ClipsToDevice | None = None

    @property
    def metric(self) -> str:
        return "mAP" if self.with_map else "top1"

    def __call__(self, model: VideoCLIP) -> dict:
        model.refresh_class_embeddings()  # a trained text tower: its current class embeddings
        report, _ = evaluate(model, self.loader, views=1, num_frames=self.num_frames, device=self.device,
                             normalize=normalize, precision="fp32", scale=self.scale, with_map=self.with_map,
                             log=self.log, print_freq=self.print_freq, prepare=self.prepare)
        self.log(f"Testing Results: Prec@1 {report['top1']:.3f} Prec@5 {report['top5']:.3f}"
                 + (f" mAP {report['mAP']:.3f}" if self.with_map else ""))
        return report


def build_optimisation(cfg: Any, model: nn.Module, iters_per_epoch: int, precision: str,
                       device: torch.device) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
    """AdamW with the original's groups, the per-iteration LR schedule and the loss scaler."""
    s = cfg.solver
    optimizer = build_optimizer(model, lr=s.lr, clip_ratio=s.clip_ratio, weight_decay=s.weight_decay,
                                betas=s.betas, eps=s.eps, no_decay_norm_bias=s.no_decay_norm_bias,
                                full_lr_names=clip.full_lr_param_names(model), device=device)
    scheduler = build_scheduler(optimizer, kind=s.type, epochs=s.epochs, warmup_epochs=s.lr_warmup_step,
                                iters_per_epoch=iters_per_epoch, step_every=s.lr_step_every,
                                decay_step=s.lr_decay_step, decay_factor=s.lr_decay_factor)
    return optimizer, scheduler, grad_scaler(precision, device)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli_parser("train.py", (__doc__ or "").split("\n\n")[0])
    add_config_args(p)
    p.add_argument("--output", default=None, help="run folder (default exp/<dataset>/<arch>/<timestamp>)")
    p.add_argument("--log_time", "--log-time", dest="log_time", default=None,
                   help="timestamp for the default run folder (scripts pass one)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="amp (fp16 autocast + GradScaler, CUDA default), bf16, fp16 (= amp), fp32 (CPU default)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present, else CPU")
    add_trust_arg(p)
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
    """The recipe: run folder, model, data, optimiser, resume, then train / validate / save."""
    seed_everything(cfg.seed + dist.rank)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(args.precision, dist.device)
    out, resume_path = prepare_run_folder(cfg, args, dist)
    resume_ckpt = load_checkpoint(resume_path) if resume_path else None
    changes = check_resume_config(resume_ckpt, cfg, resume_path) if resume_ckpt is not None else []
    log = setup_logger(out, dist.rank).info
    log(versions())
    log(f"world size {dist.world_size} ({'DDP' if dist.distributed else 'single process'}), "
        f"device {dist.device}, precision {precision}")
    log("config:\n" + dump(cfg))
    log(f"output folder: {out}")
    for change in changes:
        log(f"resume: {change} (allowed; config.yaml and the next checkpoints record the new value)")
    if dist.rank == 0:
        record_config(cfg, args.config, out)

    class_names = read_class_names(cfg.data)
    model = build_model_once(cfg, class_names, dist, log, args.trust_pickle)
    if cfg.pretrain and not resume_path:
        load_weights(model, cfg.pretrain)
        log(f"pretrain: loaded weights from {cfg.pretrain}")
    model.to(dist.device)
    validate = build_validation(cfg, dist, log)
    if cfg.solver.evaluate:
        if resume_ckpt is not None:
            unwrap(model).load_state_dict(resume_ckpt["model"], strict=True)
        return validate(model)

    train_loader, train_ds = build_train_loader(cfg, dist, out, log)
    if cfg.solver.compile:
        compile_model(model)
        log("solver.compile: the visual encoder and head are compiled with torch.compile (the first "
            "iterations include the compilation)")
    optimizer, scheduler, scaler = build_optimisation(cfg, model, len(train_loader), precision, dist.device)
    start = RunState(cfg.solver.start_epoch, 0, 0.0)
    if resume_ckpt is not None:
        meta = restore_training_state(resume_ckpt, model=model, optimizer=optimizer,
                                      scheduler=scheduler, scaler=scaler, rank=dist.rank, path=str(resume_path))
        del resume_ckpt
        start = RunState(meta["epoch"] + 1, meta["iteration"], meta["best_top1"])
        log(f"resumed from {resume_path}: epoch {meta['epoch']} done, best {start.best:.3f}")
    elif cfg.resume == "auto":
        log("resume: auto found no checkpoint; starting from scratch")
    end_epoch = cfg.solver.epochs
    if args.stop_after_epochs is not None:
        end_epoch = min(end_epoch, start.epoch + max(args.stop_after_epochs, 0))
    objective = make_objective(cfg.solver.loss_type, text_tower=model.has_text_tower)
    log(f"objective: {cfg.solver.loss_type}" + (f", text tower {'frozen' if cfg.network.fix_text else 'trained'}"
                                                 if model.has_text_tower else ""))
    session = Session(cfg, dist, out, log, model, optimizer, scheduler, scaler, precision, class_names, objective,
                      clips_to_device(train_ds, dist.device), data_wait_meter(cfg, train_ds))
    result = session.fit(train_loader, validate, start, end_epoch)
    if end_epoch < cfg.solver.epochs:
        log(f"stopped after epoch {end_epoch - 1} of {cfg.solver.epochs}: continue with the same command and "
            f"--opts resume={out / LAST}")
    return result


def build_validation(cfg: Any, dist: DistInfo, log: Log) -> Validation:
    val_ds = build_dataset(cfg, "val")
    log(f"val: {len(val_ds)} videos; transforms: {getattr(val_ds, 'transform', '')}")
    loader = build_loader(val_ds, cfg.data.batch_size, cfg.data.workers, train=False, rank=dist.rank,
                          world_size=dist.world_size, seed=cfg.seed)
    return Validation(loader, cfg.data.num_segments, dist.device, cfg.network.eval_logit_scale,
                      cfg.data.metric == "mAP", cfg.logging.print_freq, log if dist.rank == 0 else (lambda _m: None),
                      clips_to_device(val_ds, dist.device))


def data_wait_meter(cfg: Any, dataset: Any) -> DataWaitMeter:
    """The data-bound alarm of `logging.data_wait_alarm`, with the remedy for this pipeline."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return DataWaitMeter(cfg.logging.data_wait_alarm, remedy=data_remedy(dataset, cfg.data.workers, per_node))


def build_train_loader(cfg: Any, dist: DistInfo, out: Path, log: Log) -> tuple[Any, Any]:
    """(loader, dataset) of the training list."""
    train_ds = build_dataset(cfg, "train")
    loader = build_loader(train_ds, cfg.data.batch_size, cfg.data.workers, train=True, rank=dist.rank,
                          world_size=dist.world_size, seed=cfg.seed,
                          drop_last=cfg.network.text_tower)  # as train_nce.py: no short last batch
    log(f"train: {len(train_ds)} videos, {len(loader)} iterations per epoch; "
        f"transforms: {getattr(train_ds, 'transform', '')}")
    if cfg.data.shot and dist.rank == 0:
        path = write_fewshot_list(train_ds, out)
        if path:
            log(f"few-shot selection written to {path}")
    return loader, train_ds


@dataclass
class RunState:
    """Where training stands: the next epoch, loader iterations done, best validation value."""

    epoch: int
    iteration: int
    best: float


@dataclass
class Session:
    """The pieces of one training run, and the epoch loop over them."""

    cfg: Any
    dist: DistInfo
    out: Path
    log: Log
    model: VideoCLIP
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    precision: str
    class_names: list[str]
    objective: Objective
    prepare: ClipsToDevice
    meter: DataWaitMeter

    def fit(self, loader: Any, validate: Validation, start: RunState, end_epoch: int) -> dict:
        cfg, dist = self.cfg, self.dist
        ddp_model: nn.Module = self.model
        if dist.distributed:
            ddp_model = DDP(self.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        metrics = MetricsLog(self.out, enabled=dist.rank == 0, tensorboard=cfg.logging.tensorboard)
        on_iteration = None
        if metrics.tb is not None:
            def on_iteration(step: int, loss: float, lrs: list[float]) -> None:
                metrics.scalars(step, {"train/loss": loss, "train/lr": lrs[-1]})
        best, iteration, report = start.best, start.iteration, {}
        for epoch in range(start.epoch, end_epoch):
            loader.sampler.set_epoch(epoch)  # also sets the dataset's epoch (augmentation draws)
            stats = train_one_epoch(
                ddp_model, loader, self.optimizer, self.scheduler, self.scaler, epoch=epoch, device=dist.device,
                num_frames=cfg.data.num_segments, normalize=normalize, precision=self.precision,
                accumulation=cfg.solver.grad_accumulation_steps, clip_grad_norm=cfg.solver.clip_grad_norm,
                world_size=dist.world_size, print_freq=cfg.logging.print_freq, epochs=cfg.solver.epochs,
                log=validate.log, progress=dist.rank == 0, on_iteration=on_iteration,
                objective=self.objective, prepare=self.prepare, meter=self.meter)
            iteration += len(loader)
            row = epoch_row(epoch, iteration, stats.loss_sum, stats.samples, stats.seconds, stats.lrs, self.log)
            row.update(self.meter.row())
            self.meter.reset()
            validate_now = (epoch + 1) % cfg.logging.eval_freq == 0 or epoch == cfg.solver.epochs - 1
            is_best = False
            if validate_now:
                report = validate(self.model)
                value = report[validate.metric]
                is_best, best = value > best, max(best, value)
                self.log(f"Testing: {value:.3f}/{best:.3f}")
                row.update(val_top1=f"{report['top1']:.3f}", val_top5=f"{report['top5']:.3f}",
                           best_top1=f"{best:.3f}")
            metrics.epoch(row)  # before the checkpoints: a kill in between re-runs this epoch, rewriting the row
            if validate_now or epoch == end_epoch - 1:  # stopping early: keep what was trained
                self.save(epoch, iteration, best, is_best)
        metrics.close()
        self.log(f"done: best {validate.metric} {best:.3f}; run folder {self.out}")
        return {"output": str(self.out), "best": best, **report}

    def save(self, epoch: int, iteration: int, best: float, is_best: bool) -> None:
        """model_best.pt first, then last_model.pt (rank 0; the others wait). A kill during either
        write leaves last_model.pt at the previous save, so resume re-runs this epoch and writes both
        again: model_best.pt never misses the best epoch."""
        rngs = all_gather_object(rng_state())
        self.model.refresh_class_embeddings()  # saved with the text tower they come from
        if self.dist.rank == 0:
            state = training_state(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                   scaler=self.scaler, epoch=epoch, iteration=iteration, best_top1=best, rng=rngs,
                                   config=to_dict(self.cfg), class_names=self.class_names)
            if is_best:
                self.log(f"Saving: {save_checkpoint(state, self.out / BEST)} (best)")
            self.log(f"Saving: {save_checkpoint(state, self.out / LAST)}")
        barrier()


def epoch_row(epoch: int, iteration: int, loss_sum: float, samples: int, seconds: float, lrs: list[float],
              log: Log) -> dict[str, Any]:
    """The epoch's metrics.csv row from this rank's sums (loss averaged over every rank's samples)."""
    totals = all_reduce_sum(torch.tensor([loss_sum, samples], dtype=torch.float64))
    train_loss = float(totals[0]) / max(float(totals[1]), 1.0)
    clips_s = float(totals[1]) / max(seconds, 1e-9)
    log(f"Epoch {epoch} done: loss {train_loss:.4f}, {clips_s:.1f} clips/s, {seconds:.1f} s")
    return {"epoch": epoch, "iteration": iteration, "train_loss": f"{train_loss:.6f}", "lr": f"{lrs[-1]:.6e}",
            "lr_visual": f"{lrs[0]:.6e}", "clips_per_s": f"{clips_s:.3f}", "epoch_time_s": f"{seconds:.2f}"}


if __name__ == "__main__":
    run_cli(main)
