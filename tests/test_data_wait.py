"""The data-bound alarm (utils.data_wait) and the remedy it names (datasets.data_builder.data_remedy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets import build_dataset
from datasets.data_builder import data_remedy
from datasets.synthetic import generate
from utils.config import resolve, to_config
from utils.data_wait import DataWaitMeter


def test_meter_fraction_line_row_and_alarm_once_per_epoch():
    m = DataWaitMeter(threshold=0.1, remedy="remedy: raise data.workers", warmup=2)
    m.update(5.0, 6.0)  # warm-up steps (workers starting) are not counted
    m.update(5.0, 6.0)
    assert m.steps == 0 and m.alarm() is None and m.line() == "data wait: warming up"
    for _ in range(4):
        m.update(0.05, 1.0)
    assert m.fraction == pytest.approx(0.05) and m.alarm() is None
    assert m.line() == "data wait 0.050 s of 1.000 s per step (5 %)"
    for _ in range(4):
        m.update(0.35, 1.0)
    assert m.fraction == pytest.approx(0.2)
    text = m.alarm()
    assert text == (
        "data-bound: waiting for data takes 20 % of each training step (0.200 of 1.000 s, more than "
        "logging.data_wait_alarm=0.1); remedy: raise data.workers"
    )
    assert m.alarm() is None  # once per epoch
    assert m.row() == {"data_wait_s": "0.2000", "step_s": "1.0000", "data_wait_frac": "0.2000"}
    m.reset()
    assert m.steps == 0 and m.fraction == 0.0
    for _ in range(5):
        m.update(0.5, 1.0)
    assert m.alarm() is not None
    off = DataWaitMeter(threshold=0.0, warmup=0)
    off.update(1.0, 1.0)
    assert off.alarm() is None


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    generate(out, classes=2, videos_per_class=2, val_videos_per_class=1, frames=8, size=32, fmt="both", seed=1)
    return out


def test_remedy_names_what_helps(syn, tmp_path):
    def ds(video, root=None, **data):
        d = {
            "num_segments": 4,
            "input_size": 32,
            "label_list": str(syn / "labels.csv"),
            "train_root": root or str(syn / ("videos" if video else "frames")),
            "train_list": str(syn / ("train_video.txt" if video else "train.txt")),
            "modality": "video" if video else "RGB",
        }
        d.update(data)
        return build_dataset(to_config(resolve({"data": d}, "t")), "train")

    text = data_remedy(ds(True, decoder="pyav"), workers=2, procs_per_node=1, cpus=16)
    assert "raise data.workers (now 2; this machine has 16 CPUs per training process)" in text
    assert "decode with torchcodec (now pyav" in text and "python -m datasets.preprocess" in text
    import shutil

    from datasets.video_reader import CFR_MARKER

    pre = tmp_path / "pre"
    shutil.copytree(syn / "videos", pre)
    (pre / CFR_MARKER).write_text("{}")
    text = data_remedy(ds(True, root=str(pre), decoder="torchcodec"), workers=7, procs_per_node=2, cpus=16)
    assert "preprocess" not in text and "torchcodec" not in text and "workers" not in text
    assert "data.num_frames_from: list" in data_remedy(ds(False), workers=8, cpus=8)
