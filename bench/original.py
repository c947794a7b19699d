"""The original's data pipeline, written for the benchmark: decord frame by frame, PIL per frame."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.k400_like import FOLDERS, FPS, SECONDS, T
from datasets.sampling import sample_indices
from datasets.transforms import CLIP_MEAN, CLIP_STD


class Original:
    """The original's Video_dataset + group transforms: frame by frame with decord / PIL."""

    def __init__(self, root: Path, names: list[str], video: bool, train: bool):
        self.root, self.names, self.video, self.train = root, names, video, train
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def load(self, i: int) -> torch.Tensor:
        n = SECONDS * FPS
        if self.train:
            idx = sample_indices(n, T, mode="train", rng=np.random.default_rng(i))
        else:
            idx = sample_indices(n, T, mode="test", clips=4)
        if self.video:
            import decord

            vr = decord.VideoReader(str(self.root / "raw" / self.names[i]), num_threads=1)
            imgs = [Image.fromarray(vr[p].asnumpy()).convert("RGB") for p in idx]
        else:
            folder = self.root / FOLDERS["frames"] / self.names[i][:-4]
            len(os.listdir(folder))  # the original counted the files of every folder it read
            imgs = [Image.open(folder / f"img_{p + 1:05d}.jpg").convert("RGB") for p in idx]
        imgs = self._train(imgs) if self.train else self._test3(imgs)
        x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).float() / 255.0
        return (x - self.mean) / self.std

    @staticmethod
    def _scale(imgs: list[Image.Image], size: int) -> list[Image.Image]:
        w, h = imgs[0].size
        ow, oh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
        return [im.resize((ow, oh), Image.Resampling.BICUBIC) for im in imgs]

    def _train(self, imgs: list[Image.Image]) -> list[Image.Image]:
        imgs = self._scale(imgs, 256)
        w, h = imgs[0].size
        for _ in range(10):
            area = random.uniform(0.08, 1.0) * w * h
            ar = random.uniform(3 / 4, 4 / 3)
            cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if random.random() < 0.5:
                cw, ch = ch, cw
            if cw <= w and ch <= h:
                x, y = random.randint(0, w - cw), random.randint(0, h - ch)
                imgs = [im.crop((x, y, x + cw, y + ch)).resize((224, 224), Image.Resampling.BILINEAR) for im in imgs]
                break
        else:
            imgs = self._scale(imgs, 224)
            w, h = imgs[0].size
            x, y = random.randint(0, w - 224), random.randint(0, h - 224)
            imgs = [im.crop((x, y, x + 224, y + 224)) for im in imgs]
        if random.random() < 0.5:
            imgs = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in imgs]
        if random.random() < 0.2:
            imgs = [ImageOps.grayscale(im).convert("RGB") for im in imgs]
        return imgs

    def _test3(self, imgs: list[Image.Image]) -> list[Image.Image]:
        imgs = self._scale(imgs, 256)
        w, h = imgs[0].size
        ws, hs = (w - 224) // 4, (h - 224) // 4
        out = []
        for x, y in ((0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)):
            out += [im.crop((x, y, x + 224, y + 224)) for im in imgs]
        return out
