"""Numeric precision of training and evaluation: one name -> an autocast context and a GradScaler.

    amp   fp16 autocast + dynamic loss scaling (GradScaler) on CUDA; the original's default
    fp16  same as amp (the original's `fp16` was fp32 in practice; we keep fp32 master weights)
    bf16  bf16 autocast, no scaler
    fp32  no autocast

On CPU the default is fp32, and amp/fp16 fall back to fp32 (this machine's CPU was measured
7-40x slower with low-precision autocast); bf16 on CPU is honoured when asked for explicitly.
Model weights and optimiser state always stay fp32.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import torch

from utils.choices import PRECISIONS
from utils.errors import UserError

_log = logging.getLogger("Text4Vis")


def resolve_precision(name: str | None, device: torch.device | str) -> str:
    """Effective precision on `device` (None -> amp on CUDA, fp32 elsewhere)."""
    dev = torch.device(device).type
    if name is None or name == "":
        return "amp" if dev == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name in ("amp", "fp16"):
        if dev != "cuda":
            _log.warning("precision %s needs CUDA; using fp32 on %s", name, dev)
            return "fp32"
        return "amp"
    return name


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """Autocast context for an already resolved precision."""
    dev = torch.device(device).type
    if precision == "amp":
        return torch.autocast(dev, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(dev, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 autocast on CUDA."""
    dev = torch.device(device).type
    return torch.amp.GradScaler(dev if dev == "cuda" else "cpu", enabled=(precision == "amp" and dev == "cuda"))
