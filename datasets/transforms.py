"""Clip transforms of the original on a whole uint8 clip tensor (N, 3, H, W)
(docs/data.md#transforms-datasetstransformspy).

Every random decision is drawn once per clip from the `numpy.random.Generator` passed in, so all
frames get the same crop, flip, grayscale, jitter, blur and solarization, and the dataset makes
the draws reproducible (seed, epoch, sample). The image operations are torchvision transforms v2
functionals applied to the stacked clip in one call each (no per-frame PIL loop).

Training computes the random crop box on the *virtual* short-side-resized frame, maps it back to
the source frame and resizes only that region to the input size (bilinear, antialiased): the same
geometry as "resize, then crop, then resize" up to sub-pixel rounding, at a fraction of the cost.
Evaluation resizes the whole frames once (bicubic, antialiased) and slices the crops, which keeps
the original's crop positions exactly (docs/data.md#transforms-datasetstransformspy, 'Val / test').

Normalisation is not part of the transforms: the loader yields uint8 and the engines call
`normalize` on the device (4x less data through the loader).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from utils.choices import TEST_CROPS
from utils.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Box = tuple[int, int, int, int]  # top, left, height, width


def normalize(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (..., 3, H, W) on any device → `dtype`, (x/255 - CLIP mean) / CLIP std.

    One allocation and two in-place passes with the constants folded in (255·mean, 1/(255·std)):
    about 3x faster than the literal formula on a CPU, equal to it within 1e-6."""
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=torch.float64).view(3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(CLIP_STD, device=x.device, dtype=torch.float64).view(3, 1, 1) * 255.0)
    return x.to(dtype).sub_(mean.to(dtype)).mul_(inv_std.to(dtype))


# ----------------------------------------------------------------------------- geometry

Scale = int | tuple[int, int]  # short side, or a fixed (H, W) (`data.scale_size`)


def resized_shape(h: int, w: int, scale: Scale) -> tuple[int, int]:
    """Size after resizing the short side to `scale` (the long side truncated: 340.8 → 340), or the
    fixed (H, W) the original used for its `something` datasets (aspect ratio not kept)."""
    if isinstance(scale, (tuple, list)):
        return int(scale[0]), int(scale[1])
    if w <= h:
        return int(scale * h / w), scale
    return scale, int(scale * w / h)


def as_scale(value: int | Sequence[int]) -> Scale:
    """`data.scale_size` as the transforms take it: an int, or an (H, W) tuple."""
    if isinstance(value, int):
        return value
    return int(value[0]), int(value[1])


def center_crop_box(h: int, w: int, size: int) -> Box:
    """Centre crop as torchvision's: offsets int(round((h - size) / 2)) (halves round to even)."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), size, size


def random_sized_crop_box(h: int, w: int, size: int, rng: np.random.Generator) -> Box:
    """The original's GroupRandomSizedCrop on an (h, w) frame: 10 attempts at area U(0.08, 1) and
    aspect U(3/4, 4/3) with w/h swapped with p 0.5; fallback = short side resized to `size` and a
    random square crop, expressed here as a random square of the short side."""
    area = h * w
    for _ in range(10):
        target = rng.uniform(0.08, 1.0) * area
        aspect = rng.uniform(3.0 / 4.0, 4.0 / 3.0)
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if rng.random() < 0.5:
            cw, ch = ch, cw
        if cw <= w and ch <= h:
            left = int(rng.integers(0, w - cw + 1))
            top = int(rng.integers(0, h - ch + 1))
            return top, left, ch, cw
    side = min(h, w)
    return int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side, side


def fix_offsets(w: int, h: int, crop_w: int, crop_h: int, more: bool) -> list[tuple[int, int]]:
    """TSN's fixed (x, y) crop offsets on a quarter-step grid: 4 corners + centre (+8 with `more`)."""
    ws, hs = (w - crop_w) // 4, (h - crop_h) // 4
    out = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more:
        out += [
            (0, 2 * hs),
            (4 * ws, 2 * hs),
            (2 * ws, 4 * hs),
            (2 * ws, 0),
            (ws, hs),
            (3 * ws, hs),
            (ws, 3 * hs),
            (3 * ws, 3 * hs),
        ]
    return out


