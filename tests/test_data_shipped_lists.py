"""The shipped lists/ (the original's annotation lists and label CSVs): each parses with its format,
is paired with its label CSV, and every label is a row of that CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets.lists import detect_format, read_label_csv, read_list
from utils.errors import UserError

LISTS = Path(__file__).resolve().parents[1] / "lists"

# list (relative to lists/) -> (label CSV, format, number of videos). Every .txt under lists/ must
# be here, so a new list cannot be added without saying which classes it uses.
PAIRS = {
    "anet/anet_full_for_zeroshot.txt": ("anet1.3_labels.csv", "frames", 14950),
    "anet/anet_train_instance_fps1.txt": ("anet1.3_labels.csv", "frames", 15410),
    "anet/anet_val_video_fps1.txt": ("anet1.3_labels.csv", "frames", 4926),
    "hmdb51/hmdb_full_for_zeroshot.txt": ("hmdb51_labels.csv", "frames", 6766),
    "hmdb51/train_rgb_split_1.txt": ("hmdb51_labels.csv", "frames", 3570),
    "hmdb51/train_rgb_split_2.txt": ("hmdb51_labels.csv", "frames", 3570),
    "hmdb51/train_rgb_split_3.txt": ("hmdb51_labels.csv", "frames", 3570),
    "hmdb51/val_rgb_split_1.txt": ("hmdb51_labels.csv", "frames", 1530),
    "hmdb51/val_rgb_split_2.txt": ("hmdb51_labels.csv", "frames", 1530),
    "hmdb51/val_rgb_split_3.txt": ("hmdb51_labels.csv", "frames", 1530),
    "k400/kinetics_rgb_val_se320.txt": ("kinetics_400_labels.csv", "frames", 19796),
    "k400/kinetics_video_val_se320.txt": ("kinetics_400_labels.csv", "video", 19796),
    "k600/test_split1_exist.txt": ("k600/k160_labels_split1.csv", "video", 14119),
    "k600/test_split2_exist.txt": ("k600/k160_labels_split2.csv", "video", 14067),
    "k600/test_split3_exist.txt": ("k600/k160_labels_split3.csv", "video", 14161),
    "ucf101/train_rgb_split_1.txt": ("ucf_labels.csv", "frames", 9537),
    "ucf101/train_rgb_split_2.txt": ("ucf_labels.csv", "frames", 9586),
    "ucf101/train_rgb_split_3.txt": ("ucf_labels.csv", "frames", 9624),
    "ucf101/ucf_full_for_zeroshot.txt": ("ucf_labels.csv", "frames", 13320),
    "ucf101/val_rgb_split_1.txt": ("ucf_labels.csv", "frames", 3783),
    "ucf101/val_rgb_split_2.txt": ("ucf_labels.csv", "frames", 3734),
    "ucf101/val_rgb_split_3.txt": ("ucf_labels.csv", "frames", 3696),
}

CLASS_COUNTS = {
    "anet1.3_labels.csv": 200,
    "hmdb51_labels.csv": 51,
    "kinetics_400_labels.csv": 400,
    "ucf_labels.csv": 101,
    "k600/k160_labels_split1.csv": 160,
    "k600/k160_labels_split2.csv": 160,
    "k600/k160_labels_split3.csv": 160,
}


def test_every_shipped_list_and_csv_is_paired():
    assert sorted(str(p.relative_to(LISTS)) for p in LISTS.rglob("*.txt")) == sorted(PAIRS)
    assert sorted(str(p.relative_to(LISTS)) for p in LISTS.rglob("*.csv")) == sorted(CLASS_COUNTS)


@pytest.mark.parametrize("csv_name", sorted(CLASS_COUNTS))
def test_label_csv_parses(csv_name):
    names = read_label_csv(LISTS / csv_name)
    assert len(names) == CLASS_COUNTS[csv_name]
    assert len(set(names)) == len(names), "duplicate class names"
    assert all(n == n.strip() and "\r" not in n for n in names)


@pytest.mark.parametrize("list_name", sorted(PAIRS))
def test_list_parses_with_labels_in_its_csv_range(list_name):
    csv_name, fmt, count = PAIRS[list_name]
    num_classes = len(read_label_csv(LISTS / csv_name))
    assert detect_format(LISTS / list_name) == fmt
    records = read_list(LISTS / list_name, num_classes=num_classes)
    assert len(records) == count
    labels = [r.label for r in records]
    assert min(labels) >= 0 and max(labels) < num_classes
    if fmt == "frames":
        assert all(r.num_frames is not None and r.num_frames >= 0 for r in records)
    else:
        assert all(r.num_frames is None and r.path.endswith(".mp4") for r in records)
    assert set(labels) == set(range(num_classes)), "every shipped split covers all of its classes"


def test_out_of_range_label_is_caught(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a/b 10 0\na/c 10 101\n")
    with pytest.raises(UserError, match=r"bad.txt:2: label 101 is outside the 101 classes"):
        read_list(bad, num_classes=len(read_label_csv(LISTS / "ucf_labels.csv")))


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf_splits_partition_the_zero_shot_list(split):
    full = {(r.path, r.label) for r in read_list(LISTS / "ucf101/ucf_full_for_zeroshot.txt")}
    train = {(r.path, r.label) for r in read_list(LISTS / f"ucf101/train_rgb_split_{split}.txt")}
    val = {(r.path, r.label) for r in read_list(LISTS / f"ucf101/val_rgb_split_{split}.txt")}
    assert not train & val
    assert train | val == full


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb_splits_are_disjoint_and_inside_the_zero_shot_list(split):
    full = {r.path for r in read_list(LISTS / "hmdb51/hmdb_full_for_zeroshot.txt")}
    train = {r.path for r in read_list(LISTS / f"hmdb51/train_rgb_split_{split}.txt")}
    val = {r.path for r in read_list(LISTS / f"hmdb51/val_rgb_split_{split}.txt")}
    assert not train & val
    assert train | val <= full


def test_class_folder_of_each_path_matches_its_label():
    """UCF/HMDB paths start with the class folder: one folder per label, in CSV order."""
    for list_name in ("ucf101/ucf_full_for_zeroshot.txt", "hmdb51/hmdb_full_for_zeroshot.txt"):
        folder_of = {}
        for r in read_list(LISTS / list_name):
            folder_of.setdefault(r.label, set()).add(r.path.split("/")[0])
        assert all(len(f) == 1 for f in folder_of.values())
    names = read_label_csv(LISTS / "hmdb51_labels.csv")
    hmdb = {r.label: r.path.split("/")[0] for r in read_list(LISTS / "hmdb51/hmdb_full_for_zeroshot.txt")}
    assert [hmdb[i].replace("_", " ") for i in range(len(names))] == names


def test_k600_zero_shot_classes_are_disjoint_from_k400():
    k400 = set(read_label_csv(LISTS / "kinetics_400_labels.csv"))
    for split in (1, 2, 3):
        assert not set(read_label_csv(LISTS / f"k600/k160_labels_split{split}.csv")) & k400


def test_kinetics_frame_and_video_val_lists_have_the_same_label_counts():
    frames = sorted(r.label for r in read_list(LISTS / "k400/kinetics_rgb_val_se320.txt"))
    videos = sorted(r.label for r in read_list(LISTS / "k400/kinetics_video_val_se320.txt"))
    assert frames == videos


def test_anet_label2name_json_matches_csv():
    names = read_label_csv(LISTS / "anet1.3_labels.csv")
    mapping = json.loads((LISTS / "anet/anet1.3_label2name.json").read_text())
    assert {int(k): v for k, v in mapping.items()} == dict(enumerate(names))


def test_activitynet_double_slashes_are_kept_verbatim():
    anet = read_list(LISTS / "anet/anet_full_for_zeroshot.txt")
    assert anet[1].path == "activitynet_train_resize_img_256_340_fps1//u2uoYvo8J5s"
