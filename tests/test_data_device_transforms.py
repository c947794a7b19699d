"""Batched clip transforms (`data.transform_device: cuda`) equal the per-clip CPU transforms pixel for
pixel on CPU tensors, with the same random draws; the deferred loader gives the same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import build_dataset, build_loader
from datasets.device_transforms import BatchTransform, ClipsToDevice, RawClips, collate_raw
from datasets.transforms import EvalTransform, TrainTransform, normalize
from utils.config import resolve, to_config


def _clips(sizes: list[tuple[int, int]], n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # channels-last strides, as the decoders return them
    return [torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8).permute(0, 3, 1, 2) for h, w in sizes]


@pytest.mark.parametrize("randaug,scale", [(None, 40), ((2, 9), 40), (None, (40, 60))])
def test_batched_train_transform_equals_per_clip(randaug, scale):
    tf = TrainTransform(
        input_size=32, scale_size=scale, color_jitter_prob=0.5, blur_prob=0.5, solarize_prob=0.5, randaug=randaug
    )
    for sizes in ([(48, 64)] * 8, [(48, 64), (64, 48), (40, 40), (50, 90), (48, 64), (70, 52)]):
        clips = _clips(sizes)
        ref, params = [], []
        for i, clip in enumerate(clips):
            ref.append(tf(clip, np.random.default_rng([1, i]))[0])
            params.append(tf.draw(clip.shape[-2], clip.shape[-1], np.random.default_rng([1, i])))
        frames = torch.stack(clips) if len(set(sizes)) == 1 else clips
        out = BatchTransform(tf)(frames, params)
        assert out.shape == (len(clips), 4, 3, 32, 32) and out.dtype == torch.uint8
        assert torch.equal(out, torch.stack(ref))
    if scale != 40:
        return
    # every kind of decision happened at least once in the draws above
    drawn = [tf.draw(48, 64, np.random.default_rng([1, i])) for i in range(8)]
    assert {p.flip for p in drawn} == {True, False} and any(p.jitter for p in drawn)
    assert any(p.blur_sigma for p in drawn) and any(p.solarize for p in drawn) and any(p.gray for p in drawn)


def test_batched_train_transform_normalises():
    tf = TrainTransform(input_size=32, scale_size=40)
    clips = _clips([(48, 64)] * 3)
    params = [tf.draw(48, 64, np.random.default_rng(i)) for i in range(3)]
    raw = BatchTransform(tf)(torch.stack(clips), params)
    assert torch.equal(BatchTransform(tf, normalize=True)(RawClips(torch.stack(clips), list(params))), normalize(raw))
    with pytest.raises(ValueError, match="need their ClipParams"):
        BatchTransform(tf)(torch.stack(clips), None)


@pytest.mark.parametrize("crops,scale", [(1, 40), (3, 40), (5, 40), (10, 40), (3, (40, 60))])
def test_batched_eval_transform_equals_per_clip(crops, scale):
    tf = EvalTransform(input_size=32, scale_size=scale, crops=crops)
    for sizes in ([(48, 72)] * 3, [(48, 72), (72, 48), (40, 60)]):
        clips = _clips(sizes)
        frames = torch.stack(clips) if len(set(sizes)) == 1 else clips
        out = BatchTransform(tf)(frames)
        assert out.shape == (3, crops * 4, 3, 32, 32)
        assert torch.equal(out, torch.stack([tf(c)[0] for c in clips]))


def _cfg(syn: Path, video: bool, **data):
    d = {
        "dataset": "syn",
        "num_segments": 4,
        "input_size": 32,
        "label_list": str(syn / "labels.csv"),
        "train_root": str(syn / ("videos" if video else "frames")),
        "val_root": str(syn / ("videos" if video else "frames")),
        "train_list": str(syn / ("train_video.txt" if video else "train.txt")),
        "val_list": str(syn / ("val_video.txt" if video else "val.txt")),
        "modality": "video" if video else "RGB",
        "color_jitter_prob": 0.5,
        "flip_label_map": {0: 1, 1: 0},
    }
    d.update(data)
    return to_config(resolve({"seed": 5, "data": d}, "test"))


@pytest.mark.parametrize("video", [False, True])
def test_deferred_loader_gives_the_same_batches(syn, video):
    for split, kw in (("train", {}), ("test", {"test_crops": 3, "test_clips": 2})):
        cpu = build_dataset(_cfg(syn, video), split, **kw)
        deferred = build_dataset(_cfg(syn, video, transform_device="cuda"), split, **kw)
        assert deferred.defer_transform and not cpu.defer_transform
        a = build_loader(cpu, 4, 0, train=split == "train", seed=5)
        b = build_loader(deferred, 4, 2, train=split == "train", seed=5)
        move = ClipsToDevice(deferred.transform, "cpu")
        compared = 0
        for (ca, la, ia), (cb, lb, ib) in zip(a, b, strict=True):
            compared += len(ia)
            assert isinstance(cb, RawClips) and isinstance(ca, torch.Tensor)
            assert torch.equal(ia, ib) and torch.equal(la, lb)  # flipped labels swapped in both
            assert torch.equal(move(cb), ca)
            assert torch.equal(ClipsToDevice(None, "cpu")(ca), ca)
        assert compared == len(cpu) > 0


def test_collate_raw_keeps_different_sizes_apart():
    clips = _clips([(48, 64), (40, 40)])
    raw, labels, idx = collate_raw([(clips[0], 3, 0, None), (clips[1], 1, 5, None)])
    assert isinstance(raw.frames, list) and len(raw) == 2
    assert labels.tolist() == [3, 1] and idx.tolist() == [0, 5]
    same, _, _ = collate_raw([(clips[0], 3, 0, None), (clips[0], 1, 5, None)])
    assert isinstance(same.frames, torch.Tensor) and same.frames.shape == (2, 4, 3, 48, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_transforms_on_cuda_match_cpu():
    tf = TrainTransform(input_size=32, scale_size=40, color_jitter_prob=0.5, blur_prob=0.5, solarize_prob=0.5)
    clips = torch.stack(_clips([(48, 64)] * 6))
    params = [tf.draw(48, 64, np.random.default_rng([1, i])) for i in range(6)]
    cpu = BatchTransform(tf)(clips, params)
    gpu = BatchTransform(tf)(clips.cuda(), params)
    assert gpu.is_cuda and gpu.dtype == torch.uint8
    # torchvision resizes uint8 on CUDA through float32: at most a grey level or two from the CPU kernel
    assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 1.0
    ev = EvalTransform(input_size=32, scale_size=40, crops=3)
    assert (BatchTransform(ev)(clips.cuda()).cpu().int() - BatchTransform(ev)(clips).int()).abs().max() <= 2
