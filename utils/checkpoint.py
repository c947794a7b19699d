"""Checkpoints that a crash cannot truncate and that resume a run exactly.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts (loadable with
`torch.load(weights_only=True)`):

    model        state dict of VideoCLIP (no `module.` prefix; `visual.*`, `fusion_model.*`,
                 `logit_scale`, ...)
    optimizer    AdamW state dict           scheduler  LambdaLR state dict
    scaler       GradScaler state dict or {}
    epoch        last finished epoch        iteration  global loader iterations done
    best_top1    best validation top-1 so far (percent)
    rng          per-rank RNG states (torch CPU / CUDA, numpy, Python `random`) as tensors
    config       the resolved config as a plain dict
    version      format version (1)

`save_checkpoint` writes to a temporary file in the same folder, fsyncs it and renames it over
the target, so a reader sees either the previous file or the new one, never a partial one.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.errors import UserError

FORMAT_VERSION = 1
LAST = "last_model.pt"
BEST = "model_best.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write `state` to `path` (temporary file + fsync + os.replace + directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems do not support fsync on directories
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - report which file is broken
        raise UserError(f"cannot read checkpoint {path}: {err}") from None


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (weights_only-safe)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------- training state
def training_state(*, model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any,
                   scaler: Any, epoch: int, iteration: int, best_top1: float,
                   rng: list[dict[str, Any]] | None, config: dict | None) -> dict[str, Any]:
    """Everything `resume` needs, as a weights_only-safe dict (see module docstring)."""
    return {
        "version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_top1": float(best_top1),
        "rng": rng or [],
        "config": config or {},
    }


def restore_training_state(ckpt: dict[str, Any], *, model: nn.Module,
                           optimizer: torch.optim.Optimizer | None, scheduler: Any, scaler: Any,
                           rank: int = 0, path: str | Path = "checkpoint") -> dict[str, Any]:
    """Load model/optimizer/scheduler/scaler/RNG from a checkpoint made by `training_state`.

    Returns {"epoch", "iteration", "best_top1"}. The RNG state of `rank` is restored when the
    checkpoint holds one for it (same world size); otherwise the caller's seeding stands.
    """
    if "model" not in ckpt or "optimizer" not in ckpt:
        raise UserError(f"{path}: not a training checkpoint of this project (keys: {sorted(ckpt)[:8]}); "
                        f"use `pretrain:` to start from weights only")
    missing, unexpected = unwrap(model).load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: model weights do not match the config: missing {missing[:10]}, "
                        f"unexpected {unexpected[:10]}")
    if optimizer is not None and ckpt["optimizer"]:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"]:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    return {"epoch": int(ckpt["epoch"]), "iteration": int(ckpt["iteration"]),
            "best_top1": float(ckpt["best_top1"])}


def find_resume(resume: str | None, output_dir: str | Path | None,
                search_root: str | Path | None = None) -> Path | None:
    """Resolve `resume`: a path, or `auto` = `last_model.pt` in `output_dir` if present, else the
    newest `*/last_model.pt` under `search_root`. None when nothing is to be resumed."""
    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        if path.is_dir():
            path = path / LAST
        if not path.is_file():
            raise UserError(f"resume: checkpoint not found: {resume}")
        return path
    if output_dir is not None and (Path(output_dir) / LAST).is_file():
        return Path(output_dir) / LAST
    if search_root is not None and Path(search_root).is_dir():
        found = sorted(Path(search_root).glob(f"**/{LAST}"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left by a process killed inside `save_checkpoint`; returns how many."""
    count = 0
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
            count += 1
        except OSError:
            pass
    return count
