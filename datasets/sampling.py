"""Frame-index sampling of the original, as pure functions of (n, T, clips, rng)
(docs/data.md#frame-sampling-datasetssamplingpy).

n = frames in the folder/video, T = frames per clip (`num_segments`). Every function returns
0-based indices (a list of ints); the dataset adds `index_bias` when it names frame files. Multi-clip
results are clip-major (clip 0's T indices, then clip 1's, ...).

Differences from the original, all deliberate (docs/data.md, "Sampling"):
- The RNG is an explicit `numpy.random.Generator` (the dataset derives it from seed, epoch and
  sample index) instead of numpy's global state, so workers never repeat offsets and a run is
  reproducible whatever the worker count.
- Uniform multi-clip test on videos shorter than T (tick < 1): the clip start offsets are
  truncated towards zero (all 0), as numpy < 1.20 did (np.linspace with an int dtype); numpy >= 1.20
  floors them to -1, which wraps the first index to the last frame
  (docs/data.md#differences-from-the-original-data).
- Dense test with one clip starts at frame 0 instead of dividing by zero.
- Dense validation (train-time) is deterministic: the same window as a one-clip dense test
  (start 0), where the original drew a random start.
- Dense training draws the start uniformly from [0, n - window] (the original's exclusive upper
  bound never reached the last position).
Kept as the original: dense windows longer than the video wrap modulo n, so for n < window the
frame order is scrambled (T=8, n=9 gives 0,7,5,3,1,8,6,4).
"""

from __future__ import annotations

import numpy as np

DENSE_WINDOW = 128


def _check(n: int, T: int) -> None:
    if n <= 0:
        raise ValueError(f"cannot sample from a video with {n} frames")
    if T <= 0:
        raise ValueError(f"num_segments must be positive, got {T}")


def train_indices(n: int, T: int, rng: np.random.Generator) -> list[int]:
    """Segment-based training sampling: one random frame inside each of T equal segments.

    n <= T: every frame once plus T-n random extra frames, sorted (so repeats sit together).
    """
    _check(n, T)
    if n <= T:
        extra = rng.integers(0, n, size=T - n).tolist()
        return sorted(list(range(n)) + extra)
    bounds = [(i * n) // T for i in range(T + 1)]
    return [bounds[i] + int(rng.integers(0, bounds[i + 1] - bounds[i])) for i in range(T)]


def val_indices(n: int, T: int) -> list[int]:
    """Train-time validation: the first frame of each segment, int(n/T * i) mod n."""
    _check(n, T)
    tick = n / float(T)
    return [int(tick * i) % n for i in range(T)]


def _linspace_trunc(stop: float, num: int) -> list[int]:
    """np.linspace(0, stop, num) converted to int by truncation towards zero (numpy < 1.20)."""
    return [int(v) for v in np.linspace(0.0, stop, num=num)]


def eval_indices(n: int, T: int, clips: int = 1) -> list[int]:
    """Uniform multi-clip test sampling: clip starts spread over the first segment.

    tick = n/T; starts = linspace(0, tick-1, clips) truncated; clip k = int(start_k + tick*i) mod n.
    One clip equals `val_indices`.
    """
    _check(n, T)
    if clips < 1:
        raise ValueError(f"test_clips must be >= 1, got {clips}")
    tick = n / float(T)
    starts = _linspace_trunc(tick - 1, clips)
    return [int(start + tick * i) % n for start in starts for i in range(T)]


def dense_train_indices(n: int, T: int, rng: np.random.Generator, window: int = DENSE_WINDOW) -> list[int]:
    """Dense training: T frames with stride window // T from a random start."""
    _check(n, T)
    stride = max(1, window // T)
    start = 0 if n <= window else int(rng.integers(0, n - window + 1))
    return [(start + stride * i) % n for i in range(T)]


def dense_val_indices(n: int, T: int, window: int = DENSE_WINDOW) -> list[int]:
    """Dense train-time validation: deterministic, the one-clip dense test window (start 0)."""
    return dense_test_indices(n, T, 1, window)


def dense_test_indices(n: int, T: int, clips: int = 1, window: int = DENSE_WINDOW) -> list[int]:
    """Dense test: clip k starts at k * floor(max(0, n - window) / (clips - 1)); one clip starts at 0."""
    _check(n, T)
    if clips < 1:
        raise ValueError(f"test_clips must be >= 1, got {clips}")
    stride = max(1, window // T)
    step = 0 if clips == 1 else max(0, n - window) // (clips - 1)
    return [(k * step + stride * i) % n for k in range(clips) for i in range(T)]


def sample_indices(
    n: int,
    T: int,
    *,
    mode: str,
    clips: int = 1,
    dense: bool = False,
    random_shift: bool = True,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Dispatch on mode `train|val|test` as the original's dataset did.

    `random_shift=False` in training uses the validation sampling (as the original).
    """
    if mode == "train" and random_shift:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        return dense_train_indices(n, T, rng) if dense else train_indices(n, T, rng)
    if mode in ("train", "val"):
        return dense_val_indices(n, T) if dense else val_indices(n, T)
    if mode == "test":
        return dense_test_indices(n, T, clips) if dense else eval_indices(n, T, clips)
    raise ValueError(f"unknown sampling mode {mode!r}")
