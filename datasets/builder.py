"""Builders: `build_dataset` (the only place that reads `cfg.data`) and `build_loader`."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.device_transforms import collate_raw
from datasets.fewshot import repeat_few_shot, select_few_shot
from datasets.lists import VideoRecord, read_label_csv, read_list
from datasets.samplers import ShardSampler, TrainSampler
from datasets.shard_dataset import ShardDataset, ShardIndex, ShardLoader, read_shard_index
from datasets.transforms import EvalTransform, TrainTransform, as_scale
from datasets.video_dataset import VideoDataset
from datasets.video_reader import CFR_MARKER
from utils.errors import UserError
from utils.heap import reuse_freed_memory


def read_class_names(data: Any) -> list[str]:
    """The class names of `data.label_list`, checked against `data.num_classes` when that is set."""
    if not data.label_list:
        raise UserError("data.label_list is not set: the class-name CSV (id,name) is needed")
    names = read_label_csv(data.label_list)
    if data.num_classes is not None and data.num_classes != len(names):
        raise UserError(
            f"data.num_classes is {data.num_classes} but the label CSV {data.label_list} has {len(names)} classes"
        )
    return names


def build_transform(data: Any, split: str, test_crops: int = 1) -> TrainTransform | EvalTransform:
    """The clip transform of a split from the `data` section of a config."""
    scale = as_scale(data.scale_size)
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


def eval_transform(data: Any, crops: int = 1) -> EvalTransform:
    """The validation / test transform of the `data` section (`crops` views per clip)."""
    return EvalTransform(input_size=data.input_size, scale_size=as_scale(data.scale_size), crops=crops)


def build_dataset(
    cfg: Any,
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
    `test_crops` × `test_clips` views). `allow_pipe`: the `pipe:` shard index URLs the user's
    command line gives with --allow-pipe (`datasets.shard_dataset.allowed_pipes`); no other is opened."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    data = cfg.data
    seed = cfg.seed if seed is None else seed
    list_path, root, index = _source(data, split, allow_pipe)
    shards = index is not None
    num_classes = len(read_class_names(data)) if data.label_list else None
    all_records, keys = _kept_records(data, split, list_path, index, num_classes)
    records = [all_records[i] for i in keys]
    fewshot = None
    if split == "train" and data.shot:
        fewshot = select_few_shot(records, data.shot, seed, num_classes)
        records = repeat_few_shot(fewshot, len(records), data.shot, num_classes or len({r.label for r in records}))
    fmt_is_video = (index.content == "video") if index is not None else records[0].num_frames is None
    if fmt_is_video != (data.modality == "video"):
        raise UserError(
            f"{list_path} is a {'video' if fmt_is_video else 'frames'} "
            f"{'shard index' if shards else 'list'} but data.modality is '{data.modality}'"
        )
    ds = VideoDataset(
        records,
        root=root,
        modality=data.modality,
        num_segments=data.num_segments,
        mode=split,
        transform=build_transform(data, split, test_crops),
        image_tmpl=data.image_tmpl,
        index_bias=data.index_bias,
        num_frames_from=data.num_frames_from,
        decoder=data.decoder,
        decode_device=data.decode_device,
        seek_mode=("approximate" if index.cfr else "exact") if index is not None else seek_mode_for(root),
        defer_transform=data.transform_device == "cuda",
        dense=data.dense if dense is None else dense,
        random_shift=data.random_shift,
        test_clips=test_clips,
        seed=seed,
        on_bad_sample=data.on_bad_sample,
        max_bad_samples=data.max_bad_samples,
        flip_label_map=dict(data.flip_label_map) if data.flip_label_map else None,
        list_path=str(list_path),
    )
    ds.fewshot_records = fewshot
    if index is not None:
        return ShardDataset(index, ds, keys, shuffle_buffer=data.shuffle_buffer)
    return ds


_NAME_IT = (
    ": name the data with --config CFG or --opts {key}=... (a checkpoint's stored config never supplies data sources)"
)


def _source(data: Any, split: str, allow_pipe: Collection[str] = ()) -> tuple[str, str, ShardIndex | None]:
    """(list path or shard index URL, root folder, shard index or None) of a split, checked. An unset
    source says how to name it: a checkpoint's stored config never names data (`app.weights`)."""
    train = split == "train"
    list_path, root = (data.train_list, data.train_root) if train else (data.val_list, data.val_root)
    index = None
    if data.format == "shards":
        key = "data.train_shards" if train else "data.val_shards"
        url = data.train_shards if train else data.val_shards
        if not url:
            raise UserError(f"{key} is not set (data.format is shards){_NAME_IT.format(key=key)}")
        index = read_shard_index(url, key, allow_pipe)
        list_path, root = index.url, ""
    elif not list_path:
        key = "data.train_list" if train else "data.val_list"
        raise UserError(f"{key} is not set{_NAME_IT.format(key=key)}")
    if root and not os.path.isdir(root):
        raise UserError(f"{'data.train_root' if train else 'data.val_root'} is not a folder: {root}")
    return list_path, root, index


