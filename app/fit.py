"""The epoch loop of train.py: train one epoch, log its metrics row, validate through the shared
evaluation engine, and save `model_best.pt` then `last_model.pt` (an order that makes a kill at any
instant safe). Set-up (run folder, model, data, optimiser, resume) stays in train.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from datasets.device_transforms import ClipsToDevice
from datasets.transforms import normalize
from modules.video_model import VideoCLIP
from utils.analysis import class_analysis
from utils.checkpoint import BEST, LAST, RunPosition, rng_state, save_checkpoint, training_state
from utils.config import to_dict
from utils.contrastive import Objective
from utils.data_wait import DataWaitMeter
from utils.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier
from utils.evaluate import EvalOutput, ViewSet, evaluate
from utils.fileio import write_csv
from utils.logger import MetricsLog
from utils.training import EpochLoop, EpochReport, EpochStats, NonFiniteError, StepRecipe, train_one_epoch

Log = Callable[[str], None]


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
    last: EvalOutput | None = field(default=None, init=False)  # the latest validation's per-video results

    @property
    def metric(self) -> str:
        return "mAP" if self.with_map else "top1"

    def __call__(self, model: VideoCLIP) -> dict:
        model.refresh_class_embeddings()  # a trained text tower: its current class embeddings
        report, self.last = evaluate(
            model,
            self.loader,
            ViewSet(1, self.num_frames, self.device, normalize, precision="fp32", prepare=self.prepare),
            scale=self.scale,
            with_map=self.with_map,
            log=self.log,
            print_freq=self.print_freq,
        )
        self.log(
            f"Testing Results: Prec@1 {report['top1']:.3f} Prec@5 {report['top5']:.3f}"
            + (f" mAP {report['mAP']:.3f}" if self.with_map else "")
        )
        return report


@dataclass
class RunState:
    """Where training stands: the next epoch, loader iterations done, best validation value, and
    the optimiser steps skipped so far for a non-finite loss or gradient (`solver.skip_nonfinite`)."""

    epoch: int
    iteration: int
    best: float
    skipped: int = 0


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
        report_to = self.epoch_report(metrics, validate.log)
        best, iteration, skipped = start.best, start.iteration, start.skipped
        report: dict = {}  # the latest validation's
        saved = start.epoch - 1 if (self.out / LAST).is_file() else None  # the epoch last_model.pt holds
        step_s = None
        for epoch in range(start.epoch, end_epoch):
            loader.sampler.set_epoch(epoch)  # also sets the dataset's epoch (augmentation draws)
            loop = EpochLoop(epoch, cfg.solver.epochs, cfg.solver.skip_nonfinite, skipped, step_s)
            try:
                stats = train_one_epoch(
                    ddp_model, loader, self.optimizer, self.scheduler, self.scaler, self.step_recipe(), loop, report_to
                )
            except NonFiniteError as err:
                metrics.close()
                kept = f"{self.out / LAST} (epoch {saved})" if saved is not None else "no checkpoint yet"
                raise NonFiniteError(f"{err}; kept: {kept} and every finished epoch's metrics.csv row") from None
            step_s = stats.step_s or step_s
            skipped += stats.nonfinite_skipped
            iteration += len(loader)
            if cfg.solver.compile and epoch == start.epoch:
                self.log_compile_time(stats, len(loader))
            row = epoch_row(epoch, iteration, stats.loss_sum, stats.samples, stats.seconds, stats.lrs, self.log)
            row.update(self.meter.row(), nonfinite_skipped=stats.nonfinite_skipped)
            self.meter.reset()
            validate_now = (epoch + 1) % cfg.logging.eval_freq == 0 or epoch == cfg.solver.epochs - 1
            is_best = False
            if validate_now:
                report, is_best, best = self.validate_epoch(epoch, validate, best, row)
            metrics.epoch(row)  # before the checkpoints: a kill in between re-runs this epoch, rewriting the row
            if validate_now or epoch == end_epoch - 1:  # stopping early: keep what was trained
                self.save(epoch, iteration, best, is_best, skipped)
                saved = epoch
        metrics.close()
        self.log(f"done: best {validate.metric} {best:.3f}; run folder {self.out}")
        return {"output": str(self.out), "best": best, **report}

    def step_recipe(self) -> StepRecipe:
        """How each batch of this run becomes an optimiser step (the solver's settings)."""
        cfg, dist = self.cfg, self.dist
        return StepRecipe(
            device=dist.device,
            num_frames=cfg.data.num_segments,
            normalize=normalize,
            precision=self.precision,
            accumulation=cfg.solver.grad_accumulation_steps,
            clip_grad_norm=cfg.solver.clip_grad_norm,
            objective=self.objective,
            prepare=self.prepare,
            world_size=dist.world_size,
        )

    def epoch_report(self, metrics: MetricsLog, log: Log) -> EpochReport:
        """The epoch's log lines, bar (rank 0), data-wait meter, and per-iteration TensorBoard scalars."""
        on_iteration = None
        if metrics.tb is not None:

            def on_iteration(step: int, loss: float, lrs: list[float]) -> None:
                metrics.scalars(step, {"train/loss": loss, "train/lr": lrs[-1]})

        return EpochReport(
            print_freq=self.cfg.logging.print_freq,
            log=log,
            progress=self.dist.rank == 0,
            on_iteration=on_iteration,
            meter=self.meter,
        )

    def log_compile_time(self, stats: EpochStats, steps: int) -> None:
        """solver.compile: the first step's time (compilation included) next to the steady step time."""
        rest = (stats.seconds - stats.first_step_s) / max(steps - 1, 1)
        self.log(
            f"solver.compile: first step {stats.first_step_s:.1f} s (compilation included), then {rest:.2f} s per step"
        )

    def validate_epoch(
        self, epoch: int, validate: Validation, best: float, row: dict[str, Any]
    ) -> tuple[dict, bool, float]:
        """Validate, log and record it in the epoch's row (and val_per_class.csv): (report, is_best, best)."""
        report = validate(self.model)
        value = report[validate.metric]
        is_best, best = value > best, max(best, value)
        self.log(f"Testing: {value:.3f}/{best:.3f}")
        if validate.last is not None and self.dist.rank == 0:
            self.write_per_class(epoch, validate.last, is_best)
        row.update(val_top1=f"{report['top1']:.3f}", val_top5=f"{report['top5']:.3f}", best_top1=f"{best:.3f}")
        return report, is_best, best

    def write_per_class(self, epoch: int, last: EvalOutput, is_best: bool) -> None:
        """Per-class top-1 / top-5 of this validation in `val_per_class.csv` (and of the best one in
        `best_val_per_class.csv`), written before the epoch's metrics row, and the worst classes logged."""
        summary = class_analysis(last.extra["scores"], last.labels, self.class_names, k=5, worst=3)
        k = min(5, len(self.class_names))
        rows = [
            {"epoch": epoch, **{key: ("" if v is None else v) for key, v in c.items()}} for c in summary["per_class"]
        ]
        fields = ["epoch", "index", "name", "support", "top1_correct", "top1", f"top{k}"]
        write_csv(self.out / "val_per_class.csv", rows, fields)
        if is_best:
            write_csv(self.out / "best_val_per_class.csv", rows, fields)
        worst = ", ".join(f"{c['name']} {c['top1']:.1f}" for c in summary["worst_classes"])
        self.log(f"per class: mean {summary['mean_class_accuracy']:.3f}; worst {worst} (val_per_class.csv)")

    def save(self, epoch: int, iteration: int, best: float, is_best: bool, skipped: int = 0) -> None:
        """model_best.pt first, then last_model.pt (rank 0; the others wait). A kill during either
        write leaves last_model.pt at the previous save, so resume re-runs this epoch and writes both
        again: model_best.pt never misses the best epoch."""
        rngs = all_gather_object(rng_state())
        self.model.refresh_class_embeddings()  # saved with the text tower they come from
        if self.dist.rank == 0:
            state = training_state(
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                at=RunPosition(epoch=epoch, iteration=iteration, best_top1=best),
                rng=rngs,
                config=to_dict(self.cfg),
                class_names=self.class_names,
            )
            state["nonfinite_skipped"] = int(skipped)  # solver.skip_nonfinite counts over the whole run
            if is_best:
                self.log(f"Saving: {save_checkpoint(state, self.out / BEST)} (best)")
            self.log(f"Saving: {save_checkpoint(state, self.out / LAST)}")
        barrier()


def epoch_row(
    epoch: int, iteration: int, loss_sum: float, samples: int, seconds: float, lrs: list[float], log: Log
) -> dict[str, Any]:
    """The epoch's metrics.csv row from this rank's sums (loss averaged over every rank's samples)."""
    totals = all_reduce_sum(torch.tensor([loss_sum, samples], dtype=torch.float64))
    train_loss = float(totals[0]) / max(float(totals[1]), 1.0)
    clips_s = float(totals[1]) / max(seconds, 1e-9)
    log(f"Epoch {epoch} done: loss {train_loss:.4f}, {clips_s:.1f} clips/s, {seconds:.1f} s")
    return {
        "epoch": epoch,
        "iteration": iteration,
        "train_loss": f"{train_loss:.6f}",
        "lr": f"{lrs[-1]:.6e}",
        "lr_visual": f"{lrs[0]:.6e}",
        "clips_per_s": f"{clips_s:.3f}",
        "epoch_time_s": f"{seconds:.2f}",
    }
