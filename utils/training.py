"""The training engine: one epoch of an objective (cross-entropy on the model's logits by default,
or a contrastive loss from `utils.contrastive`), with gradient accumulation, DDP `no_sync`,
gradient clipping, mixed precision, the per-iteration LR schedule, and the guard against
non-finite steps (`NonFiniteError`, or a skipped step within `skip_nonfinite`).

Like the evaluation engine it takes plain objects (model, loader, optimiser, scheduler, scaler,
a normalise function) and imports nothing above `utils/`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from utils.contrastive import Objective, cross_entropy
from utils.data_wait import DataWaitMeter
from utils.distributed import all_reduce_sum
from utils.errors import UserError
from utils.precision import autocast

Normalize = Callable[[torch.Tensor], torch.Tensor]
Prepare = Callable[[Any], torch.Tensor]

# With fp16 `amp` the GradScaler halves its scale at each overflow; below this (from 65536, 30
# overflows in a row) the gradients are non-finite at any scale, which scaling cannot fix.
MIN_LOSS_SCALE = 2.0**-14


class NonFiniteError(UserError):
    """A non-finite loss or gradient stopped training (one line: where, the value, the likely cause)."""


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    lrs: list[float] = field(default_factory=list)
    first_step_s: float = 0.0  # data wait included; with solver.compile, mostly compilation in the first epoch
    step_s: float | None = None  # mean time of the iterations after the first (None: only one)
    nonfinite_skipped: int = 0  # optimiser steps skipped for a non-finite loss or gradient

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.samples, 1)


class AverageMeter:
    """Last value and running mean, weighted by the number of samples."""

    def __init__(self) -> None:
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)


@dataclass(frozen=True)
class StepRecipe:
    """How one batch becomes (part of) an optimiser step: where it runs, how the uint8 clips become
    model input, the objective, and the accumulation, clipping and precision of the step.

    `world_size` > 1 makes the ranks agree on a non-finite loss and scales the clips/s figure."""

    device: torch.device
    num_frames: int
    normalize: Normalize
    precision: str = "fp32"
    accumulation: int = 1
    clip_grad_norm: float | None = None
    objective: Objective = cross_entropy
    prepare: Prepare | None = None
    world_size: int = 1


@dataclass(frozen=True)
class EpochLoop:
    """Where this epoch stands in the run: its index of `epochs`, the non-finite steps the run may
    skip and has skipped before it, and the previous epoch's step time (for the first ETA)."""

    epoch: int = 0
    epochs: int = 1
    skip_nonfinite: int = 0
    skipped_before: int = 0
    prior_step_s: float | None = None


@dataclass(frozen=True)
class EpochReport:
    """What the epoch tells as it goes: the log line every `print_freq` iterations, a tqdm bar
    (`progress`), a per-iteration callback, the data-wait meter, and the clock that times it all."""

    print_freq: int = 10
    log: Callable[[str], None] | None = None
    progress: bool = False
    on_iteration: Callable[[int, float, list[float]], None] | None = None
    meter: DataWaitMeter | None = None
    clock: Callable[[], float] = time.perf_counter


