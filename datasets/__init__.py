"""Data pipeline: lists, frame sampling, decoding, clip transforms, datasets and loaders.

`build_dataset` and `config_loader` are the only places that read `cfg.data`; everything below it takes plain
arguments. See docs/data.md for the user-facing description. The names below are imported on
first use, so `datasets.lists` or `datasets.make_list` do not pay for importing torch.

Which module does what, and who calls it: docs/map.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_dataset": "datasets.data_builder",
    "build_loader": "datasets.data_builder",
    "config_loader": "datasets.data_builder",
    "build_transform": "datasets.data_builder",
    "VideoDataset": "datasets.video_dataset",
    "VideoRecord": "datasets.lists",
    "read_label_csv": "datasets.lists",
    "read_list": "datasets.lists",
    "normalize": "datasets.transforms",
    "write_fewshot_list": "datasets.fewshot",
    "ShardSampler": "datasets.samplers",
    "TrainSampler": "datasets.samplers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
