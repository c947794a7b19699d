"""What travels together from the `data` section to a dataset and its loader, as small frozen
records: how frames are sampled, how a clip is augmented, what a bad sample does, and where a
loader sits (rank, world, seed, epoch). They keep `VideoDataset` and `build_loader` short."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from utils.errors import UserError


@dataclass(frozen=True)
class ClipSampling:
    """Which frames a sample gives (`datasets.sampling.sample_indices`) and the seed of its draws."""

    num_segments: int
    mode: str  # train | val | test
    dense: bool = False
    random_shift: bool = True
    test_clips: int = 1  # clips per video; only the test mode takes more than one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be train, val or test, got {self.mode!r}")


@dataclass(frozen=True)
class Augmentation:
    """The clip transform; `defer` (`data.transform_device: cuda`) only draws its parameters and
    leaves applying them to `datasets.device_transforms`; `flip_label_map` relabels flipped clips."""

    transform: Callable[..., Any]
    defer: bool = False
    flip_label_map: Mapping[int, int] | None = None


@dataclass(frozen=True)
class BadSamplePolicy:
    """`data.on_bad_sample` (error | skip) and `data.max_bad_samples` (None: 1 per 1000 samples)."""

    on_bad_sample: str = "error"
    max_bad_samples: int | None = None

    def __post_init__(self) -> None:
        if self.on_bad_sample not in ("error", "skip"):
            raise UserError(f"data.on_bad_sample must be error or skip, got {self.on_bad_sample!r}")


class LoaderPlacement(TypedDict, total=False):
    """The keyword arguments of `datasets.data_builder.build_loader` after `train`."""

    rank: int
    world_size: int
    seed: int
    epoch: int
    drop_last: bool
    reuse_memory: bool


@dataclass(frozen=True)
class LoaderOptions:
    """A loader's batch, workers and place: its rank in the world, the seed and epoch of its
    order, whether it drops a last short batch, and whether workers reuse freed memory."""

    batch_size: int
    workers: int
    train: bool
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    epoch: int = 0
    drop_last: bool = False
    reuse_memory: bool = True
