"""A dataset and its loader from the `data` section: `build_dataset` (it picks the data source once),
`build_loader` (plain arguments) and `config_loader` (the loader as the config sets it)."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.clip_options import Augmentation, BadSamplePolicy, ClipSampling, LoaderOptions, LoaderPlacement
from datasets.device_transforms import collate_raw
from datasets.fewshot import repeat_few_shot, select_few_shot
from datasets.lists import VideoRecord, read_label_csv
from datasets.samplers import ShardSampler, TrainSampler
from datasets.shard_dataset import ShardDataset
from datasets.source_videos import seek_mode_for
from datasets.sources import open_source
from datasets.transforms import EvalTransform, TrainTransform, as_scale
from datasets.video_dataset import VideoDataset
from utils.config import Config
from utils.config_schema import DataConfig
from utils.errors import UserError
from utils.heap import reuse_freed_memory

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "WorkerInit",
    "build_dataset",
    "build_loader",
    "build_transform",
    "data_remedy",
    "eval_transform",
    "read_class_names",
    "seek_mode_for",  # where the tests and tools have found it
]


def read_class_names(data: DataConfig) -> list[str]:
    """The class names of `data.label_list`, checked against `data.num_classes` when that is set."""
    if not data.label_list:
        raise UserError("data.label_list is not set: the class-name CSV (id,name) is needed")
    names = read_label_csv(data.label_list)
    if data.num_classes is not None and data.num_classes != len(names):
        raise UserError(
            f"data.num_classes is {data.num_classes} but the label CSV {data.label_list} has {len(names)} classes"
        )
    return names


def build_transform(data: DataConfig, split: str, test_crops: int = 1) -> TrainTransform | EvalTransform:
    """The clip transform of a split from the `data` section of a config."""
    scale = as_scale(_scale_size(data))
    if split == "train":
        randaug = (int(data.randaug.N), int(data.randaug.M)) if data.randaug.enable else None
        return TrainTransform(
            input_size=data.input_size,
            scale_size=scale,
            flip_prob=data.flip_prob,
            grayscale_prob=data.grayscale_prob,
            crop=data.train_crop,
            color_jitter_prob=data.color_jitter_prob,
            blur_prob=data.blur_prob,
            solarize_prob=data.solarize_prob,
            randaug=randaug,
            randaug_per_frame=data.randaug_per_frame,
        )
    return eval_transform(data, test_crops if split == "test" else 1)


def eval_transform(data: DataConfig, crops: int = 1) -> EvalTransform:
    """The validation / test transform of the `data` section (`crops` views per clip)."""
    return EvalTransform(input_size=data.input_size, scale_size=as_scale(_scale_size(data)), crops=crops)


def _scale_size(data: DataConfig) -> int | list[int]:
    """`data.scale_size`, which `utils.config` fills in at load when the file leaves it null."""
    if data.scale_size is None:
        raise ValueError("data.scale_size is unset: build the config with utils.config (load_config / from_dict)")
    return data.scale_size


def build_dataset(
    cfg: Config,
    split: str,
    *,
    test_crops: int = 1,
    test_clips: int = 1,
    dense: bool | None = None,
    seed: int | None = None,
    allow_pipe: Collection[str] = (),
) -> VideoDataset | ShardDataset:
    """`train` (augmented, random offsets, min_frames filter, few-shot), `val` (train-time validation:
    1 crop, first frame of each segment, min_frames filter) or `test` (val list, all videos,
    `test_crops` × `test_clips` views). The data source (frame folders, video files, tar shards:
    `datasets.sources`) is picked here, once. `allow_pipe`: the `pipe:` shard index URLs the user's
    command line gives with --allow-pipe (`datasets.shard_dataset.allowed_pipes`); no other is opened."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    data = cfg.data
    seed = cfg.seed if seed is None else seed
    source = open_source(data, split, allow_pipe)
    num_classes = len(read_class_names(data)) if data.label_list else None
    all_records, keys = source.records(num_classes)
    keys = _enough_frames(data, split, source.where, all_records, keys)
    records = [all_records[i] for i in keys]
    fewshot = None
    if split == "train" and data.shot:
        fewshot = select_few_shot(records, data.shot, seed, num_classes)
        records = repeat_few_shot(fewshot, len(records), data.shot, num_classes or len({r.label for r in records}))
    ds = VideoDataset(
        records,
        root=source.root,
        reader=source.reader(),
        sampling=ClipSampling(
            data.num_segments,
            split,
            dense=data.dense if dense is None else dense,
            random_shift=data.random_shift,
            test_clips=test_clips,
            seed=seed,
        ),
        augment=Augmentation(
            build_transform(data, split, test_crops),
            defer=data.transform_device == "cuda",
            flip_label_map=dict(data.flip_label_map) if data.flip_label_map else None,
        ),
        bad=BadSamplePolicy(data.on_bad_sample, data.max_bad_samples),
        list_path=str(source.where),
    )
    ds.fewshot_records = fewshot
    return source.dataset(ds, keys)


