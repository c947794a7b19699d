"""datasets.transforms: crop boxes of the original's test crops, clip-consistent random decisions,
the virtual-resize crop matching resize-then-crop, normalisation."""

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from datasets.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    EvalTransform,
    TrainTransform,
    _map_box,
    center_crop_box,
    eval_crop_plan,
    multiscale_crop_box,
    normalize,
    random_sized_crop_box,
    resized_shape,
)
from utils.errors import UserError


def _clip(t=4, h=64, w=86, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def test_resized_shape_truncates_long_side():
    assert resized_shape(320, 426, 256) == (256, 340)  # 340.8 -> 340
    assert resized_shape(426, 320, 256) == (340, 256)
    assert resized_shape(256, 340, 224) == (224, 297)  # 297.5 -> 297
    assert resized_shape(100, 100, 224) == (224, 224)


def test_center_crop_rounds_half_to_even():
    assert center_crop_box(256, 340, 224) == (16, 58, 224, 224)
    assert center_crop_box(257, 341, 224) == (16, 58, 224, 224)  # 16.5 -> 16, 58.5 -> 58
    assert center_crop_box(259, 343, 224) == (18, 60, 224, 224)  # 17.5 -> 18, 59.5 -> 60


def test_crop_plan_1_3_5_10_landscape():
    # source 256 x 340, input 224, scale 256
    assert eval_crop_plan(256, 340, 224, 256, 1) == ((256, 340), [((16, 58, 224, 224), False)])
    # 3 crops: short side -> scale 256 (340 wide), steps 29 (x) and 8 (y): left, right, centre
    size3, plan3 = eval_crop_plan(256, 340, 224, 256, 3)
    assert size3 == (256, 340)
    assert plan3 == [((16, 0, 224, 224), False), ((16, 116, 224, 224), False), ((16, 58, 224, 224), False)]
    # 5 crops on 256 x 340: steps 29 (x) and 8 (y): UL, UR, LL, LR, centre
    size5, plan5 = eval_crop_plan(256, 340, 224, 256, 5)
    assert size5 == (256, 340)
    boxes5 = [(0, 0), (0, 116), (32, 0), (32, 116), (16, 58)]
    assert plan5 == [((t, x0, 224, 224), False) for t, x0 in boxes5]
    _, plan10 = eval_crop_plan(256, 340, 224, 256, 10)
    assert plan10 == [((t, x0, 224, 224), f) for t, x0 in boxes5 for f in (False, True)]
    with pytest.raises(ValueError):
        eval_crop_plan(256, 340, 224, 256, 4)


def test_three_crops_on_portrait_frames_stay_on_one_row():
    size, plan = eval_crop_plan(340, 256, 224, 256, 3)
    assert size == (340, 256)
    assert [b for b, _ in plan] == [(58, 0, 224, 224), (58, 32, 224, 224), (58, 16, 224, 224)]
    # at scale_size == input_size (336 models) the three crops of a portrait frame coincide
    # (docs/data.md#transforms-datasetstransformspy)
    _, plan336 = eval_crop_plan(448, 336, 336, 336, 3)
    assert [b for b, _ in plan336] == [(56, 0, 336, 336)] * 3


def test_eval_transform_views_are_slices_of_the_resized_clip_crop_major():
    clip = _clip(3, 40, 60)
    out, _ = EvalTransform(input_size=32, scale_size=36, crops=10)(clip)
    assert out.shape == (10 * 3, 3, 32, 32)
    (rh, rw), plan = eval_crop_plan(40, 60, 32, 36, 10)
    resized = F.resize(clip, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    for v, ((t, x0, h, w), flip) in enumerate(plan):
        ref = resized[..., t : t + h, x0 : x0 + w]
        ref = F.horizontal_flip(ref) if flip else ref
        assert torch.equal(out[v * 3 : (v + 1) * 3], ref)
    # one crop = resize + centre crop; a frame already at scale_size is not resized
    clip2 = _clip(2, 36, 48)
    out1, _ = EvalTransform(32, 36, 1)(clip2)
    assert torch.equal(out1, clip2[..., 2:34, 8:40])


def test_random_sized_crop_box_bounds_and_fallback():
    rng = np.random.default_rng(0)
    for _ in range(300):
        t, x0, h, w = random_sized_crop_box(256, 340, 224, rng)
        assert t >= 0 and t + h <= 256 and x0 >= 0 and x0 + w <= 340
        assert 0.08 * 256 * 340 * 0.9 <= h * w <= 256 * 340

    class NeverFits:  # every attempt too large: fallback to a square of the short side
        def uniform(self, a, b):
            return b

        def random(self):
            return 0.9

        def integers(self, low, high):
            return high - 1

    assert random_sized_crop_box(10, 10, 8, NeverFits()) == (0, 0, 10, 10)
    assert random_sized_crop_box(10, 30, 8, NeverFits()) == (0, 20, 10, 10)


def test_multiscale_crop_box_on_grid():
    rng = np.random.default_rng(0)
    sizes = {256, 224, 192, 168}  # int(256*s), 224 snapped
    for _ in range(200):
        t, x0, h, w = multiscale_crop_box(256, 340, 224, rng)
        assert h in sizes and w in sizes
        assert x0 % ((340 - w) // 4 or 1) == 0 and t % ((256 - h) // 4 or 1) == 0
        assert t + h <= 256 and x0 + w <= 340


def test_train_random_decisions_shared_by_all_frames():
    frame = _clip(1, 48, 64, seed=3)
    clip = frame.repeat(6, 1, 1, 1)
    tf = TrainTransform(
        input_size=32,
        scale_size=40,
        flip_prob=0.5,
        grayscale_prob=0.5,
        color_jitter_prob=0.5,
        blur_prob=0.5,
        solarize_prob=0.5,
        randaug=(2, 9),
        randaug_per_frame=False,
    )
    flips = []
    for seed in range(16):
        out, flipped = tf(clip, np.random.default_rng(seed))
        flips.append(flipped)
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[i]) for i in range(1, 6))
    assert any(flips) and not all(flips)


def test_randaug_per_frame_differs_between_frames():
    clip = _clip(1, 48, 64, seed=3).repeat(6, 1, 1, 1)
    tf = TrainTransform(
        input_size=32, scale_size=40, flip_prob=0, grayscale_prob=0, randaug=(2, 9), randaug_per_frame=True
    )
    out, _ = tf(clip, np.random.default_rng(0))
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 6))
    state = torch.get_rng_state()
    tf(clip, np.random.default_rng(0))
    assert torch.equal(state, torch.get_rng_state())  # the global torch RNG is untouched