def multiscale_crop_box(
    h: int,
    w: int,
    size: int,
    rng: np.random.Generator,
    scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
    max_distort: int = 1,
) -> Box:
    """TSN's GroupMultiScaleCrop: crop sides from `scales` × short side (snapped to `size` within
    3 px), pairs at most `max_distort` scale steps apart, position on the 13-point fixed grid."""
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    snapped = [size if abs(s - size) < 3 else s for s in sizes]
    pairs = [(cw, ch) for i, ch in enumerate(snapped) for j, cw in enumerate(snapped) if abs(i - j) <= max_distort]
    cw, ch = pairs[int(rng.integers(0, len(pairs)))]
    offsets = fix_offsets(w, h, cw, ch, more=True)
    x, y = offsets[int(rng.integers(0, len(offsets)))]
    return y, x, ch, cw


def eval_crop_plan(
    h: int, w: int, input_size: int, scale_size: Scale, crops: int
) -> tuple[tuple[int, int], list[tuple[Box, bool]]]:
    """(resized (h, w), [(box, flipped), ...]) of the original's multi-view test crops, in its order.

    `scale_size` (H, W) resizes to that size instead of the short side.
    1: short side → scale_size, centre crop.  3: short side → scale_size (the original's test.py
    passes scale_size to its 3-crop sampler), crops at x = 0, 4·step, 2·step (left, right, centre;
    step = (W-S)//4), y = 2·((H-S)//4).  5: short side → scale_size,
    upper-left, upper-right, lower-left, lower-right, centre.  10: each of the 5 followed by its flip.
    """
    if crops == 1:
        rh, rw = resized_shape(h, w, scale_size)
        return (rh, rw), [(center_crop_box(rh, rw, input_size), False)]
    if crops == 3:
        rh, rw = resized_shape(h, w, scale_size)
        ws, hs = (rw - input_size) // 4, (rh - input_size) // 4
        xs = [0, 4 * ws, 2 * ws]
        return (rh, rw), [((2 * hs, x, input_size, input_size), False) for x in xs]
    if crops in (5, 10):
        rh, rw = resized_shape(h, w, scale_size)
        plan = []
        for x, y in fix_offsets(rw, rh, input_size, input_size, more=False):
            plan.append(((y, x, input_size, input_size), False))
            if crops == 10:
                plan.append(((y, x, input_size, input_size), True))
        return (rh, rw), plan
    raise ValueError(f"test_crops must be 1, 3, 5 or 10, got {crops}")


