"""datasets.synthetic: deterministic bytes, class pairs that need temporal order, parseable output."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.lists import read_label_csv, read_list
from datasets.synthetic import ClassChoice, class_list, generate, render_video
from utils.errors import UserError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = dict(classes=3, videos_per_class=2, val_videos_per_class=1, frames=6, size=32, fmt="both")
    generate(tmp_path / "a", seed=1, **kw)
    generate(tmp_path / "b", seed=1, **kw)
    generate(tmp_path / "c", seed=2, **kw)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert sum(k.endswith(".mp4") for k in a) == 9 and sum(k.endswith(".jpg") for k in a) == 9 * 6


def test_lists_and_labels(tmp_path):
    paths = generate(tmp_path, classes=4, videos_per_class=3, frames=5, size=32, fmt="both", seed=0)
    names = read_label_csv(paths["labels"])
    assert names == [
        "red circle moving left",
        "red circle moving right",
        "blue square growing",
        "blue square shrinking",
    ]
    train, val = read_list(paths["train"], 4), read_list(paths["val"], 4)
    assert len(train) == 12 and len(val) == 4 and all(r.num_frames == 5 for r in train)
    assert not {r.path for r in train} & {r.path for r in val}
    vids = read_list(paths["train_video"], 4)
    assert [r.path for r in vids] == [r.path + ".mp4" for r in train]
    for r in train:
        assert len(list((tmp_path / "frames" / r.path).iterdir())) == 5


def test_pairs_differ_only_in_time_direction():
    classes = class_list(24)
    assert len({c.name for c in classes}) == 24
    for a, b in zip(classes[::2], classes[1::2], strict=True):
        assert (a.colour, a.shape) == (b.colour, b.shape) and a.motion != b.motion
    # "moving right" is "moving left" played backwards (same start, speed, background)
    left = render_video(classes[0], 8, 32, np.random.default_rng(5))
    right = render_video(classes[1], 8, 32, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(left, right[::-1], strict=True))
    assert not np.array_equal(left[0], left[-1])
    # videos of one class differ (jitter)
    other = render_video(classes[0], 8, 32, np.random.default_rng(6))
    assert not np.array_equal(left[0], other[0])


def test_cli(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "datasets.synthetic",
            "--out",
            str(tmp_path),
            "--classes",
            "2",
            "--videos-per-class",
            "1",
            "--frames",
            "4",
            "--size",
            "32",
            "--format",
            "frames",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "train.txt").is_file() and not (tmp_path / "train_video.txt").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "datasets.synthetic", "--out", str(tmp_path), "--classes", "99"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert bad.returncode == 1 and "--classes must be between 1 and 24" in bad.stderr


def test_motions_choose_the_pair_kind_of_each_object():
    classes = class_list(motions=["horizontal", "fade", "light"])
    assert [c.name for c in classes] == [
        "red circle moving left",
        "red circle moving right",
        "blue square fading in",
        "blue square fading out",
        "green triangle lighting up",
        "green triangle going dark",
    ]
    assert [c.name for c in class_list(3, motions=["scale", "scale"])] == [
        "red circle growing",
        "red circle shrinking",
        "blue square growing",
    ]
    # fade and light pairs: one is the other reversed
    for first, second in zip(classes[2::2], classes[3::2], strict=False):
        a = render_video(first, 8, 32, np.random.default_rng(1))
        b = render_video(second, 8, 32, np.random.default_rng(1))
        assert all(np.array_equal(x, y) for x, y in zip(a, b[::-1], strict=True))
    fade_in = render_video(classes[2], 8, 32, np.random.default_rng(1))
    assert np.abs(fade_in[-1].astype(int) - fade_in[0]).max() > 60  # the square appears, the rest stays
    assert np.array_equal(fade_in[0][0, 0], fade_in[-1][0, 0])
    light = render_video(classes[4], 8, 32, np.random.default_rng(1))
    assert light[0].mean() < 0.4 * light[-1].mean()


def test_motions_errors_name_the_choices():
    with pytest.raises(UserError, match="--motions takes 1..12 of horizontal, vertical, scale, rotate, fade, light"):
        class_list(motions=["sideways"])
    with pytest.raises(UserError, match="--classes must be between 1 and 2"):
        class_list(3, motions=["fade"])


def test_cli_motions(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "datasets.synthetic",
            "--out",
            str(tmp_path),
            "--motions",
            "fade,scale",
            "--videos-per-class",
            "1",
            "--frames",
            "4",
            "--size",
            "32",
            "--format",
            "frames",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert read_label_csv(tmp_path / "labels.csv") == [
        "red circle fading in",
        "red circle fading out",
        "blue square growing",
        "blue square shrinking",
    ]


def test_bad_motions_write_nothing(tmp_path):
    with pytest.raises(UserError, match="--motions takes"):
        generate(tmp_path / "out", classes=ClassChoice(motions=["sideways"]))
    assert not (tmp_path / "out").exists()
