"""Train a Text4Vis video model: `python train.py --config CFG [--opts k=v ...]`.

One code path for one process (CPU or one GPU, no launcher), `torchrun --nproc_per_node=N`
(DDP; NCCL on GPU, gloo on CPU) and multi-node torchrun. Cross-entropy on exp(logit_scale)·cosine
logits against the frozen class embeddings, or (`solver.loss_type: NCE | DS`, the original's
train_nce.py baseline) a video-text contrastive loss with CLIP's text tower in the loop; AdamW
with the original's two LR groups; warm-up + cosine (or multistep) LR at the fractional epoch;
validation every `logging.eval_freq` epochs through the shared evaluation engine; atomic
`last_model.pt` / `model_best.pt`; exact resume.

Outputs (rank 0) in `--output DIR` or `exp/<dataset>/<arch>/<timestamp>`: config.yaml, log.txt,
metrics.csv, curves.png, last_model.pt, model_best.pt, tb/ (with `logging.tensorboard`),
fewshot_train_list.txt (with `data.shot`).
"""

from __future__ import annotations

import argparse

from utils.choices import DEVICES, PRECISIONS
from utils.cli import (
    add_allow_pipe_arg,
    add_config_args,
    add_trust_arg,
    check_before_imports,
    cli_parser,
    help_before_imports,
    positive_int,
)
from utils.config import load_config


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("train.py", (__doc__ or "").split("\n\n")[0])
    add_config_args(p, required=True)
    p.add_argument("--output", default=None, help="run folder (default exp/<dataset>/<arch>/<timestamp>)")
    p.add_argument(
        "--log_time",
        "--log-time",
        dest="log_time",
        default=None,
        help="timestamp for the default run folder (scripts pass one)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="amp (fp16 autocast + GradScaler, CUDA default), bf16, fp16 (= amp), fp32 (CPU default)",
    )
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present, else CPU")
    add_trust_arg(p)
    add_allow_pipe_arg(p)
    p.add_argument(
        "--stop_after_epochs",
        "--stop-after-epochs",
        dest="stop_after_epochs",
        type=positive_int,
        default=None,
        metavar="N",
        help="end this invocation after N epochs and save last_model.pt (the schedule "
        "still spans solver.epochs); continue later with --opts resume=auto (job time limits)",
    )
    return p


# --help answers here, before torch and open_clip are imported (seconds); the imports below come
# after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)
check_before_imports(__name__, build_parser, lambda args: load_config(args.config, args.opts))

import os
import platform
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torchvision
from torch import nn

import clip
from app.fit import RunState, Session, Validation
from app.run_folder import check_resume_config, end_epoch, prepare_run_folder, record_config, run_is_complete
from datasets import build_dataset, config_loader, write_fewshot_list
from datasets.data_builder import data_remedy, read_class_names
from datasets.device_transforms import clips_to_device
from datasets.shard_dataset import allowed_pipes, check_sources
from modules.convert import load_weights
from modules.model_builder import build_model
from modules.video_model import VideoCLIP
from utils.checkpoint import (
    LAST,
    load_checkpoint,
    restore_training_state,
    unwrap,
)
from utils.compile import compile_model
from utils.config import Config, dump
from utils.contrastive import Objective, make_objective
from utils.data_wait import DataWaitMeter
from utils.distributed import (
    DistInfo,
    broadcast_tensor,
    cleanup,
    init_distributed,
    rank_zero_first,
)
from utils.errors import run_cli
from utils.logger import setup_logger
from utils.optim import AdamMoments, build_optimizer, build_scheduler
from utils.precision import grad_scaler, resolve_precision

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- set-up helpers
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python `random` (the caller passes seed + rank)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def versions() -> str:
    return (
        f"Python {platform.python_version()}, PyTorch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, open_clip {open_clip.__version__}"
    )


def build_model_once(
    cfg: Config, class_names: list[str], dist: DistInfo, log: Log, trusted_pickles: list[str]
) -> VideoCLIP:
    """Build VideoCLIP; rank 0 computes (or loads from the cache) the class embeddings first, the
    other ranks build after it and take rank 0's embeddings by broadcast."""
    with rank_zero_first():
        model = build_model(cfg, class_names, device=dist.device, trusted_pickles=trusted_pickles)
    if dist.distributed:
        emb = broadcast_tensor(model.class_embeddings.detach() if dist.rank == 0 else None, src=0, device=dist.device)
        with torch.no_grad():
            model.set_class_embeddings(emb)
    log(
        f"class embeddings: {tuple(model.class_embeddings.shape)} "
        f"({cfg.network.classifier}, computed on rank 0{' and broadcast' if dist.distributed else ''})"
    )
    return model