class Progress:
    """The original's log line every `print_freq` iterations, and a tqdm bar on a terminal (rank 0).

    Log lines go through `tqdm.write`-safe logging while the bar is shown, so they never run into it.
    """

    def __init__(self, total: int, loop: EpochLoop, report: EpochReport, world_size: int) -> None:
        self.total, self.epoch, self.epochs = total, loop.epoch, loop.epochs
        self.world_size, self.print_freq, self.log, self.meter = world_size, report.print_freq, report.log, report.meter
        self.batch_time, self.data_time, self.losses = AverageMeter(), AverageMeter(), AverageMeter()
        self.steady = AverageMeter()  # iterations after the first: the first also starts the loader
        self.prior_step_s = loop.prior_step_s
        self.bar = (
            tqdm(
                total=total,
                desc=f"epoch {loop.epoch + 1}/{loop.epochs}",
                dynamic_ncols=True,
                mininterval=1.0,
                leave=False,
                file=sys.stderr,
                disable=None,
            )
            if report.progress
            else None
        )  # None: off when not a tty

    def eta(self, i: int) -> str:
        """Time left for the training iterations of the remaining epochs after iteration i, at the
        steady rate: the mean of this epoch's iterations after its first (whose time includes
        starting the loader's workers), or before that the rate of the previous epoch."""
        step_s = self.steady.avg if self.steady.count else self.prior_step_s
        if step_s is None:
            return "measuring"
        return _hms(step_s * ((self.epochs - self.epoch) * self.total - i - 1))

    def update(self, i: int, loss: float, batch: int, lr: float) -> None:
        if math.isfinite(loss):
            self.losses.update(loss, batch)
        if i > 0:
            self.steady.update(self.batch_time.val)
        if self.meter is not None:
            self.meter.update(self.data_time.val, self.batch_time.val)
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{self.losses.avg:.4f}",
                lr=f"{lr:.2e}",
                clips_s=f"{batch * self.world_size / max(self.batch_time.avg, 1e-9):.1f}",
                refresh=False,
            )
            self.bar.update(1)
        if self.log is not None and self.print_freq and i % self.print_freq == 0:
            line = (
                f"Epoch: [{self.epoch}][{i}/{self.total}], lr: {lr:.2e}, eta: {self.eta(i)}\t"
                f"Time {self.batch_time.val:.3f} ({self.batch_time.avg:.3f})\t"
                f"Data {self.data_time.val:.3f} ({self.data_time.avg:.3f})\t"
                f"Loss {loss:.4f} ({self.losses.avg:.4f})"
            )
            alarm = None
            if self.meter is not None:
                line += f"\t{self.meter.line()}"
                alarm = self.meter.alarm()
            if self.bar is not None and not self.bar.disable:
                self.bar.clear()
            self.log(line)
            if alarm:
                self.log(alarm)
            if self.bar is not None and not self.bar.disable:
                self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    recipe: StepRecipe,
    loop: EpochLoop = EpochLoop(),
    report: EpochReport = EpochReport(),
) -> EpochStats:
    """One pass over `loader` (items `(uint8 clips, labels, ...)`), minimising `recipe.objective(model, x, y)`.

    Gradients of `recipe.accumulation` consecutive batches are summed before an optimiser step (DDP
    `no_sync` on all but the last); the last window of the epoch may be shorter and is stepped
    too, so nothing carries into the next epoch. Each batch's loss is divided by its window's
    length, so accumulating k batches of b equals one batch of k·b. The scheduler is stepped
    after every batch (the LR is a function of the loader iteration, as the original).
    `recipe.normalize` turns the uint8 frames (on `recipe.device`, shaped (B, T, 3, S, S)) into model
    input; `recipe.prepare(clips)` moves a batch to the device first (and applies a deferred
    transform there: `datasets.device_transforms.ClipsToDevice`). `report.meter` measures the data
    wait per iteration and adds it to the log line, with a warning when the loader is the
    bottleneck (`utils.data_wait`).

    A non-finite loss (on any rank) or gradient stops the epoch with `NonFiniteError` before the
    optimiser steps, unless fewer than `loop.skip_nonfinite` steps of the run (`loop.skipped_before`
    of them in earlier epochs) were skipped: then the step is skipped (gradients dropped, logged,
    counted in `EpochStats.nonfinite_skipped`). With an enabled GradScaler (fp16) an overflowing
    gradient is the scaler's to skip and is not counted; a scale that collapses below
    `MIN_LOSS_SCALE` stops. `loop.prior_step_s` (the previous epoch's `step_s`) gives the first log
    line's ETA; `report.clock` times it.
    """
    model.train()
    n = len(loader)  # type: ignore[arg-type]
    stats = EpochStats()
    bar = Progress(n, loop, report, recipe.world_size)
    clock = report.clock
    optimizer.zero_grad(set_to_none=True)
    bad_loss: float | None = None  # a non-finite loss of this rank in the current accumulation window
    end = start = clock()
    for i, batch in enumerate(loader):
        bar.data_time.update(clock() - end)
        window_start = (i // recipe.accumulation) * recipe.accumulation
        window = min(recipe.accumulation, n - window_start)
        x, y = _to_model_input(batch, recipe)
        last_of_window = (i - window_start) == window - 1
        loss = _backward(model, recipe, x, y, scaler, window, sync=last_of_window)
        if not math.isfinite(loss) and bad_loss is None:
            bad_loss = loss
        if last_of_window:
            stepped = _step_or_skip(
                model, optimizer, scaler, recipe, bad_loss, f"epoch {loop.epoch}, iteration {i} of {n}"
            )
            bad_loss = None
            if stepped is None:
                stats.steps += 1
            else:
                _count_skip(stats, loop, report, stepped, model, optimizer, recipe)
        stats.lrs = [g["lr"] for g in optimizer.param_groups]
        with warnings.catch_warnings():  # an accumulation window may begin before optimizer.step()
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        if math.isfinite(loss):  # train_loss and clips/s count the clips that trained
            stats.loss_sum += loss * int(y.shape[0])
            stats.samples += int(y.shape[0])
        bar.batch_time.update(clock() - end)
        if i == 0:
            stats.first_step_s = clock() - start
        end = clock()
        if report.on_iteration is not None:
            report.on_iteration(loop.epoch * n + i, loss, stats.lrs)
        bar.update(i, loss, int(y.shape[0]), stats.lrs[-1])
    bar.close()
    stats.seconds = clock() - start
    stats.step_s = bar.steady.avg if bar.steady.count else None
    return stats


def _to_model_input(batch: Any, recipe: StepRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's clips on the device, normalised and shaped (B, T, 3, S, S), and its labels (B,)."""
    x = recipe.prepare(batch[0]) if recipe.prepare is not None else batch[0].to(recipe.device, non_blocking=True)
    x = recipe.normalize(x.reshape(x.shape[0], recipe.num_frames, 3, *x.shape[-2:]))
    y = torch.as_tensor(batch[1]).to(recipe.device, non_blocking=True).long().reshape(-1)
    return x, y


def _step_or_skip(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    recipe: StepRecipe,
    bad_loss: float | None,
    where: str,
) -> tuple[str, str] | None:
    """The end of an accumulation window: step (None), or (where, the fault) of a dropped step; a
    collapsed fp16 loss scale stops at once."""
    try:
        fault = _optimizer_step(model, optimizer, scaler, recipe.clip_grad_norm, bad_loss, recipe.world_size > 1)
    except _ScaleCollapse as err:
        fault = f"fp16 loss scale {err.args[0]:.3g}: the gradients overflow at every scale"
        raise NonFiniteError(_stop_line(where, fault, model, recipe.precision, optimizer, None)) from None
    return None if fault is None else (where, fault)


def _count_skip(
    stats: EpochStats,
    loop: EpochLoop,
    report: EpochReport,
    dropped: tuple[str, str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    recipe: StepRecipe,
) -> None:
    """Count and log a dropped step within the run's `skip_nonfinite` budget, or stop past it."""
    where, fault = dropped
    if loop.skipped_before + stats.nonfinite_skipped >= loop.skip_nonfinite:
        raise NonFiniteError(_stop_line(where, fault, model, recipe.precision, optimizer, loop.skip_nonfinite))
    stats.nonfinite_skipped += 1
    if report.log is not None:
        report.log(
            f"non-finite step skipped at {where}: {fault} (skip {loop.skipped_before + stats.nonfinite_skipped}"
            f" of at most solver.skip_nonfinite={loop.skip_nonfinite})"
        )


def _backward(
    model: nn.Module,
    recipe: StepRecipe,
    x: torch.Tensor,
    y: torch.Tensor,
    scaler: torch.amp.GradScaler,
    window: int,
    sync: bool,
) -> float:
    """Forward, objective and the backward pass of one batch; DDP all-reduces only when `sync`."""
    context = model.no_sync() if isinstance(model, DDP) and not sync else nullcontext()
    with context:
        with autocast(recipe.precision, recipe.device):
            loss = recipe.objective(model, x, y)
        scaler.scale(loss / window).backward()
    return float(loss.detach())


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip_grad_norm: float | None,
    bad_loss: float | None,
    distributed: bool,
) -> str | None:
    """Step the optimiser, or drop the gradients and name the fault (None: stepped).

    The ranks agree on a non-finite loss (one all-reduce of a flag per step), so they all skip or
    all stop; gradients are the same on every rank after DDP's all-reduce, so their check agrees
    without one. With an enabled scaler an overflowing gradient is left to the scaler."""
    flag = torch.tensor([0.0 if bad_loss is None else 1.0])
    if distributed:
        flag = all_reduce_sum(flag)
    if float(flag[0]) > 0:
        optimizer.zero_grad(set_to_none=True)
        return f"loss {bad_loss}" if bad_loss is not None else "a non-finite loss on another rank"
    norm = None
    if clip_grad_norm:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    elif not scaler.is_enabled():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
    if norm is not None and not scaler.is_enabled() and not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        return f"gradient norm {float(norm)}"
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
        raise _ScaleCollapse(scaler.get_scale())
    return None


class _ScaleCollapse(Exception):
    """The fp16 loss scale fell below MIN_LOSS_SCALE: not a step to skip, a stop."""


def _stop_line(
    where: str, fault: str, model: nn.Module, precision: str, optimizer: torch.optim.Optimizer, budget: int | None
) -> str:
    """The one line that stops training: where, the value, the likely cause, what to do."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        cause = "the weights are non-finite (an earlier step diverged, or the pretrain/resume checkpoint holds NaN/inf)"
    elif precision == "amp":
        cause = "fp16 overflow (try --precision bf16 or fp32) or a learning rate too high (lower solver.lr)"
    else:
        lr = max(g["lr"] for g in optimizer.param_groups)
        cause = f"a learning rate too high (the LR is {lr:.3g} here; lower solver.lr) or extreme input values"
    if budget is None:
        return f"non-finite training at {where}: {fault}; likely cause: {cause}; stopped"
    allowed = f"more than solver.skip_nonfinite={budget} such steps" if budget else "solver.skip_nonfinite is 0"
    return f"non-finite training at {where}: {fault}; likely cause: {cause}; stopped ({allowed})"


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
