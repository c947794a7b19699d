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
    class_names  names of the rows of `model.class_embeddings` (so a checkpoint is self-contained)
    version      format version (1)

`export_state` is the same format without the training state (no optimizer, scheduler, scaler,
RNG): the self-contained file of `python -m app.export --format pt` and `python -m modules.convert
--config`, which every evaluation tool loads with no other file (`resume` refuses it).

`save_checkpoint` writes through `utils.fileio.atomic_write`: a reader sees either the previous
file or the new one, never a partial one.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from utils.errors import UserError
from utils.fileio import atomic_write

FORMAT_VERSION = 1
LAST = "last_model.pt"
BEST = "model_best.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(state: Any, path: str | Path) -> Path:
    """The one writer of `.pt` files (checkpoints, class-embedding caches, tool outputs), atomic."""
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """The one reader of `.pt` files: `torch.load(weights_only=True)`, so a file can never run code.

    A missing, unreadable or foreign file (a YAML config, a text list, a pickle of Python objects)
    is a UserError naming the file and what it looks like; `what` names the role in the message.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} is not readable (permissions): {path}")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip archive (a pickle before torch 1.6)
        raise UserError(f"{what} {path} is not a PyTorch checkpoint ({_sniff(path)})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{what} {path} holds Python objects besides tensors; it was not loaded, since "
            f"unpickling them can run arbitrary code (our checkpoints never need it)"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {what} {path} ({_sniff(path)}): {first}") from None


def _sniff(path: Path) -> str:
    """What a file that is not a checkpoint looks like, for the error message."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return "a zip archive, truncated or not written by torch.save"
    if head.startswith(b"\x80"):
        return "a Python pickle, truncated or of another format"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    return "it is a text file" + (", perhaps a YAML config" if ":" in text.split("\n", 1)[0] else "")


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (weights_only-safe)."""
    np_state = cast(tuple, np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------- training state
@dataclass(frozen=True)
class RunPosition:
    """Where a run stands when it is saved: the epoch just finished, the loader iterations done,
    and the best validation value so far."""

    epoch: int
    iteration: int
    best_top1: float


def training_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    at: RunPosition,
    rng: list[dict[str, Any]] | None,
    config: dict | None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Everything `resume` needs, as a weights_only-safe dict (see module docstring)."""
    return {
        "version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "epoch": int(at.epoch),
        "iteration": int(at.iteration),
        "best_top1": float(at.best_top1),
        "rng": rng or [],
        "config": config or {},
        "class_names": list(class_names or []),
    }


def export_state(
    *,
    model: nn.Module,
    config: dict,
    class_names: list[str],
    source: str,
    epoch: int | None = None,
    best_top1: float | None = None,
) -> dict[str, Any]:
    """Weights, resolved config, class names (rows of `class_embeddings`) and where they came from."""
    state: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "config": config,
        "class_names": list(class_names),
        "export": {"source": str(source), "kind": "pt"},
    }
    if epoch is not None:
        state["epoch"] = int(epoch)
    if best_top1 is not None:
        state["best_top1"] = float(best_top1)
    return state


def restore_training_state(
    ckpt: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    rank: int = 0,
    path: str | Path = "checkpoint",
) -> dict[str, Any]:
    """Load model/optimizer/scheduler/scaler/RNG from a checkpoint made by `training_state`.

    Returns {"epoch", "iteration", "best_top1"}. The RNG state of `rank` is restored when the
    checkpoint holds one for it (same world size); otherwise the caller's seeding stands.
    """
    if "model" not in ckpt or "optimizer" not in ckpt:
        raise UserError(
            f"{path}: not a training checkpoint of this project (keys: {sorted(ckpt)[:8]}); "
            f"use `pretrain:` to start from weights only"
        )
    missing, unexpected = unwrap(model).load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: model weights do not match the config: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    if optimizer is not None and ckpt["optimizer"]:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"]:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    return {"epoch": int(ckpt["epoch"]), "iteration": int(ckpt["iteration"]), "best_top1": float(ckpt["best_top1"])}


def find_resume(
    resume: str | None, output_dir: str | Path | None, search_root: str | Path | None = None
) -> Path | None:
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
