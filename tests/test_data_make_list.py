"""datasets.make_list: lists written from a folder-per-class tree parse back to exactly the tree."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.lists import read_label_csv, read_list
from datasets.make_list import TreeScan, main, make_list, map_classes, normalize_name, template_regex
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# class folder -> {video folder: number of frames}
FRAMES_TREE = {
    "zumba": {"b_vid": 3, "a_vid": 10},
    "abseiling": {"v2": 1, "v10": 12, "v1": 8},
    "air_drumming": {"x": 5},
}


def _make_frames_tree(root: Path, tree: dict, tmpl: str = "img_{:05d}.jpg", seed: int = 0) -> None:
    """Create the tree in a shuffled order (the output must not depend on creation order)."""
    items = [(c, v, n) for c, vids in tree.items() for v, n in vids.items()]
    random.Random(seed).shuffle(items)
    for cls, vid, n in items:
        folder = root / cls / vid
        folder.mkdir(parents=True)
        for i in random.Random(seed + n).sample(range(1, n + 1), n):
            (folder / tmpl.format(i)).write_bytes(b"")


def _expected_frames(tree: dict, ids: dict[str, int]) -> list[tuple[str, int, int]]:
    return [(f"{c}/{v}", tree[c][v], ids[c]) for c in sorted(tree) for v in sorted(tree[c])]


def test_frames_round_trip_without_labels(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, FRAMES_TREE)
    (root / "abseiling" / "v1" / "notes.txt").write_text("not a frame")
    out = tmp_path / "lists" / "train.txt"
    summary = make_list(root, out, scan=TreeScan(image_tmpl="img_{:05d}.jpg"))

    names = read_label_csv(tmp_path / "lists" / "train_labels.csv")
    assert names == ["abseiling", "air_drumming", "zumba"]
    ids = {n: i for i, n in enumerate(names)}
    got = [(r.path, r.num_frames, r.label) for r in read_list(out, num_classes=len(names))]
    assert got == _expected_frames(FRAMES_TREE, ids)
    # code-point order: v1 < v10 < v2
    assert [p for p, _, _ in got[:3]] == ["abseiling/v1", "abseiling/v10", "abseiling/v2"]
    assert summary["format"] == "frames" and summary["videos"] == 6 and summary["warnings"] == []


def test_output_is_deterministic_over_creation_order(tmp_path):
    outs = []
    for seed in (1, 2):
        root = tmp_path / f"r{seed}"
        _make_frames_tree(root, FRAMES_TREE, seed=seed)
        out = tmp_path / f"o{seed}.txt"
        make_list(root, out)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_labels_csv_maps_by_exact_then_loose_name(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, FRAMES_TREE)
    csv = tmp_path / "labels.csv"
    csv.write_text("id,name\n0,zumba\n1,Air Drumming\n2,unused class\n3,abseiling\n")
    out = tmp_path / "val.txt"
    summary = make_list(root, out, labels=csv)
    got = [(r.path, r.num_frames, r.label) for r in read_list(out, num_classes=4)]
    assert got == _expected_frames(FRAMES_TREE, {"abseiling": 3, "air_drumming": 1, "zumba": 0})
    assert summary["labels_csv"] is None and not (tmp_path / "val_labels.csv").exists()
    assert any("1 of the 4 classes" in w for w in summary["warnings"])


def test_labels_with_the_shipped_kinetics_csv(tmp_path):
    root = tmp_path / "k400"
    _make_frames_tree(root, {"passing_American_football_(in_game)": {"a": 9}, "zumba": {"b": 9}})
    out = tmp_path / "k.txt"
    make_list(root, out, labels=REPO / "lists" / "kinetics_400_labels.csv")
    names = read_label_csv(REPO / "lists" / "kinetics_400_labels.csv")
    labels = [r.label for r in read_list(out)]
    assert [names[i] for i in labels] == ["passing American football (in game)", "zumba"]


def test_unknown_class_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, {"zumba": {"a": 2}, "zumba_dance": {"b": 2}})
    csv = tmp_path / "labels.csv"
    csv.write_text("id,name\n0,zumba\n")
    with pytest.raises(UserError, match=r"1 class folder\(s\) are not classes of .*labels.csv: 'zumba_dance'"):
        make_list(root, tmp_path / "x.txt", labels=csv)
    assert not (tmp_path / "x.txt").exists()


def test_two_folders_for_one_class_is_an_error():
    with pytest.raises(UserError, match="both map to class 0"):
        map_classes(["Air_drumming", "air drumming"], ["air drumming"], "l.csv")


def test_video_tree(tmp_path):
    root = tmp_path / "videos"
    for cls, files in {"b_class": ["z.mp4", "a.avi"], "a_class": ["m.MKV"]}.items():
        (root / cls).mkdir(parents=True)
        for f in files:
            (root / cls / f).write_bytes(b"")
    (root / "a_class" / "readme.txt").write_text("ignored")
    out = tmp_path / "v.txt"
    summary = make_list(root, out, labels_out=tmp_path / "names.csv", space_names=True)
    assert summary["format"] == "video"
    assert out.read_text() == "a_class/m.MKV 0\nb_class/a.avi 1\nb_class/z.mp4 1\n"
    assert read_label_csv(tmp_path / "names.csv") == ["a class", "b class"]
    assert [(r.path, r.num_frames, r.label) for r in read_list(out)] == [
        ("a_class/m.MKV", None, 0),
        ("b_class/a.avi", None, 1),
        ("b_class/z.mp4", None, 1),
    ]


def test_mixed_tree_needs_explicit_format(tmp_path):
    root = tmp_path / "mixed"
    _make_frames_tree(root, {"a": {"v": 2}})
    (root / "a" / "clip.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="pass --format frames or --format video"):
        make_list(root, tmp_path / "m.txt")
    make_list(root, tmp_path / "m.txt", scan=TreeScan("video"))
    assert (tmp_path / "m.txt").read_text() == "a/clip.mp4 0\n"
    make_list(root, tmp_path / "m.txt", scan=TreeScan("frames"))
    assert (tmp_path / "m.txt").read_text() == "a/v 2 0\n"


def test_template_counts_only_matching_frames_and_flags_numbering(tmp_path):
    root = tmp_path / "frames"
    folder = root / "cls" / "vid"
    folder.mkdir(parents=True)
    for name in ["image_0001.jpg", "image_0002.jpg", "image_0004.jpg", "img_00001.jpg", "flow_x_0001.jpg"]:
        (folder / name).write_bytes(b"")
    (root / "cls" / "empty").mkdir()
    out = tmp_path / "l.txt"
    summary = make_list(root, out, scan=TreeScan(image_tmpl="image_{:04d}.jpg"))
    assert out.read_text() == "cls/vid 3 0\n"
    assert any("skipped cls/empty" in w for w in summary["warnings"])
    assert any("not numbered 1..3" in w for w in summary["warnings"])
    # without a template every image file counts
    make_list(root, out)
    assert out.read_text() == "cls/vid 5 0\n"


def test_template_regex():
    assert template_regex("img_{:05d}.jpg").match("img_00012.jpg").group(1) == "00012"
    assert template_regex("img_{:05d}.jpg").match("img_123456.jpg").group(1) == "123456"
    assert template_regex("img_{:05d}.jpg").match("img_0012.jpg") is None
    assert template_regex("img_{:05d}.jpg").match("img_00012.jpgx") is None
    assert template_regex("{}.png").match("7.png").group(1) == "7"
    with pytest.raises(UserError, match="exactly one"):
        template_regex("img.jpg")


def test_whitespace_in_paths_is_rejected(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, {"air drumming": {"v": 2}})
    with pytest.raises(UserError, match="contains whitespace"):
        make_list(root, tmp_path / "l.txt")


def test_normalize_name():
    assert normalize_name("Passing_American  football_(in_game)") == "passing american football (in game)"


def test_cli_main_and_errors(tmp_path, capsys):
    root = tmp_path / "frames"
    _make_frames_tree(root, FRAMES_TREE)
    main([str(root), "--out", str(tmp_path / "a.txt"), "--image-tmpl", "img_{:05d}.jpg"])
    assert "wrote" in capsys.readouterr().out
    assert len((tmp_path / "a.txt").read_text().splitlines()) == 6
    with pytest.raises(UserError, match="not found"):
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "b.txt")])


def test_module_entry_point_reports_user_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "datasets.make_list", str(tmp_path / "nope"), "--out", str(tmp_path / "o.txt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: data root not found")


def test_reproduces_the_generated_datasets_lists(tmp_path):
    """On the synthetic dataset's trees, make_list writes exactly the generator's own lists."""
    from datasets.synthetic import generate

    data = tmp_path / "syn"
    generate(data, classes=3, videos_per_class=2, val_videos_per_class=1, frames=5, size=32, fmt="both")
    for tree, lists, kwargs in (
        ("frames", ("train.txt", "val.txt"), {"scan": TreeScan(image_tmpl="img_{:05d}.jpg")}),
        ("videos", ("train_video.txt", "val_video.txt"), {}),
    ):
        out = tmp_path / f"{tree}.txt"
        summary = make_list(data / tree, out, labels=data / "labels.csv", **kwargs)
        assert summary["warnings"] == []
        expected = sorted(line for name in lists for line in (data / name).read_text().splitlines())
        assert out.read_text().splitlines() == expected


@pytest.mark.parametrize("fmt", ["auto", "frames", "video"])
def test_root_one_level_too_high_names_the_level_to_point_at(tmp_path, fmt):
    """ROOT/train/<class>/<video>: pointing at ROOT (the dataset folder) instead of ROOT/train."""
    root = tmp_path / "k400"
    _make_frames_tree(root / "train", FRAMES_TREE)
    _make_frames_tree(root / "val", {"zumba": {"c_vid": 2}})
    (root / "val" / "abseiling").mkdir()
    (root / "val" / "abseiling" / "v.mp4").write_bytes(b"")
    with pytest.raises(UserError) as err:
        make_list(root, tmp_path / "out.txt", scan=TreeScan(fmt))
    assert str(err.value) == (
        f"{root} looks one level too high: its sub-folders (train, val) hold class folders, "
        f"not videos. Point at the folder that holds one folder per class, e.g. "
        f"{root / 'train'} or {root / 'val'}"
    )
    assert make_list(root / "train", tmp_path / "out.txt")["videos"] == 6  # the right level works


def test_empty_frame_folders_are_not_taken_for_a_level_too_high(tmp_path):
    (tmp_path / "r" / "cls" / "vid").mkdir(parents=True)
    (tmp_path / "r" / "cls" / "vid" / "notes.txt").write_text("no frames")
    with pytest.raises(UserError, match="every frame folder is empty"):
        make_list(tmp_path / "r", tmp_path / "out.txt")


def test_derived_label_csv_keeps_the_whole_list_name_and_is_not_taken_from_another_list(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, FRAMES_TREE)
    lists = tmp_path / "lists"
    assert make_list(root, lists / "x.a")["labels_csv"] == str(lists / "x.a_labels.csv")
    assert make_list(root, lists / "x.b")["labels_csv"] == str(lists / "x.b_labels.csv")
    assert make_list(root, lists / "train.txt")["labels_csv"] == str(lists / "train_labels.csv")
    make_list(root, lists / "x.a")  # the same list again: its own CSV may be replaced
    before = (lists / "x.a_labels.csv").read_text()
    with pytest.raises(UserError) as err:  # x.a.txt would also name its CSV x.a_labels.csv
        make_list(root, lists / "x.a.txt")
    assert str(err.value) == (
        f"{lists / 'x.a_labels.csv'} exists and was written from {lists / 'x.a'}, not from {lists / 'x.a.txt'}: "
        f"name another file with --labels-out, or remove it"
    )
    assert not (lists / "x.a.txt").exists() and (lists / "x.a_labels.csv").read_text() == before
    (lists / "mine_labels.csv").write_text("id,name\n0,by hand\n")
    with pytest.raises(UserError, match="mine_labels.csv exists and was not written by this tool"):
        make_list(root, lists / "mine.txt")
    make_list(root, lists / "mine.txt", labels_out=lists / "mine_labels.csv")  # named explicitly: replaced
    assert read_label_csv(lists / "mine_labels.csv") == sorted(FRAMES_TREE)


def test_class_names_of_renamed_folders_go_to_the_written_csv(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, {"air_drumming": {"a": 2}, "zumba": {"b": 2}})
    make_list(root, tmp_path / "l.txt", class_names={"air_drumming": "air drumming"})
    assert read_label_csv(tmp_path / "l_labels.csv") == ["air drumming", "zumba"]


def test_list_under_a_regular_file_is_one_line(tmp_path):
    root = tmp_path / "frames"
    _make_frames_tree(root, FRAMES_TREE)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError) as err:
        make_list(root, tmp_path / "afile" / "l.txt", labels_out=tmp_path / "l.csv")
    assert str(err.value) == (
        f"list folder {tmp_path / 'afile'}: cannot create the folder: {tmp_path / 'afile'} is a file, not a folder"
    )
