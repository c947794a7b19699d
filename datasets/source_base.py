"""The data-source seam: what every way of storing a data set (frame folders, video files, tar
shards, ...) gives `datasets.data_builder`. A source is opened once per split from the `data` section;
it then lists the split's records, makes the reader of one sample, and wraps the per-sample
dataset in what its loader iterates. `datasets.sources` registers them by name."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from datasets.lists import VideoRecord, read_list
from datasets.video_reader import SeekMode
from utils.config_schema import DataConfig
from utils.errors import UserError

if TYPE_CHECKING:
    from datasets.shard_dataset import ShardDataset
    from datasets.video_dataset import VideoDataset

FrameChooser = Callable[[int], Sequence[int]]  # frame count -> the sampled frame indices

NAME_IT = (
    ": name the data with --config CFG or --opts {key}=... (a checkpoint's stored config never supplies data sources)"
)


class ClipReader(Protocol):
    """Reads the sampled frames of one sample. `seek_mode` is how a video decoder seeks
    (`approximate` for constant-frame-rate files); `decode_device` is where frames land."""

    seek_mode: SeekMode
    decode_device: str

    def read_clip(self, path: str, listed: int | None, choose: FrameChooser) -> torch.Tensor:
        """uint8 (len(indices), 3, H, W) of the sample at `path` (`listed`: the list's frame count)."""
        ...

    def remedies(self) -> list[str]:
        """What would make reading faster, for the data-bound alarm (`datasets.data_builder.data_remedy`)."""
        ...


class TarSampleReader(ClipReader, Protocol):
    """A clip reader that also decodes a tar shard sample (webdataset's dict of members)."""

    def read_tar_sample(self, sample: dict[str, Any], where: str, choose: FrameChooser) -> torch.Tensor:
        """The sampled frames of `sample` (`where`: shard URL and key, for messages)."""
        ...


class DataSource(Protocol):
    """One split of a data set as stored: `where` names the list or index in messages, `root` is
    the folder its sample paths are relative to ("" when they are not paths)."""

    where: str
    root: str

    def records(self, num_classes: int | None) -> tuple[list[VideoRecord], list[int]]:
        """Every record, and the positions of those present (before the min_frames filter)."""
        ...

    def reader(self) -> ClipReader:
        """What reads one sample's clip."""
        ...

    def dataset(self, samples: VideoDataset, keys: list[int]) -> VideoDataset | ShardDataset:
        """What the loader iterates: `samples` itself, or a stream over it (`keys`: the kept positions)."""
        ...


SourceOpener = Callable[[Any, str, Collection[str]], DataSource]  # (data section, split, allowed pipe: URLs)


def check_modality(found: str, data: DataConfig, what: str) -> None:
    """Refuse a list or shard index whose samples are not of the kind `data.modality` names."""
    if found != data.modality:
        kind = {"RGB": "frames", "video": "video"}[found]
        raise UserError(f"{what.format(kind=kind)} but data.modality is '{data.modality}'")


class ListSource:
    """A list file (`data.train_list` / `data.val_list`) of samples under a root folder
    (`data.train_root` / `data.val_root`); subclasses say how one sample is read."""

    def __init__(self, data: DataConfig, split: str, allow_pipe: Collection[str] = ()):
        train = split == "train"
        self.data = data
        self.where, self.root = (data.train_list, data.train_root) if train else (data.val_list, data.val_root)
        if not self.where:
            key = "data.train_list" if train else "data.val_list"
            raise UserError(f"{key} is not set{NAME_IT.format(key=key)}")
        if self.root and not os.path.isdir(self.root):
            raise UserError(f"{'data.train_root' if train else 'data.val_root'} is not a folder: {self.root}")

    def records(self, num_classes: int | None) -> tuple[list[VideoRecord], list[int]]:
        records = read_list(self.where, num_classes)
        check_modality(
            "video" if records[0].num_frames is None else "RGB", self.data, f"{self.where} is a {{kind}} list"
        )
        return records, list(range(len(records)))

    def dataset(self, samples: VideoDataset, keys: list[int]) -> VideoDataset | ShardDataset:
        return samples