def _map_box(box: Box, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Box:
    """A box on a resized frame → the same region on the source frame (rounded to pixels)."""
    top, left, bh, bw = box
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    t, lft = int(round(top * sy)), int(round(left * sx))
    b, r = int(round((top + bh) * sy)), int(round((left + bw) * sx))
    t, lft = min(max(t, 0), to_hw[0] - 1), min(max(lft, 0), to_hw[1] - 1)
    return t, lft, max(1, min(b, to_hw[0]) - t), max(1, min(r, to_hw[1]) - lft)


# ----------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class ClipParams:
    """Every random decision of one training clip: drawn by `TrainTransform.draw`, applied by
    `TrainTransform.apply` here or by `datasets.device_transforms` on a GPU batch."""

    box: Box  # crop on the source frame (top, left, height, width)
    flip: bool = False
    jitter: tuple[tuple[int, float], ...] = ()  # (op, factor) in order: 0 brightness, 1 contrast, 2 saturation, 3 hue
    gray: bool = False
    blur_sigma: float | None = None
    solarize: bool = False
    randaug_seed: int | None = None


@dataclass
class TrainTransform:
    """Training augmentation; `__call__(clip, rng) -> (clip uint8 (N,3,S,S), flipped)`."""

    input_size: int = 224
    scale_size: Scale = 256
    flip_prob: float = 0.5
    grayscale_prob: float = 0.2
    crop: str = "random_resized"  # or "multiscale"
    color_jitter_prob: float = 0.0
    blur_prob: float = 0.0
    solarize_prob: float = 0.0
    randaug: tuple[int, int] | None = None  # (N, M)
    randaug_per_frame: bool = True

    def crop_box(self, h: int, w: int, rng: np.random.Generator) -> Box:
        """The crop on the source (h, w) frame, drawn on the virtual resized frame."""
        rh, rw = resized_shape(h, w, self.scale_size)
        if self.crop == "multiscale":
            box = multiscale_crop_box(rh, rw, self.input_size, rng)
        elif self.crop == "random_resized":
            box = random_sized_crop_box(rh, rw, self.input_size, rng)
        else:
            raise ValueError(f"unknown train crop {self.crop!r}")
        return _map_box(box, (rh, rw), (h, w))

    def draw(self, h: int, w: int, rng: np.random.Generator) -> ClipParams:
        """All random decisions for an (h, w) source clip, in a fixed order of draws from `rng`."""
        seed = int(rng.integers(0, 2**62)) if self.randaug is not None else None
        box = self.crop_box(h, w, rng)
        flip = bool(rng.random() < self.flip_prob)
        jitter: tuple[tuple[int, float], ...] = ()
        if self.color_jitter_prob > 0 and rng.random() < self.color_jitter_prob:
            factors = (
                float(rng.uniform(0.6, 1.4)),
                float(rng.uniform(0.6, 1.4)),
                float(rng.uniform(0.8, 1.2)),
                float(rng.uniform(-0.1, 0.1)),
            )
            jitter = tuple((int(k), factors[int(k)]) for k in rng.permutation(4))
        gray = bool(rng.random() < self.grayscale_prob)
        sigma = None
        if self.blur_prob > 0 and rng.random() < self.blur_prob:
            sigma = float(rng.uniform(0.1, 2.0))
        solarize = bool(self.solarize_prob > 0 and rng.random() < self.solarize_prob)
        return ClipParams(box, flip, jitter, gray, sigma, solarize, seed)

    def apply(self, clip: torch.Tensor, p: ClipParams) -> torch.Tensor:
        """The augmentation `p` on one clip (N, 3, H, W) uint8, on any device."""
        if p.randaug_seed is not None:
            clip = self.randaugment(clip, p.randaug_seed)
        top, left, bh, bw = p.box
        size = [self.input_size, self.input_size]
        clip = F.resized_crop(clip, top, left, bh, bw, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        if p.flip:
            clip = F.horizontal_flip(clip)
        if p.jitter:
            clip = color_jitter(clip, p.jitter)
        if p.gray:
            clip = F.rgb_to_grayscale(clip, num_output_channels=3)
        if p.blur_sigma is not None:
            clip = gaussian_blur(clip, p.blur_sigma)
        if p.solarize:
            clip = F.solarize(clip, threshold=128)
        # channels-last strides are kept: the loader's collate copies into the batch anyway
        return clip

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, bool]:
        p = self.draw(clip.shape[-2], clip.shape[-1], rng)
        return self.apply(clip, p), p.flip

    def randaugment(self, clip: torch.Tensor, seed: int) -> torch.Tensor:
        """RandAugment(N, M) per frame or per clip. v2.RandAugment draws from torch's global CPU RNG:
        fork it so the caller's stream is untouched, and seed it so the draw is reproducible."""
        assert self.randaug is not None
        n, m = self.randaug
        op = v2.RandAugment(num_ops=n, magnitude=m)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.randaug_per_frame:
                return torch.stack([op(frame) for frame in clip])
            return op(clip)


_JITTER_OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def color_jitter(clip: torch.Tensor, ops: Sequence[tuple[int, float]]) -> torch.Tensor:
    """ColorJitter(brightness .4, contrast .4, saturation .2, hue .1) with one draw per clip:
    `ops` = (op index, factor) in the drawn order."""
    for k, factor in ops:
        clip = _JITTER_OPS[k](clip, factor)
    return clip


def gaussian_blur(clip: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(clip, [k, k], [sigma, sigma])


@dataclass
class EvalTransform:
    """Validation/test views; `__call__(clip) -> uint8 (crops*N, 3, S, S)`, crop-major."""

    input_size: int = 224
    scale_size: Scale = 256
    crops: int = 1

    def __post_init__(self) -> None:
        if self.crops not in TEST_CROPS:
            raise UserError(f"--test_crops must be one of {', '.join(map(str, TEST_CROPS))}, got {self.crops}")

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, bool]:
        (rh, rw), plan = eval_crop_plan(clip.shape[-2], clip.shape[-1], self.input_size, self.scale_size, self.crops)
        if (rh, rw) != tuple(clip.shape[-2:]):
            clip = F.resize(clip, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
        views = []
        for (top, left, bh, bw), flip in plan:
            view = clip[..., top : top + bh, left : left + bw]
            views.append(F.horizontal_flip(view) if flip else view)
        return torch.cat(views), False
