"""The training engine: one epoch of an objective (cross-entropy on the model's logits by default,
or a contrastive loss from `utils.contrastive`), with gradient accumulation, DDP `no_sync`,
gradient clipping, mixed precision and the per-iteration LR schedule.

Like the evaluation engine it takes plain objects (model, loader, optimiser, scheduler, scaler,
a normalise function) and imports nothing above `utils/`.
"""

from __future__ import annotations

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
from utils.precision import autocast

Normalize = Callable[[torch.Tensor], torch.Tensor]
Prepare = Callable[[Any], torch.Tensor]


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    lrs: list[float] = field(default_factory=list)
    first_step_s: float = 0.0  # data wait included; with solver.compile, mostly compilation in the first epoch

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


class Progress:
    """The original's log line every `print_freq` iterations, and a tqdm bar on a terminal (rank 0).

    Log lines go through `tqdm.write`-safe logging while the bar is shown, so they never run into it.
    """

    def __init__(
        self,
        total: int,
        *,
        epoch: int,
        epochs: int,
        world_size: int,
        print_freq: int,
        log: Callable[[str], None] | None,
        bar: bool,
        meter: DataWaitMeter | None = None,
    ) -> None:
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.world_size, self.print_freq, self.log, self.meter = world_size, print_freq, log, meter
        self.batch_time, self.data_time, self.losses = AverageMeter(), AverageMeter(), AverageMeter()
        self.bar = (
            tqdm(
                total=total,
                desc=f"epoch {epoch + 1}/{epochs}",
                dynamic_ncols=True,
                mininterval=1.0,
                leave=False,
                file=sys.stderr,
                disable=None,
            )
            if bar
            else None
        )  # None: off when not a tty

    def update(self, i: int, loss: float, batch: int, lr: float) -> None:
        self.losses.update(loss, batch)
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
            eta = self.batch_time.avg * ((self.epochs - self.epoch) * self.total - i - 1)
            line = (
                f"Epoch: [{self.epoch}][{i}/{self.total}], lr: {lr:.2e}, eta: {_hms(eta)}\t"
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
    *,
    epoch: int,
    device: torch.device,
    num_frames: int,
    normalize: Normalize,
    precision: str = "fp32",
    accumulation: int = 1,
    clip_grad_norm: float | None = None,
    world_size: int = 1,
    print_freq: int = 10,
    epochs: int = 1,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    on_iteration: Callable[[int, float, list[float]], None] | None = None,
    objective: Objective = cross_entropy,
    prepare: Prepare | None = None,
    meter: DataWaitMeter | None = None,
) -> EpochStats:
    """One pass over `loader` (items `(uint8 clips, labels, ...)`), minimising `objective(model, x, y)`.

    Gradients of `accumulation` consecutive batches are summed before an optimiser step (DDP
    `no_sync` on all but the last); the last window of the epoch may be shorter and is stepped
    too, so nothing carries into the next epoch. Each batch's loss is divided by its window's
    length, so accumulating k batches of b equals one batch of k·b. The scheduler is stepped
    after every batch (the LR is a function of the loader iteration, as the original).
    `normalize` turns the uint8 frames (on `device`, shaped (B, T, 3, S, S)) into model input;
    `prepare(clips)` moves a batch to the device first (and applies a deferred transform there:
    `datasets.device_transforms.ClipsToDevice`). `meter` measures the data wait per iteration and
    adds it to the log line, with a warning when the loader is the bottleneck (`utils.data_wait`).
    """
    model.train()
    n = len(loader)  # type: ignore[arg-type]
    stats = EpochStats()
    bar = Progress(
        n, epoch=epoch, epochs=epochs, world_size=world_size, print_freq=print_freq, log=log, bar=progress, meter=meter
    )
    optimizer.zero_grad(set_to_none=True)
    end = start = time.perf_counter()
    for i, batch in enumerate(loader):
        bar.data_time.update(time.perf_counter() - end)
        window_start = (i // accumulation) * accumulation
        window = min(accumulation, n - window_start)
        x = prepare(batch[0]) if prepare is not None else batch[0].to(device, non_blocking=True)
        x = normalize(x.reshape(x.shape[0], num_frames, 3, *x.shape[-2:]))
        y = torch.as_tensor(batch[1]).to(device, non_blocking=True).long().reshape(-1)
        loss = _backward(
            model, objective, x, y, scaler, precision, device, window, sync=(i - window_start) == window - 1
        )
        if (i - window_start) == window - 1:
            _optimizer_step(model, optimizer, scaler, clip_grad_norm)
            stats.steps += 1
        stats.lrs = [g["lr"] for g in optimizer.param_groups]
        with warnings.catch_warnings():  # an accumulation window may begin before optimizer.step()
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()
        stats.loss_sum += loss * int(y.shape[0])
        stats.samples += int(y.shape[0])
        bar.batch_time.update(time.perf_counter() - end)
        if i == 0:
            stats.first_step_s = time.perf_counter() - start
        end = time.perf_counter()
        if on_iteration is not None:
            on_iteration(epoch * n + i, loss, stats.lrs)
        bar.update(i, loss, int(y.shape[0]), stats.lrs[-1])
    bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _backward(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    scaler: torch.amp.GradScaler,
    precision: str,
    device: torch.device,
    window: int,
    sync: bool,
) -> float:
    """Forward, objective and the backward pass of one batch; DDP all-reduces only when `sync`."""
    context = model.no_sync() if isinstance(model, DDP) and not sync else nullcontext()
    with context:
        with autocast(precision, device):
            loss = objective(model, x, y)
        scaler.scale(loss / window).backward()
    return float(loss.detach())


def _optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip_grad_norm: float | None
) -> None:
    if clip_grad_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
