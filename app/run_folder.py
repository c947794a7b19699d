"""The run folder of a training run: where it goes, what resumes, and the config it records.

`exp/<dataset>/<arch>/<timestamp>` unless `--output` is given (`exp_fewshot/...` with
`data.shot`); `resume: auto` continues the newest run of that dataset and arch. A resumed run
continues the recorded one: changed settings outside `utils.config_schema.RESUME_MAY_CHANGE` are refused.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from utils.checkpoint import find_resume
from utils.config import Config, dump, resume_differences, to_dict
from utils.config_schema import RESUME_MAY_CHANGE
from utils.distributed import DistInfo, broadcast_object
from utils.errors import UserError
from utils.fileio import atomic_write_text, make_folder, remove_temporaries


def arch_folder(arch: str) -> str:
    """`ViT-B/32` -> `ViT-B-32` (one folder level; the original nested one per slash)."""
    return arch.replace("/", "-")


def runs_root(cfg: Config) -> Path:
    """`exp/<dataset>/<arch>` (`exp_fewshot/...` with `data.shot`), where runs without --output go."""
    return Path("exp_fewshot" if cfg.data.shot else "exp") / cfg.data.dataset / arch_folder(cfg.network.arch)


def output_folder(cfg: Config, output: str | None, log_time: str | None) -> Path:
    """`--output`, or `runs_root(cfg)/<timestamp>`."""
    if output:
        return Path(output)
    return runs_root(cfg) / (log_time or time.strftime("%Y%m%d_%H%M%S"))


def prepare_run_folder(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume or None), decided on rank 0 and shared with every rank.
    `resume: auto` without --output continues the newest run of this dataset and arch."""
    out, resume_path = None, None
    if dist.rank == 0:
        out = output_folder(cfg, args.output, args.log_time)
        resume_path = find_resume(cfg.resume, args.output, None if args.output else runs_root(cfg))
        if resume_path is not None and cfg.resume == "auto" and not args.output:
            out = resume_path.parent
        make_folder(out, "--output" if args.output else "run folder")
        remove_temporaries(out)
    out, resume_path = broadcast_object((out, resume_path))
    return Path(out), resume_path


def check_resume_config(ckpt: Any, cfg: Config, path: Path | None) -> list[str]:
    """Resume continues the recorded run: a changed key outside `RESUME_MAY_CHANGE` is refused
    (naming it), so the config a run records is always the one that trained it. Returns the
    allowed changes (e.g. more `solver.epochs` to extend a run)."""
    recorded = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not recorded:
        raise UserError(
            f"resume: {path} holds no config (not written by this train.py); "
            f"use `pretrain: {path}` to start a new run from its weights"
        )
    refused, allowed = resume_differences(recorded, to_dict(cfg))
    if refused:
        raise UserError(
            f"resume: {path} was trained with other settings; a resumed run continues it exactly, "
            f"so only {', '.join(sorted(RESUME_MAY_CHANGE))} may change. Changed: {'; '.join(refused)}. "
            f"To train on with new settings, start a new run with `--opts pretrain={path}`"
        )
    return allowed


def record_config(cfg: Config, config_path: str, out: Path) -> None:
    """config.yaml (what runs) and a copy of the file the user gave, on rank 0."""
    atomic_write_text(out / "config.yaml", dump(cfg))
    with contextlib.suppress(OSError, shutil.SameFileError):
        shutil.copy(config_path, out / ("source_" + Path(config_path).name))


def run_is_complete(ckpt: Any, cfg: Config, path: Path | None) -> bool:
    """Whether a resumed run has nothing left to train: True when its checkpoint has trained exactly
    solver.epochs (then train.py says so and rewrites nothing, not even config.yaml). A checkpoint
    that has trained more is refused: a resumed run cannot take epochs back, and config.yaml would
    record a run that never happened."""
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "epoch" not in ckpt:
        return False  # not a training checkpoint: restore_training_state says so
    done = int(ckpt["epoch"]) + 1
    if done > cfg.solver.epochs:
        raise UserError(
            f"resume: {path} has trained {done} epochs, more than solver.epochs={cfg.solver.epochs}; a resumed run "
            f"cannot take epochs back: resume with solver.epochs >= {done}, or start a new run from its weights "
            f"with --opts pretrain={path}"
        )
    return done == cfg.solver.epochs


def end_epoch(start_epoch: int, epochs: int, stop_after_epochs: int | None) -> int:
    """The epoch this invocation stops before: solver.epochs, or earlier with --stop_after_epochs N
    (N >= 1, checked by train.py's parser)."""
    if stop_after_epochs is None:
        return epochs
    return min(epochs, start_epoch + stop_after_epochs)
