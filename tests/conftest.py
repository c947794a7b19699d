"""Fixtures shared by the test files (pytest finds them by name; a file that needs another size of
data defines its own fixture of the same name, which takes precedence there)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# What a launcher or a debugging shell may have left in the environment: a child process started
# by a test must not join a process group or change its error output because of them.
INHERITED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NNODES", "TEXT4VIS_DEBUG", "LOGLEVEL")


@pytest.fixture(scope="session")
def child_env() -> Callable[..., dict[str, str]]:
    """`child_env(**extra)`: the environment for an entry point or script run as a subprocess —
    offline, one thread, this interpreter as `$PYTHON`, no inherited launcher variables."""

    def make(**extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in INHERITED}
        env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHON=sys.executable)
        return {**env, **extra}

    return make


@pytest.fixture(scope="session")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated dataset of the data tests, in both formats (frame folders and videos): 4 classes,
    3 training and 2 validation videos per class, 10 frames of 64 px; read-only for the tests."""
    from datasets.synthetic import generate

    out = tmp_path_factory.mktemp("syn")
    generate(out, classes=4, videos_per_class=3, val_videos_per_class=2, frames=10, size=64, fmt="both", seed=3)
    return out


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., dict]:
    """`tiny_config(frames_root, seed=, batch_size=, solver=, logging=, **data)`: the config dict of the
    end-to-end tests — the tiny random-weight model (meanP head, orthogonal class vectors, no text
    cache) on 2 frames per clip of a generated set; `frames_root` (the folder `datasets.synthetic`
    wrote) fills in its frame folders, lists and label CSV, `None` leaves the data sources to `data`."""

    def make(
        frames_root: Path | None,
        *,
        seed: int = 0,
        batch_size: int = 2,
        solver: dict | None = None,
        logging: dict | None = None,
        **data: object,
    ) -> dict:
        sources: dict[str, object] = {}
        if frames_root is not None:
            sources = {
                "train_root": str(frames_root / "frames"),
                "val_root": str(frames_root / "frames"),
                "train_list": str(frames_root / "train.txt"),
                "val_list": str(frames_root / "val.txt"),
                "label_list": str(frames_root / "labels.csv"),
            }
        base = {"dataset": "syn", "num_segments": 2, "batch_size": batch_size, "workers": 0, "input_size": 112}
        cfg: dict = {
            "seed": seed,
            "data": {**base, "min_frames": 1, **sources, **data},
            "network": {
                "arch": "tiny",
                "pretrained": "none",
                "sim_header": "meanP",
                "classifier": "orthogonal",
                "text_cache": "",
            },
            "solver": {"lr_warmup_step": 0, **(solver or {})},
        }
        if logging is not None:
            cfg["logging"] = logging
        return cfg

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[..., Path]:
    """`tiny_checkpoint(cfg, names, path, seed=0, perturb_head=False, save_names=True)`: the model that
    the config dict `cfg` builds for the classes `names`, saved at `path` as train.py saves one
    (`model`, `config`, and `class_names` unless `save_names=False`). `perturb_head` moves the temporal
    head's weights away from their initialisation, so that a test sees whether the head was loaded."""

    def make(
        cfg: dict, names: list[str], path: Path, *, seed: int = 0, perturb_head: bool = False, save_names: bool = True
    ) -> Path:
        import torch

        from modules.model_builder import build_model
        from utils.checkpoint import save_checkpoint
        from utils.config import resolve, to_config

        torch.manual_seed(seed)
        model = build_model(to_config(resolve(cfg, "t")), names)
        if perturb_head:
            with torch.no_grad():
                for p in model.fusion_model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
        state = {"model": model.state_dict(), "config": cfg, **({"class_names": names} if save_names else {})}
        return save_checkpoint(state, path)

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end files first: those whose every test is marked slow, then those with some slow tests,
    then the rest (each group in its usual order). Under `--dist loadfile` a file goes to one worker in
    this order, so the long files start at once and the short ones fill in at the end."""
    slow: dict[Path, list[bool]] = {}
    for item in items:
        slow.setdefault(item.path, []).append(item.get_closest_marker("slow") is not None)
    rank = {path: 0 if all(marks) else 1 if any(marks) else 2 for path, marks in slow.items()}
    items.sort(key=lambda item: rank[item.path])