def _enough_frames(data: DataConfig, split: str, where: str, records: list[VideoRecord], keys: list[int]) -> list[int]:
    """The positions `keys` the split keeps: for train / val those with at least `data.min_frames`
    frames (the original's filter; video lists have no frame count), for test all."""
    if split in ("train", "val"):
        keys = [i for i in keys if (n := records[i].num_frames) is None or n >= data.min_frames]
        if not keys:
            raise UserError(f"{where}: every video has fewer than data.min_frames={data.min_frames} frames")
    return keys


class WorkerInit:
    """Picklable worker_init_fn: one torch thread per worker (a second busy process made
    multi-threaded tensor ops 3-10x slower here); numpy/random seeded from (seed, epoch, rank, worker)
    for any third-party code that uses them (our own draws use per-sample generators); with
    `reuse_memory`, freed clip buffers stay in the worker's heap (`utils.heap`)."""

    def __init__(self, seed: int, rank: int, reuse_memory: bool = True):
        self.seed, self.rank, self.reuse_memory = seed, rank, reuse_memory

    def __call__(self, worker_id: int) -> None:
        import random

        torch.set_num_threads(1)
        if self.reuse_memory:
            reuse_freed_memory()
        info = torch.utils.data.get_worker_info()
        epoch = int(getattr(info.dataset, "epoch", 0)) if info is not None else 0
        ss = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, self.rank, worker_id])
        state = ss.generate_state(2)
        np.random.seed(int(state[0]))
        random.seed(int(state[1]))


def build_loader(
    dataset: Any, batch_size: int, workers: int, *, train: bool, **placement: Unpack[LoaderPlacement]
) -> DataLoader:
    """Training: shuffled `TrainSampler` (its `set_epoch` also sets the dataset's epoch).
    Evaluation: `ShardSampler` (every index once over the ranks, no padding). Batches are
    `(clips uint8 (B, V*T, 3, S, S), labels (B,), indices (B,))`; with deferred transforms
    (`data.transform_device: cuda`) the clips are `RawClips`, which `datasets.device_transforms.
    ClipsToDevice` turns into that tensor on the GPU. A dataset that makes its own loader (tar
    shards: `ShardDataset.make_loader`) gets it. With `data.decode_device: cuda` the clips are
    decoded in this process (no workers). `placement`: rank, world_size, seed, epoch, drop_last and
    reuse_memory (`data.reuse_freed_memory`: `utils.heap.reuse_freed_memory` in the workers)."""
    on_gpu = getattr(dataset, "decode_device", "cpu") == "cuda"  # NVDEC output is already on the GPU;
    opts = LoaderOptions(batch_size, 0 if on_gpu else workers, train, **placement)  # CUDA does not cross fork()
    common: dict[str, Any] = dict(
        num_workers=opts.workers,
        pin_memory=torch.cuda.is_available() and not on_gpu,
        worker_init_fn=WorkerInit(opts.seed, opts.rank, opts.reuse_memory) if opts.workers > 0 else None,
        collate_fn=collate_raw if getattr(dataset, "defer_transform", False) else None,
    )
    make = getattr(dataset, "make_loader", None)
    return make(opts, **common) if make is not None else _map_style_loader(dataset, opts, **common)


def config_loader(
    dataset: Any, cfg: Config, *, train: bool, rank: int = 0, world_size: int = 1, drop_last: bool = False
) -> DataLoader:
    """`build_loader` as the run's config sets it: `data.batch_size`, `data.workers`,
    `data.reuse_freed_memory` and the run's `seed`."""
    data = cfg.data
    return build_loader(
        dataset,
        data.batch_size,
        data.workers,
        train=train,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        drop_last=drop_last,
        reuse_memory=data.reuse_freed_memory,
    )


def _map_style_loader(dataset: Any, opts: LoaderOptions, **common: Any) -> DataLoader:
    """A DataLoader over an indexable dataset, with the train or evaluation sampler."""
    if opts.train:
        sampler: Any = TrainSampler(dataset, opts.rank, opts.world_size, opts.seed)
        sampler.set_epoch(opts.epoch)
    else:
        sampler = ShardSampler(len(dataset), opts.rank, opts.world_size)
    return DataLoader(
        dataset,
        batch_size=opts.batch_size,
        sampler=sampler,
        drop_last=opts.drop_last,
        persistent_workers=False,  # workers re-created per epoch: they see set_epoch
        **common,
    )


def data_remedy(dataset: Any, workers: int, procs_per_node: int = 1, cpus: int | None = None) -> str:
    """What would make this data pipeline faster, for the data-bound alarm (`utils.data_wait`)."""
    free = (cpus or os.cpu_count() or 1) // max(1, procs_per_node)
    tips = []
    if workers < free - 1:
        tips.append(f"raise data.workers (now {workers}; this machine has {free} CPUs per training process)")
    tips += dataset.reader.remedies()
    if not dataset.defer_transform and torch.cuda.is_available():
        tips.append("data.transform_device: cuda (augment on the GPU)")
    if not tips:
        tips.append("more CPU cores per GPU, or a smaller data.input_size / data.num_segments")
    return "remedy: " + "; ".join(tips)
