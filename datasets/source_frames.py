"""Frame folders (`data.format: files`, `data.modality: RGB`): one folder of numbered images per
video, listed as `path num_frames label`. Also reads the frame members of a tar shard sample."""

from __future__ import annotations

import re
from typing import Any

import torch

from datasets.decoding import BadSampleError, FrameFolderReader, decode_frame_bytes, to_clip, unique_indices
from datasets.source_base import FrameChooser, ListSource
from datasets.video_reader import SeekMode
from utils.config_schema import DataConfig

_FRAME_KEY = re.compile(r"^(\d+)\.(jpg|jpeg|png)$")  # a frame member of a shard sample: <index>.jpg


class FramesReader(FrameFolderReader):
    """`root/<path>/<image_tmpl.format(index + index_bias)>`; frame files need no seeking."""

    seek_mode: SeekMode = "exact"
    decode_device = "cpu"

    @classmethod
    def from_config(cls, data: DataConfig) -> FramesReader:
        return cls(data.image_tmpl, data.index_bias, data.num_frames_from)

    def read_clip(self, path: str, listed: int | None, choose: FrameChooser) -> torch.Tensor:
        return self.read(path, choose(self.num_frames(path, listed)))

    def read_tar_sample(self, sample: dict[str, Any], where: str, choose: FrameChooser) -> torch.Tensor:
        """The sampled frames of a shard sample whose members are `<index>.jpg` (or png)."""
        frames = sorted((int(m.group(1)), k) for k in sample if (m := _FRAME_KEY.match(k)))
        if not frames:
            raise BadSampleError(f"sample {where} holds no frames")
        uniq, where_idx = unique_indices(choose(len(frames)))
        names = [frames[i][1] for i in uniq]
        return to_clip(decode_frame_bytes([sample[k] for k in names], names, where), uniq, where_idx)

    def remedies(self) -> list[str]:
        return ["data.num_frames_from: list (no directory listing per sample)"] if self.num_frames_from == "dir" else []


class FrameFolderSource(ListSource):
    """A list of frame folders under `data.train_root` / `data.val_root`."""

    def reader(self) -> FramesReader:
        return FramesReader.from_config(self.data)
