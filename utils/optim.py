"""The original's optimiser (AdamW, two LR groups) and schedule (warm-up + cosine or multistep,
evaluated at the fractional epoch and held for `step_every` iterations), built on
`torch.optim.AdamW` and `torch.optim.lr_scheduler.LambdaLR`.

Groups and schedule are described in docs/training.md#what-a-step-does-as-the-original.

Groups: parameters whose name contains `visual` (except full-LR ones such as the TokenT1D
`control_point` convs) plus `logit_scale` train at `lr × clip_ratio`, and so does a trained text
tower (`text.*`, the contrastive baseline: its group 1 is every CLIP parameter,
docs/training.md#contrastive-baseline-train_ncepy); everything else (fusion head, a trainable
classifier) at `lr`. With `no_decay_norm_bias` each group is split into a decayed part and a part
without weight decay (biases, norms, embeddings, logit_scale).

Schedule: the scheduler is stepped once per loader iteration (gradient accumulation does not
change the count). The LR used at iteration i of epoch k is the formula at
e = k + j/len, where j is the latest iteration <= i with j == 0 or (j + 1) % step_every == 0, so
the original's first `step_every - 1` iterations of epoch 0 run at LR 0 and the rate changes
every `step_every` iterations. `step_every=1` evaluates the formula at every iteration.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from utils.errors import UserError


def _is_slow(name: str, full_lr_names: Collection[str] = ()) -> bool:
    if name in full_lr_names:
        return False
    return "visual" in name or name.startswith("text.") or name.split(".")[-1] == "logit_scale"


def _no_decay(name: str, param: nn.Parameter) -> bool:
    leaf = name.split(".")[-1]
    lowered = name.lower()
    return (
        param.ndim <= 1
        or leaf == "logit_scale"
        or "embedding" in lowered
        or leaf in ("class_embedding", "positional_embedding", "temporal_embedding")
    )


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    clip_ratio: float,
    weight_decay: float,
    no_decay_norm_bias: bool = False,
    full_lr_names: Collection[str] = (),
) -> list[dict]:
    """AdamW parameter groups as the original (see module docstring); each group has a `name`.

    `full_lr_names`: exact parameter names kept at the full LR although inside `visual`
    (e.g. `clip.full_lr_param_names(model)`: the TokenT1D convolutions)."""
    full_lr_names = {n.removeprefix("module.") for n in full_lr_names}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = name.removeprefix("module.")
        slow = _is_slow(name, full_lr_names)
        decay = not (no_decay_norm_bias and _no_decay(name, param))
        buckets.setdefault(("visual" if slow else "head", decay), []).append(param)
    groups = []
    for kind in ("visual", "head"):  # group 0 = visual at lr*clip_ratio, as the original
        for decay in (True, False):
            params = buckets.get((kind, decay))
            if not params:
                continue
            groups.append(
                {
                    "name": kind if decay else f"{kind}_no_decay",
                    "params": params,
                    "lr": lr * clip_ratio if kind == "visual" else lr,
                    "weight_decay": weight_decay if decay else 0.0,
                }
            )
    if not groups:
        raise UserError("no trainable parameters: check network.fix_video / fix_text")
    return groups


@dataclass(frozen=True)
class AdamMoments:
    """AdamW's moment estimates: the decay rates of the first and second moments (`betas`) and the
    epsilon added to the denominator (solver.betas, solver.eps)."""

    betas: Sequence[float] = (0.9, 0.999)
    eps: float = 1e-8


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    clip_ratio: float,
    weight_decay: float,
    moments: AdamMoments = AdamMoments(),
    no_decay_norm_bias: bool = False,
    full_lr_names: Collection[str] = (),
    device: torch.device | str = "cpu",
) -> torch.optim.AdamW:
    """AdamW over `param_groups(...)`; fused kernels on CUDA, foreach elsewhere."""
    groups = param_groups(
        model,
        lr=lr,
        clip_ratio=clip_ratio,
        weight_decay=weight_decay,
        no_decay_norm_bias=no_decay_norm_bias,
        full_lr_names=full_lr_names,
    )
    kwargs = {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}
    beta1, beta2 = (float(b) for b in moments.betas)
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=moments.eps, weight_decay=weight_decay, **kwargs)


def warmup_factor(e: float, warmup: float) -> float | None:
    """Linear warm-up factor e / warmup while e < warmup, else None."""
    if warmup > 0 and e < warmup:
        return e / warmup
    return None


def cosine_factor(e: float, epochs: float, warmup: float) -> float:
    """LR factor at fractional epoch e: linear warm-up from 0, then half-cosine to 0 at `epochs`."""
    w = warmup_factor(e, warmup)
    if w is not None:
        return w
    span = epochs - warmup
    if span <= 0:
        return 1.0
    progress = min(max((e - warmup) / span, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def multistep_milestones(decay_step: int | Sequence[int], epochs: int) -> list[float]:
    """The original's milestones: a list as given, or every `decay_step` epochs."""
    if not isinstance(decay_step, int):
        return sorted(float(m) for m in decay_step)
    if decay_step <= 0:
        raise UserError(f"solver.lr_decay_step must be positive, got {decay_step}")
    return [float(decay_step * (i + 1)) for i in range(epochs // decay_step)]


def multistep_factor(e: float, milestones: Sequence[float], gamma: float, warmup: float) -> float:
    """Linear warm-up, then `gamma` ** (number of milestones <= e)."""
    w = warmup_factor(e, warmup)
    if w is not None:
        return w
    return gamma ** bisect.bisect_right(list(milestones), e)


def held_epoch(step: int, iters_per_epoch: int, step_every: int) -> float:
    """Fractional epoch at which the LR of global iteration `step` is evaluated (the staircase)."""
    epoch, i = divmod(step, iters_per_epoch)
    j = 0 if i < step_every - 1 else ((i + 1) // step_every) * step_every - 1
    return epoch + j / iters_per_epoch


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    kind: str,
    epochs: int,
    warmup_epochs: float,
    iters_per_epoch: int,
    step_every: int = 10,
    decay_step: int | Sequence[int] = 15,
    decay_factor: float = 0.1,
) -> LambdaLR:
    """LambdaLR over global iterations; call `scheduler.step()` after every loader iteration.

    After construction the optimiser holds the LR of iteration 0; after n calls to `step()` it
    holds the LR of iteration n.
    """
    if iters_per_epoch < 1:
        raise UserError("the training set is empty (0 iterations per epoch)")
    if step_every < 1:
        raise UserError(f"solver.lr_step_every must be >= 1, got {step_every}")
    if kind == "cosine":

        def fn(step: int) -> float:
            return cosine_factor(held_epoch(step, iters_per_epoch, step_every), epochs, warmup_epochs)
    elif kind == "multistep":
        milestones = multistep_milestones(decay_step, epochs)

        def fn(step: int) -> float:
            e = held_epoch(step, iters_per_epoch, step_every)
            return multistep_factor(e, milestones, decay_factor, warmup_epochs)
    else:
        raise UserError(f"solver.type '{kind}' is not supported (cosine or multistep)")
    return LambdaLR(optimizer, lr_lambda=fn)