def test_flip_is_the_only_difference_for_the_same_draw():
    clip = _clip(4, 48, 64, seed=5)
    base = TrainTransform(input_size=32, scale_size=40, flip_prob=0.0, grayscale_prob=0.0)
    flip = TrainTransform(input_size=32, scale_size=40, flip_prob=1.0, grayscale_prob=0.0)
    a, fa = base(clip, np.random.default_rng(7))
    b, fb = flip(clip, np.random.default_rng(7))
    assert (fa, fb) == (False, True)
    assert torch.equal(F.horizontal_flip(a), b)
    gray = TrainTransform(input_size=32, scale_size=40, flip_prob=0.0, grayscale_prob=1.0)
    g, _ = gray(clip, np.random.default_rng(7))
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])


def test_virtual_resize_crop_matches_resize_then_crop():
    # smooth image so the two interpolation paths agree closely when the geometry is the same
    h, w = 120, 160
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)]).to(torch.uint8)[None]
    tf = TrainTransform(input_size=48, scale_size=64, flip_prob=0, grayscale_prob=0)
    for seed in range(5):
        out, _ = tf(img, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rh, rw = resized_shape(h, w, 64)
        t, x0, bh, bw = random_sized_crop_box(rh, rw, 48, rng)
        resized = F.resize(img, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
        ref = F.resize(
            resized[..., t : t + bh, x0 : x0 + bw], [48, 48], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        assert (out.float() - ref.float()).abs().mean() < 2.0


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2).clone()
    y = normalize(x)
    assert y.dtype == torch.float32
    for c in range(3):
        assert y[c, 0, 0].item() == pytest.approx(-CLIP_MEAN[c] / CLIP_STD[c], rel=1e-6)
        assert y[c, 0, 1].item() == pytest.approx((1 - CLIP_MEAN[c]) / CLIP_STD[c], rel=1e-6)
    assert normalize(_clip(2, 4, 4)[None]).shape == (1, 2, 3, 4, 4)


def test_map_box_exact_against_hand_computation():
    """A box on the virtual resized frame -> the source frame: each edge scaled and rounded to the
    nearest pixel (halves to even), clamped to the frame; an off-by-one anywhere changes these."""
    # 120 x 160 source, short side -> 64: virtual frame 64 x 85; sy = 120/64 = 1.875, sx = 160/85
    # top 10 -> 18.75 -> 19; left 20 -> 37.65 -> 38; bottom 40 -> 75; right 60 -> 112.94 -> 113
    assert _map_box((10, 20, 30, 40), (64, 85), (120, 160)) == (19, 38, 56, 75)
    assert _map_box((0, 0, 64, 85), (64, 85), (120, 160)) == (0, 0, 120, 160)  # whole frame
    # touching the bottom-right corner: top 63.75 -> 64, left 84.71 -> 85, bottom/right = frame edge
    assert _map_box((34, 45, 30, 40), (64, 85), (120, 160)) == (64, 85, 56, 75)
    # x1.5: 1.5 -> 2, 4.5 -> 4, 16.5 -> 16, 19.5 -> 20 (Python's round: halves to even)
    assert _map_box((1, 3, 10, 10), (64, 64), (96, 96)) == (2, 4, 14, 16)
    assert _map_box((3, 4, 5, 6), (50, 60), (50, 60)) == (3, 4, 5, 6)  # same size: unchanged
    # downscaling (a source smaller than scale_size): 0.5 -> 0 (even), bottom 6 * 0.5 = 3
    assert _map_box((1, 1, 5, 5), (64, 64), (32, 32)) == (0, 0, 3, 3)


@pytest.mark.parametrize("crop", ["random_resized", "multiscale"])
def test_train_crop_box_is_the_virtual_box_mapped_to_the_source(crop):
    h, w = 120, 160
    tf = TrainTransform(input_size=48, scale_size=64, crop=crop)
    rh, rw = resized_shape(h, w, 64)
    assert (rh, rw) == (64, 85)
    draw = random_sized_crop_box if crop == "random_resized" else multiscale_crop_box
    for seed in range(20):
        t, x, bh, bw = draw(rh, rw, 48, np.random.default_rng(seed))
        top, left = round(t * h / rh), round(x * w / rw)
        bottom, right = round((t + bh) * h / rh), round((x + bw) * w / rw)
        expected = (top, left, bottom - top, right - left)
        assert tf.crop_box(h, w, np.random.default_rng(seed)) == expected, seed


def test_multiscale_crop_pairs_are_the_originals():
    """GroupMultiScaleCrop(224, [1, .875, .75, .66]), max_distort 1 on a 256 x 340 frame: sides
    int(256 * s) = 256, 224, 192, 168 (224 snapped to the input size), and every (w, h) pair of
    sides at most one scale step apart, non-square ones included (docs/data.md#transforms-datasetstransformspy)."""
    expected = {
        (256, 256),
        (224, 256),
        (256, 224),
        (224, 224),
        (192, 224),
        (224, 192),
        (192, 192),
        (168, 192),
        (192, 168),
        (168, 168),
    }
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(1000):
        _, _, h, w = multiscale_crop_box(256, 340, 224, rng)
        seen.add((w, h))
    assert seen == expected
    # 240 x 320 (the 'something' frames): 240, 210, 180, 158 (none within 3 px of 224)
    seen = {(w, h) for _, _, h, w in (multiscale_crop_box(240, 320, 224, rng) for _ in range(1000))}
    assert seen == {
        (240, 240),
        (210, 240),
        (240, 210),
        (210, 210),
        (180, 210),
        (210, 180),
        (180, 180),
        (158, 180),
        (180, 158),
        (158, 158),
    }
    # positions: the 13 fixed offsets of the pair, all of them reachable
    offsets = {
        (t, x) for t, x, h, w in (multiscale_crop_box(256, 340, 224, rng) for _ in range(3000)) if (w, h) == (192, 224)
    }
    ws, hs = (340 - 192) // 4, (256 - 224) // 4  # 37, 8
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    assert offsets == {(y * hs, x * ws) for x, y in grid}


def test_fixed_size_resize_as_the_originals_something_datasets():
    """`data.scale_size: [H, W]` resizes every frame to H x W (aspect not kept), then crops as usual."""
    assert resized_shape(256, 340, (240, 320)) == (240, 320)
    assert resized_shape(480, 360, (240, 320)) == (240, 320)  # portrait too: fixed size
    size1, plan1 = eval_crop_plan(256, 340, 224, (240, 320), 1)
    assert size1 == (240, 320) and plan1 == [((8, 48, 224, 224), False)]
    size3, plan3 = eval_crop_plan(480, 360, 224, (240, 320), 3)
    assert size3 == (240, 320) and [box[:2] for box, _ in plan3] == [(8, 0), (8, 96), (8, 48)]
    clip = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, _ = EvalTransform(input_size=32, scale_size=(40, 60), crops=1)(clip)
    ref = F.resize(clip, [40, 60], interpolation=InterpolationMode.BICUBIC, antialias=True)[..., 4:36, 14:46]
    assert torch.equal(views, ref)


def test_fixed_size_multiscale_train_crop_is_drawn_on_the_fixed_frame():
    rng = np.random.default_rng(0)
    tf = TrainTransform(input_size=224, scale_size=(240, 320), crop="multiscale")
    sizes = {int(240 * s) if abs(int(240 * s) - 224) > 3 else 224 for s in (1, 0.875, 0.75, 0.66)}
    for _ in range(100):
        top, left, h, w = tf.crop_box(480, 640, rng)  # a 2x larger source: boxes scale by 2
        assert h % 2 == 0 and w % 2 == 0 and h // 2 in sizes and w // 2 in sizes


@pytest.mark.parametrize(
    "scale,message",
    [
        ([240], "two positive integers"),
        ([240, 320, 3], "two positive integers"),
        ([240, "x"], "each element must be a number >= 1"),
        ([100, 320], "smaller than data.input_size 224"),
        (200, "smaller than data.input_size 224"),
    ],
)
def test_scale_size_values_checked(scale, message):
    from utils.config import resolve

    with pytest.raises(UserError, match=message):
        resolve({"data": {"scale_size": scale}}, "cfg.yaml")


def test_scale_size_list_reaches_the_dataset(tmp_path):
    from datasets import build_dataset
    from datasets.synthetic import generate
    from utils.config import resolve, to_config

    generate(tmp_path, classes=2, videos_per_class=1, val_videos_per_class=1, frames=4, size=48, fmt="frames")
    cfg = to_config(
        resolve(
            {
                "data": {
                    "num_segments": 2,
                    "input_size": 32,
                    "scale_size": [40, 60],
                    "val_root": str(tmp_path / "frames"),
                    "val_list": str(tmp_path / "val.txt"),
                    "label_list": str(tmp_path / "labels.csv"),
                }
            },
            "t",
        )
    )
    ds = build_dataset(cfg, "test")
    clip, _, _ = ds[0]
    assert tuple(clip.shape) == (2, 3, 32, 32)
    assert ds.transform.scale_size == (40, 60)
