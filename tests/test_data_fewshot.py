"""datasets.fewshot: the K-shot subset depends on the seed only (same on every rank), has K videos
per class, is repeated to about the full epoch length, and can be written and read back."""

import pytest

from datasets import build_dataset
from datasets.fewshot import repeat_few_shot, select_few_shot, write_fewshot_list, write_list
from datasets.lists import VideoRecord, read_list
from datasets.synthetic import generate
from utils.config import resolve, to_config
from utils.errors import UserError


def _records(classes=5, per_class=7):
    return [
        VideoRecord(f"c{c}/v{k}", 10 + k, c, c * per_class + k + 1) for c in range(classes) for k in range(per_class)
    ]


def test_selection_depends_on_seed_only():
    recs = _records()
    rank0 = select_few_shot(recs, 2, seed=1024)
    rank1 = select_few_shot(list(recs), 2, seed=1024)  # another process, same seed
    assert rank0 == rank1
    assert [r.label for r in rank0] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert any(select_few_shot(recs, 2, seed=s) != rank0 for s in range(1, 6))
    assert len(set(rank0)) == 10


def test_repeat_to_epoch_length():
    chosen = select_few_shot(_records(), 2, seed=0)
    assert len(repeat_few_shot(chosen, 35, 2, 5)) == 10 * 3  # floor(35 / 10) = 3
    assert len(repeat_few_shot(chosen, 5, 2, 5)) == 10  # at least once


def test_class_with_too_few_videos():
    recs = [r for r in _records() if not (r.label == 3 and r.path != "c3/v0")]
    with pytest.raises(UserError, match="data.shot=2 but class 3 has only 1 training video"):
        select_few_shot(recs, 2, seed=0)
    with pytest.raises(UserError, match="class 5 has only 0"):
        select_few_shot(_records(), 1, seed=0, num_classes=6)


def test_dataset_two_simulated_ranks_and_written_list(tmp_path):
    generate(tmp_path / "d", classes=3, videos_per_class=5, val_videos_per_class=1, frames=8, size=32, fmt="frames")
    d = tmp_path / "d"
    data = {
        "train_root": str(d / "frames"),
        "val_root": str(d / "frames"),
        "train_list": str(d / "train.txt"),
        "val_list": str(d / "val.txt"),
        "label_list": str(d / "labels.csv"),
        "shot": 2,
        "input_size": 32,
    }
    cfg = to_config(resolve({"seed": 7, "data": data}, "test"))
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")  # rank 0 and rank 1 build the same
    assert a.records == b.records and a.fewshot_records == b.fewshot_records
    assert len(a.fewshot_records) == 6 and len(a) == 6 * (15 // 6)
    path = write_fewshot_list(a, tmp_path / "run")
    want = [VideoRecord(r.path, r.num_frames, r.label, i + 1) for i, r in enumerate(a.fewshot_records)]
    assert read_list(path) == want
    assert write_fewshot_list(build_dataset(cfg, "val"), tmp_path / "run2") is None
    video = write_list([VideoRecord("x.mp4", None, 1, 1)], tmp_path / "v.txt")
    assert video.read_text() == "x.mp4 1\n"
