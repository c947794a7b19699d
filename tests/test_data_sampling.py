"""datasets.sampling: exact 0-based index lists for hand-worked cases
(docs/data.md#frame-sampling-datasetssamplingpy)."""

import numpy as np
import pytest

from datasets import sampling as S
from datasets.sampling import (
    dense_test_indices,
    dense_train_indices,
    dense_val_indices,
    sample_indices,
    train_indices,
    val_indices,
)


class FixedRng:
    """Stands in for numpy's Generator: `integers(low, high)` returns low + offset (clamped to high-1)."""

    def __init__(self, offset=0, extras=None):
        self.offset, self.extras, self.calls = offset, extras, []

    def integers(self, low, high, size=None):
        self.calls.append((low, high, size))
        if size is not None:
            return np.array(self.extras[:size])
        return min(low + self.offset, high - 1)


def test_train_segments_n300_T8():
    # bounds floor(i*300/8) = 0,37,75,112,150,187,225,262,300
    assert train_indices(300, 8, FixedRng(0)) == [0, 37, 75, 112, 150, 187, 225, 262]
    assert train_indices(300, 8, FixedRng(10**6)) == [36, 74, 111, 149, 186, 224, 261, 299]
    rng = FixedRng(0)
    train_indices(300, 8, rng)
    assert [c[:2] for c in rng.calls] == [(0, 37), (0, 38), (0, 37), (0, 38), (0, 37), (0, 38), (0, 37), (0, 38)]


def test_train_short_video_takes_every_frame_plus_sorted_extras():
    assert train_indices(5, 8, FixedRng(extras=[4, 0, 2])) == [0, 0, 1, 2, 2, 3, 4, 4]
    assert train_indices(8, 8, FixedRng(extras=[])) == list(range(8))  # n = T: every frame once
    real = train_indices(3, 8, np.random.default_rng(0))
    assert real == sorted(real) and set(real) == {0, 1, 2} and len(real) == 8


def test_train_random_draws_stay_in_their_segment():
    rng = np.random.default_rng(1)
    bounds = [(i * 300) // 8 for i in range(9)]
    for _ in range(200):
        idx = train_indices(300, 8, rng)
        assert all(bounds[i] <= idx[i] < bounds[i + 1] for i in range(8))


def test_val_first_frame_of_each_segment():
    assert val_indices(300, 8) == [0, 37, 75, 112, 150, 187, 225, 262]
    assert val_indices(8, 8) == list(range(8))
    assert val_indices(5, 8) == [0, 0, 1, 1, 2, 3, 3, 4]


def test_test_one_clip_equals_val():
    for n in (5, 8, 9, 300, 1000):
        assert S.eval_indices(n, 8, 1) == val_indices(n, 8)


def test_test_four_clips_n300():
    # tick 37.5; starts = int(linspace(0, 36.5, 4)) = 0, 12, 24, 36
    assert S.eval_indices(300, 8, 4) == [
        0,
        37,
        75,
        112,
        150,
        187,
        225,
        262,
        12,
        49,
        87,
        124,
        162,
        199,
        237,
        274,
        24,
        61,
        99,
        136,
        174,
        211,
        249,
        286,
        36,
        73,
        111,
        148,
        186,
        223,
        261,
        298,
    ]


def test_test_four_clips_short_video_starts_truncate_to_zero():
    # tick 0.625 < 1: linspace(0, -0.375, 4) truncates to 0 (numpy < 1.20); numpy >= 1.20 floors to -1 and the
    # original then wrapped the first index to the last frame -- fixed here
    # (docs/data.md#differences-from-the-original-data).
    assert S.eval_indices(5, 8, 4) == [0, 0, 1, 1, 2, 3, 3, 4] * 4
    assert S.eval_indices(8, 8, 4) == list(range(8)) * 4


def test_dense_train():
    # stride 128 // 8 = 16; start drawn in [0, n - 128] inclusive
    rng = FixedRng(10)
    assert dense_train_indices(300, 8, rng) == [10 + 16 * i for i in range(8)]
    assert rng.calls == [(0, 173, None)]
    assert dense_train_indices(300, 8, FixedRng(10**6)) == [172 + 16 * i for i in range(8)]
    assert dense_train_indices(100, 8, FixedRng(5)) == [(16 * i) % 100 for i in range(8)]  # n <= 128: start 0


def test_dense_short_video_wraps_as_original():
    assert dense_val_indices(9, 8) == [0, 7, 5, 3, 1, 8, 6, 4]  # 1-based: 1,8,6,4,2,9,7,5


def test_dense_test_clips():
    # step = (300 - 128) // 3 = 57
    assert dense_test_indices(300, 8, 4) == [k * 57 + 16 * i for k in range(4) for i in range(8)]
    # one clip: start 0 (the original divided by zero)
    assert dense_test_indices(300, 8, 1) == [16 * i for i in range(8)]
    assert dense_val_indices(300, 8) == [16 * i for i in range(8)]
    assert dense_test_indices(100, 8, 2) == [(16 * i) % 100 for i in range(8)] * 2


def test_dispatch():
    rng = np.random.default_rng(0)
    assert sample_indices(300, 8, mode="val") == val_indices(300, 8)
    assert sample_indices(300, 8, mode="train", random_shift=False) == val_indices(300, 8)
    assert sample_indices(300, 8, mode="test", clips=4) == S.eval_indices(300, 8, 4)
    assert sample_indices(300, 8, mode="test", clips=2, dense=True) == dense_test_indices(300, 8, 2)
    a = sample_indices(300, 8, mode="train", rng=np.random.default_rng(3))
    assert a == train_indices(300, 8, np.random.default_rng(3))
    with pytest.raises(ValueError):
        sample_indices(0, 8, mode="val")
    del rng