def build_optimisation(
    cfg: Config, model: nn.Module, iters_per_epoch: int, precision: str, device: torch.device
) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
    """AdamW with the original's groups, the per-iteration LR schedule and the loss scaler."""
    s = cfg.solver
    optimizer = build_optimizer(
        model,
        lr=s.lr,
        clip_ratio=s.clip_ratio,
        weight_decay=s.weight_decay,
        moments=AdamMoments(s.betas, s.eps),
        no_decay_norm_bias=s.no_decay_norm_bias,
        full_lr_names=clip.full_lr_param_names(model),
        device=device,
    )
    scheduler = build_scheduler(
        optimizer,
        kind=s.type,
        epochs=s.epochs,
        warmup_epochs=s.lr_warmup_step,
        iters_per_epoch=iters_per_epoch,
        step_every=s.lr_step_every,
        decay_step=s.lr_decay_step,
        decay_factor=s.lr_decay_factor,
    )
    return optimizer, scheduler, grad_scaler(precision, device)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    check_sources(cfg.data, args.config, allowed_pipes(args))  # before any folder or process exists
    dist = init_distributed(args.device)
    try:
        return run(cfg, args, dist)
    finally:
        cleanup()


def run(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> dict:
    """The recipe: run folder, model, data, optimiser, resume, then train / validate / save."""
    seed_everything(cfg.seed + dist.rank)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(args.precision, dist.device)
    out, resume_path = prepare_run_folder(cfg, args, dist)
    log = setup_logger(out, dist.rank).info  # first: a failure from here on ends log.txt (run_cli)
    resume_ckpt = load_checkpoint(resume_path) if resume_path else None
    changes = check_resume_config(resume_ckpt, cfg, resume_path) if resume_ckpt is not None else []
    if resume_ckpt is not None and not cfg.solver.evaluate and run_is_complete(resume_ckpt, cfg, resume_path):
        if dist.rank == 0:  # printed, not logged: log.txt, config.yaml and the checkpoints stay as they are
            print(complete_line(resume_path, cfg.solver.epochs), flush=True)
        return {"output": str(out), "best": float(resume_ckpt["best_top1"]), "complete": True}
    log_start(log, cfg, dist, precision, out, changes)
    if dist.rank == 0 and not (cfg.solver.evaluate and resume_ckpt is not None):
        record_config(cfg, args.config, out)  # validating a run's checkpoint leaves the config that trained it

    class_names = read_class_names(cfg.data)
    model = model_on_device(cfg, class_names, dist, log, args.trust_pickle, pretrain=not resume_path)
    validate = build_validation(cfg, dist, log, allowed_pipes(args))
    if cfg.solver.evaluate:
        if resume_ckpt is not None:
            unwrap(model).load_state_dict(resume_ckpt["model"], strict=True)
        return validate(model)

    train_loader, train_ds = build_train_loader(cfg, dist, out, log, allowed_pipes(args))
    if cfg.solver.compile:
        compile_for_training(model, log)
    optimizer, scheduler, scaler = build_optimisation(cfg, model, len(train_loader), precision, dist.device)
    start = RunState(cfg.solver.start_epoch, 0, 0.0)
    if resume_ckpt is not None:
        start = restore(resume_ckpt, str(resume_path), model, optimizer, scheduler, scaler, dist.rank, log)
        del resume_ckpt
    elif cfg.resume == "auto":
        log("resume: auto found no checkpoint; starting from scratch")
    last = end_epoch(start.epoch, cfg.solver.epochs, args.stop_after_epochs)
    session = Session(
        cfg,
        dist,
        out,
        log,
        model,
        optimizer,
        scheduler,
        scaler,
        precision,
        class_names,
        build_objective(cfg, model, log),
        clips_to_device(train_ds, dist.device),
        data_wait_meter(cfg, train_ds),
    )
    result = session.fit(train_loader, validate, start, last)
    if last < cfg.solver.epochs:
        log(stopped_line(last, cfg.solver.epochs, last - start.epoch, out))
    if dist.rank == 0:
        from app.report import after_run  # here, not at the top: train.py --help stays fast

        after_run(out, "train.py", cfg.logging.report)
    return result


def model_on_device(
    cfg: Config, class_names: list[str], dist: DistInfo, log: Log, trusted: list[str], *, pretrain: bool
) -> VideoCLIP:
    """The model, with `cfg.pretrain`'s weights when `pretrain` (not on resume), on the device."""
    model = build_model_once(cfg, class_names, dist, log, trusted)
    if cfg.pretrain and pretrain:
        load_weights(model, cfg.pretrain)
        log(f"pretrain: loaded weights from {cfg.pretrain}")
    model.to(dist.device)
    return model


def complete_line(resume_path: Path | str | None, epochs: int) -> str:
    """What a resume of a finished run says (it trains and rewrites nothing)."""
    return (
        f"resume: {resume_path} has trained all {epochs} epochs of solver.epochs: the run is "
        f"complete; nothing was trained or rewritten (raise solver.epochs to train on)"
    )


def stopped_line(done: int, epochs: int, this_run: int, out: Path) -> str:
    """The last log line of a run that `--stop_after_epochs` stopped: how to continue it."""
    return (
        f"stopped after {done} of {epochs} epochs ({this_run} in this run, "
        f"--stop_after_epochs): continue with the same command and --opts resume={out / LAST}"
    )


def compile_for_training(model: VideoCLIP, log: Log) -> None:
    """solver.compile: torch.compile the visual encoder and head, and say that it happened."""
    compile_model(model)
    log(
        "solver.compile: the visual encoder and head are compiled with torch.compile (the first "
        "iterations include the compilation)"
    )


def build_objective(cfg: Config, model: VideoCLIP, log: Log) -> Objective:
    """The training loss of `solver.loss_type` (cross-entropy, or the contrastive NCE / DS)."""
    objective = make_objective(cfg.solver.loss_type, text_tower=model.has_text_tower)
    log(
        f"objective: {cfg.solver.loss_type}"
        + (f", text tower {'frozen' if cfg.network.fix_text else 'trained'}" if model.has_text_tower else "")
    )
    return objective


def log_start(log: Log, cfg: Config, dist: DistInfo, precision: str, out: Path, changes: list[str]) -> None:
    """The head of log.txt: versions, world, the resolved config, and the resume changes allowed."""
    log(versions())
    log(
        f"world size {dist.world_size} ({'DDP' if dist.distributed else 'single process'}), "
        f"device {dist.device}, precision {precision}"
    )
    log("config:\n" + dump(cfg))
    log(f"output folder: {out}")
    for change in changes:
        log(f"resume: {change} (allowed; config.yaml and the next checkpoints record the new value)")


def restore(
    ckpt: dict,
    path: str,
    model: VideoCLIP,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rank: int,
    log: Log,
) -> RunState:
    """Exact resume: model, optimiser, scheduler, scaler and RNG states; training goes on after the
    checkpoint's epoch."""
    meta = restore_training_state(
        ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rank=rank, path=path
    )
    log(f"resumed from {path}: epoch {meta['epoch']} done, best {meta['best_top1']:.3f}")
    return RunState(meta["epoch"] + 1, meta["iteration"], meta["best_top1"], int(ckpt.get("nonfinite_skipped", 0)))


def build_validation(cfg: Config, dist: DistInfo, log: Log, allow_pipe: frozenset[str] = frozenset()) -> Validation:
    val_ds = build_dataset(cfg, "val", allow_pipe=allow_pipe)
    log(f"val: {len(val_ds)} videos; transforms: {getattr(val_ds, 'transform', '')}")
    loader = config_loader(val_ds, cfg, train=False, rank=dist.rank, world_size=dist.world_size)
    return Validation(
        loader,
        cfg.data.num_segments,
        dist.device,
        cfg.network.eval_logit_scale,
        cfg.data.metric == "mAP",
        cfg.logging.print_freq,
        log if dist.rank == 0 else (lambda _m: None),
        clips_to_device(val_ds, dist.device),
    )


def data_wait_meter(cfg: Config, dataset: Any) -> DataWaitMeter:
    """The data-bound alarm of `logging.data_wait_alarm`, with the remedy for this pipeline."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return DataWaitMeter(cfg.logging.data_wait_alarm, remedy=data_remedy(dataset, cfg.data.workers, per_node))


def build_train_loader(
    cfg: Config, dist: DistInfo, out: Path, log: Log, allow_pipe: frozenset[str] = frozenset()
) -> tuple[Any, Any]:
    """(loader, dataset) of the training list (`allow_pipe`: the command line's --allow-pipe URLs)."""
    train_ds = build_dataset(cfg, "train", allow_pipe=allow_pipe)
    loader = config_loader(  # the contrastive baseline drops a short last batch, as train_nce.py
        train_ds, cfg, train=True, rank=dist.rank, world_size=dist.world_size, drop_last=cfg.network.text_tower
    )
    log(
        f"train: {len(train_ds)} videos, {len(loader)} iterations per epoch; "
        f"transforms: {getattr(train_ds, 'transform', '')}"
    )
    if cfg.data.shot and dist.rank == 0:
        path = write_fewshot_list(train_ds, out)
        if path:
            log(f"few-shot selection written to {path}")
    return loader, train_ds


if __name__ == "__main__":
    run_cli(main)
