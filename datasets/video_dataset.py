"""The dataset: list records → sampled frame indices → decoded frames → clip transform.

`dataset[i] -> (clip uint8 (V*T, 3, S, S), label, i)` with V = crops × clips views, crop-major,
then clip, then frame. With `defer_transform=True` (`data.transform_device: cuda`) it returns
`(decoded clip (V*T, 3, H, W), label, i, params)` instead: the transform's random parameters are
drawn here with the same generator, and `datasets.device_transforms` applies them to the batch.
Randomness (frame offsets, augmentation, replacement of a bad sample) comes from
`numpy.random.default_rng([seed, epoch, i, attempt])`: independent of the worker that loads the
sample and of the worker count, identical when an epoch is re-run after a resume, and never
shared between workers (the original's global numpy RNG repeated offsets across workers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.clip_options import Augmentation, BadSamplePolicy, ClipSampling
from datasets.decoding import BadSampleError
from datasets.lists import VideoRecord
from datasets.sampling import sample_indices
from datasets.source_base import ClipReader
from datasets.transforms import ClipParams, TrainTransform
from datasets.video_reader import SeekMode
from utils.errors import UserError

log = logging.getLogger(__name__)
RAISE_ON_BAD = BadSamplePolicy()  # a bad sample raises (data.on_bad_sample: error)


class VideoDataset(Dataset):
    """The records of one split under `root`, each read by `reader` (a frame folder, a video
    file, ...: `datasets.source_base.ClipReader`), sampled and augmented as the options say."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        root: str,
        reader: ClipReader,
        sampling: ClipSampling,
        augment: Augmentation,
        bad: BadSamplePolicy = RAISE_ON_BAD,
        list_path: str = "",
    ):
        self.records = list(records)
        if not self.records:
            raise UserError(f"{list_path or 'dataset'}: no videos left to load")
        self.root = root
        self.reader = reader
        self.num_segments = sampling.num_segments
        self.mode = sampling.mode
        self.dense = sampling.dense
        self.random_shift = sampling.random_shift
        self.test_clips = sampling.test_clips if sampling.mode == "test" else 1
        self.seed = int(sampling.seed)
        self.epoch = 0
        self.transform = augment.transform
        self.defer_transform = augment.defer
        self.flip_label_map = {int(k): int(v) for k, v in (augment.flip_label_map or {}).items()}
        self.on_bad_sample = bad.on_bad_sample
        n_bad = bad.max_bad_samples
        self.max_bad_samples = max(1, len(self.records) // 1000) if n_bad is None else n_bad
        self.list_path = list_path
        self.bad_samples: set[int] = set()
        self.fewshot_records: list[VideoRecord] | None = None

    @property
    def frames(self) -> ClipReader:
        """The reader, by the name tests and tools use to read single frames (`ds.frames.read`)."""
        return self.reader

    @property
    def seek_mode(self) -> SeekMode:
        return self.reader.seek_mode

    @property
    def decode_device(self) -> str:
        return self.reader.decode_device

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, index, attempt])

    def path_of(self, record: VideoRecord) -> str:
        return os.path.join(self.root, record.path) if self.root else record.path

    def load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int, ClipParams | None]:
        """Decode and transform one sample (no bad-sample handling); with `defer_transform` the
        clip stays decoded-only and the drawn parameters are returned instead of applied."""
        record = self.records[index]
        clip = self.reader.read_clip(self.path_of(record), record.num_frames, lambda n: self.frame_indices(n, rng))
        return self.finish(clip, record.label, rng)

    def frame_indices(self, n: int, rng: np.random.Generator) -> list[int]:
        """The sampled frame indices of an n-frame video (all views, clip-major)."""
        return sample_indices(
            n,
            self.num_segments,
            mode=self.mode,
            clips=self.test_clips,
            dense=self.dense,
            random_shift=self.random_shift,
            rng=rng,
        )

    def finish(
        self, clip: torch.Tensor, label: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, int, ClipParams | None]:
        """Transform a decoded clip (or only draw its parameters) and apply the flip label map."""
        params = None
        if self.defer_transform:
            if isinstance(self.transform, TrainTransform):
                params = self.transform.draw(clip.shape[-2], clip.shape[-1], rng)
            flipped = params is not None and params.flip
        else:
            clip, flipped = self.transform(clip, rng)
        if flipped and self.flip_label_map:
            label = self.flip_label_map.get(label, label)
        return clip, label, params

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        threads = torch.get_num_threads()
        if threads == 1:
            return self._get(index)
        # In the main process (workers=0): small per-clip ops are several times slower with
        # several threads on a busy machine, so run them on one and restore afterwards.
        torch.set_num_threads(1)
        try:
            return self._get(index)
        finally:
            torch.set_num_threads(threads)

    def _get(self, index: int) -> tuple[Any, ...]:
        attempt, current = 0, index
        while True:
            try:
                clip, label, params = self.load(current, self.rng(current, attempt))
                return (clip, label, index, params) if self.defer_transform else (clip, label, index)
            except BadSampleError as err:
                if self.on_bad_sample == "error":
                    raise BadSampleError(
                        f"{err} (list {self.list_path}, line {self.records[current].line}; "
                        f"set data.on_bad_sample: skip to replace bad samples)"
                    ) from None
                self.bad_samples.add(current)
                log.warning("skipping bad sample %d: %s", current, err)
                if len(self.bad_samples) > self.max_bad_samples:
                    raise BadSampleError(
                        f"more than data.max_bad_samples={self.max_bad_samples} bad samples "
                        f"({len(self.bad_samples)}); last: {err}. Run python -m datasets.check "
                        f"to list them all"
                    ) from None
                attempt += 1
                # Deterministic replacement: a function of (seed, epoch, index, attempt) only.
                current = int(self.rng(index, attempt).integers(0, len(self.records)))
