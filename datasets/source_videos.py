"""Video files (`data.format: files`, `data.modality: video`): one file per video, listed as
`path label`, decoded by `data.decoder` on `data.decode_device`. Also reads the video member of
a tar shard sample."""

from __future__ import annotations

import os
from typing import Any

import torch

from datasets.decoding import BadSampleError
from datasets.source_base import FrameChooser, ListSource
from datasets.video_reader import CFR_MARKER, SeekMode, VideoReader, resolve_decoder
from utils.config_schema import DataConfig


def seek_mode_for(root: str) -> SeekMode:
    """`approximate` (cheaper, right for constant-frame-rate files) for a folder written by
    `python -m datasets.preprocess`, whose files are constant-frame-rate by construction; else `exact`."""
    return "approximate" if root and os.path.isfile(os.path.join(root, CFR_MARKER)) else "exact"


class VideoFilesReader:
    """Opens a video once per sample: its frame count from the container, then one batched read."""

    def __init__(self, decoder: str = "auto", decode_device: str = "cpu", seek_mode: SeekMode = "exact"):
        self.decoder = resolve_decoder(decoder, decode_device)
        self.decode_device = decode_device
        self.seek_mode = seek_mode

    @classmethod
    def from_config(cls, data: DataConfig, seek_mode: SeekMode) -> VideoFilesReader:
        return cls(data.decoder, data.decode_device, seek_mode)

    def read_clip(self, path: str, listed: int | None, choose: FrameChooser) -> torch.Tensor:
        reader = VideoReader(path, self.decoder, device=self.decode_device, seek_mode=self.seek_mode)
        return reader.read(choose(reader.num_frames))

    def read_tar_sample(self, sample: dict[str, Any], where: str, choose: FrameChooser) -> torch.Tensor:
        """The sampled frames of a shard sample's video member (any field but `json` and `cls`)."""
        field = next((k for k in sample if not k.startswith("__") and k not in ("json", "cls")), None)
        if field is None:
            raise BadSampleError(f"sample {where} holds no video")
        name = f"{where}.{field}"
        reader = VideoReader(
            sample[field], self.decoder, device=self.decode_device, seek_mode=self.seek_mode, name=name
        )
        return reader.read(choose(reader.num_frames))

    def remedies(self) -> list[str]:
        tips = []
        if self.decoder != "torchcodec":
            tips.append(
                f"decode with torchcodec (now {self.decoder}; scripts/setup_env.sh installs FFmpeg's libraries)"
            )
        if self.seek_mode != "approximate":  # not from python -m datasets.preprocess (files or shards)
            tips.append(
                "pre-process the videos once (python -m datasets.preprocess SRC OUT: all-intra H.264, "
                "sampling decodes 8 frames instead of the whole clip; docs/data.md)"
            )
        return tips


class VideoFileSource(ListSource):
    """A list of video files under `data.train_root` / `data.val_root`."""

    def reader(self) -> VideoFilesReader:
        return VideoFilesReader.from_config(self.data, seek_mode_for(self.root))
