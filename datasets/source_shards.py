"""Tar shards (`data.format: shards`) written by `python -m datasets.shards`, read through their
index (`data.train_shards` / `data.val_shards`). A shard sample holds a video file or a set of
frames; the frames or video source's reader decodes it (`read_tar_sample`)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

from datasets.lists import VideoRecord
from datasets.shard_dataset import ShardDataset, read_shard_index
from datasets.source_base import NAME_IT, TarSampleReader, check_modality
from datasets.source_frames import FramesReader
from datasets.source_videos import VideoFilesReader
from datasets.video_dataset import VideoDataset
from datasets.video_reader import SeekMode
from utils.config_schema import DataConfig
from utils.errors import UserError

# the reader of each shard content, given the data section and the seek mode
_MEMBER_READERS: dict[str, Callable[[Any, SeekMode], TarSampleReader]] = {
    "frames": lambda data, seek_mode: FramesReader.from_config(data),
    "video": VideoFilesReader.from_config,
}


class TarShardSource:
    """The shards of one split, listed by their index; `root` is "" (samples are tar members)."""

    def __init__(self, data: DataConfig, split: str, allow_pipe: Collection[str] = ()):
        key = "data.train_shards" if split == "train" else "data.val_shards"
        url = data.train_shards if split == "train" else data.val_shards
        if not url:
            raise UserError(f"{key} is not set (data.format is shards){NAME_IT.format(key=key)}")
        self.data = data
        self.index = read_shard_index(url, key, allow_pipe)
        self.where, self.root = self.index.url, ""

    def records(self, num_classes: int | None) -> tuple[list[VideoRecord], list[int]]:
        all_records = self.index.records
        bad = [r for r in all_records if num_classes is not None and r.label >= num_classes]
        if bad:
            raise UserError(
                f"{self.where}: list line {bad[0].line}: label {bad[0].label} is outside the "
                f"{num_classes} classes of {self.data.label_list}"
            )
        present = {k for ks in self.index.keys for k in ks}  # samples the writer left out (--skip-bad) are in none
        check_modality(self.index.modality, self.data, f"{self.where} is a {{kind}} shard index")
        return all_records, [i for i in range(len(all_records)) if i in present]

    def reader(self) -> TarSampleReader:
        seek_mode: SeekMode = "approximate" if self.index.cfr else "exact"
        return _MEMBER_READERS[self.index.content](self.data, seek_mode)

    def dataset(self, samples: VideoDataset, keys: list[int]) -> ShardDataset:
        reader = cast(TarSampleReader, samples.reader)  # made by `reader()` above
        return ShardDataset(self.index, samples, keys, reader=reader, shuffle_buffer=self.data.shuffle_buffer)