def _kept_records(
    data: Any, split: str, list_path: str, index: ShardIndex | None, num_classes: int | None
) -> tuple[list[VideoRecord], list[int]]:
    """Every record of the list (or shard index), and the indices of those the split keeps: those in a
    shard, and for train / val those with at least `data.min_frames` frames (the original's filter)."""
    if index is None:
        all_records = read_list(list_path, num_classes)
        keys = list(range(len(all_records)))
    else:
        all_records = index.records
        bad = [r for r in all_records if num_classes is not None and r.label >= num_classes]
        if bad:
            raise UserError(
                f"{list_path}: list line {bad[0].line}: label {bad[0].label} is outside the "
                f"{num_classes} classes of {data.label_list}"
            )
        present = {k for ks in index.keys for k in ks}  # samples the writer left out (--skip-bad) are in none
        keys = [i for i in range(len(all_records)) if i in present]
    if split in ("train", "val"):  # video lists have no frame count
        keys = [i for i in keys if all_records[i].num_frames is None or all_records[i].num_frames >= data.min_frames]
        if not keys:
            raise UserError(f"{list_path}: every video has fewer than data.min_frames={data.min_frames} frames")
    return all_records, keys


def seek_mode_for(root: str) -> str:
    """`approximate` (cheaper, right for constant-frame-rate files) for a folder written by
    `python -m datasets.preprocess`, whose files are constant-frame-rate by construction; else `exact`."""
    return "approximate" if root and os.path.isfile(os.path.join(root, CFR_MARKER)) else "exact"


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
    dataset: Any,
    batch_size: int,
    workers: int,
    *,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    reuse_memory: bool = True,
) -> DataLoader:
    """Training: shuffled `TrainSampler` (its `set_epoch` also sets the dataset's epoch).
    Evaluation: `ShardSampler` (every index once over the ranks, no padding). Batches are
    `(clips uint8 (B, V*T, 3, S, S), labels (B,), indices (B,))`; with deferred transforms
    (`data.transform_device: cuda`) the clips are `RawClips`, which `datasets.device_transforms.
    ClipsToDevice` turns into that tensor on the GPU. Tar shards get a `ShardLoader`.
    With `data.decode_device: cuda` the clips are decoded in this process (no workers).
    `reuse_memory` (`data.reuse_freed_memory`) applies `utils.heap.reuse_freed_memory` in the workers."""
    if getattr(dataset, "decode_device", "cpu") == "cuda":
        workers, pin_memory = 0, False  # NVDEC output is already on the GPU; CUDA does not cross fork()
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    collate = collate_raw if getattr(dataset, "defer_transform", False) else None
    init = WorkerInit(seed, rank, reuse_memory) if workers > 0 else None
    if isinstance(dataset, ShardDataset):
        dataset.configure(rank=rank, world_size=world_size, batch_size=batch_size, train=train)
        dataset.set_epoch(epoch)
        return ShardLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=pin_memory,
            worker_init_fn=init,
            collate_fn=collate,
        )
    if train:
        sampler: Any = TrainSampler(dataset, rank, world_size, seed)
        sampler.set_epoch(epoch)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        worker_init_fn=init,
        collate_fn=collate,
        persistent_workers=False,
    )  # workers re-created per epoch: they see set_epoch


def data_remedy(dataset: Any, workers: int, procs_per_node: int = 1, cpus: int | None = None) -> str:
    """What would make this data pipeline faster, for the data-bound alarm (`utils.data_wait`)."""
    ds = dataset.samples if isinstance(dataset, ShardDataset) else dataset
    free = (cpus or os.cpu_count() or 1) // max(1, procs_per_node)
    tips = []
    if workers < free - 1:
        tips.append(f"raise data.workers (now {workers}; this machine has {free} CPUs per training process)")
    if ds.modality == "video":
        if ds.decoder != "torchcodec":
            tips.append(f"decode with torchcodec (now {ds.decoder}; scripts/setup_env.sh installs FFmpeg's libraries)")
        if ds.seek_mode != "approximate":  # not from python -m datasets.preprocess (files or shards)
            tips.append(
                "pre-process the videos once (python -m datasets.preprocess SRC OUT: all-intra H.264, "
                "sampling decodes 8 frames instead of the whole clip; docs/data.md)"
            )
    elif ds.frames is not None and ds.frames.num_frames_from == "dir":
        tips.append("data.num_frames_from: list (no directory listing per sample)")
    if not ds.defer_transform and torch.cuda.is_available():
        tips.append("data.transform_device: cuda (augment on the GPU)")
    if not tips:
        tips.append("more CPU cores per GPU, or a smaller data.input_size / data.num_segments")
    return "remedy: " + "; ".join(tips)
