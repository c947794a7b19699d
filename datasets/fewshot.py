"""Few-shot training subsets (`data.shot: K`, docs/data.md#few-shot-datashot-k).

K videos per class are drawn with a generator seeded from the run's seed only, so every rank of
a distributed run trains on the same subset (the original used unseeded Python `random`, a
different subset per GPU and per run). The subset is repeated floor(N_full / (K·C)) times (at
least once) so an epoch has about as many iterations as on the full list, as the original.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.lists import VideoRecord
from utils.errors import UserError

FEWSHOT_LIST_NAME = "fewshot_train_list.txt"


def select_few_shot(
    records: Sequence[VideoRecord], shot: int, seed: int, num_classes: int | None = None
) -> list[VideoRecord]:
    """K records per class (classes in label order, each class's picks in list order)."""
    if shot < 1:
        raise UserError(f"data.shot must be >= 1, got {shot}")
    by_label: dict[int, list[VideoRecord]] = defaultdict(list)
    for rec in records:
        by_label[rec.label].append(rec)
    labels = range(num_classes) if num_classes is not None else sorted(by_label)
    rng = np.random.default_rng([abs(int(seed)), 0x5E07])
    chosen: list[VideoRecord] = []
    for label in labels:
        pool = by_label.get(label, [])
        if len(pool) < shot:
            raise UserError(f"data.shot={shot} but class {label} has only {len(pool)} training video(s)")
        picks = sorted(rng.choice(len(pool), size=shot, replace=False).tolist())
        chosen.extend(pool[i] for i in picks)
    return chosen


def repeat_few_shot(chosen: Sequence[VideoRecord], full_size: int, shot: int, num_classes: int) -> list[VideoRecord]:
    """The subset repeated floor(full_size / (shot · num_classes)) times, at least once."""
    times = max(1, full_size // max(1, shot * num_classes))
    return list(chosen) * times


def write_list(records: Sequence[VideoRecord], path: str | Path) -> Path:
    """Write records in the original list format (frames `dir n label`, video `file label`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{r.path} {r.num_frames} {r.label}\n" if r.num_frames is not None else f"{r.path} {r.label}\n" for r in records
    ]
    path.write_text("".join(lines))
    return path


def write_fewshot_list(dataset, out_dir: str | Path) -> Path | None:
    """Save the chosen K-shot list (not repeated) of a training dataset to `out_dir`; None if not few-shot."""
    chosen = getattr(dataset, "fewshot_records", None)
    if not chosen:
        return None
    return write_list(chosen, Path(out_dir) / FEWSHOT_LIST_NAME)
