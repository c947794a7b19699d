"""datasets.check: every problem of a dataset in one report."""

import shutil

import pytest

from datasets.check import check_split
from datasets.synthetic import generate
from utils.config import replace, resolve, to_config


def test_check_reports_every_problem(tmp_path):
    d = tmp_path / "d"
    generate(d, classes=2, videos_per_class=3, val_videos_per_class=1, frames=6, size=32, fmt="both")
    data = {
        "train_root": str(d / "frames"),
        "val_root": str(d / "videos"),
        "train_list": str(d / "train.txt"),
        "val_list": str(d / "val_video.txt"),
        "label_list": str(d / "labels.csv"),
        "modality": "RGB",
        "min_frames": 4,
    }
    cfg = to_config(resolve({"data": data}, "test"))
    assert check_split(cfg.data, "train") == (6, [])
    lines = (d / "train.txt").read_text().splitlines()
    shutil.rmtree(d / "frames" / lines[0].split()[0])
    (d / "frames" / lines[1].split()[0] / "img_00002.jpg").unlink()
    (d / "frames" / lines[2].split()[0] / "img_00006.jpg").write_bytes(b"broken")
    lines.append("x/y 6 7")
    lines.append("x/z six 1")
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    n, problems = check_split(cfg.data, "train")
    assert n == 6
    text = "\n".join(problems)
    assert "train.txt:1: frame folder not found" in text
    assert "train.txt:2: " in text and "1 of the 5 frames that sampling can read are missing (img_00002.jpg" in text
    assert "train.txt:3: not an image file (6 bytes, starting b'broken'): " in text and "img_00006.jpg" in text
    assert "train.txt:7: label 7 is outside the 2 classes" in text
    assert "train.txt:8: frame count 'six' is not an integer" in text
    # a frames list read as videos: one problem naming the list and the key, nothing else checked
    as_video = replace(cfg, **{"data.modality": "video"})
    n, mismatch = check_split(as_video.data, "train")
    assert n == 6 and mismatch[-1] == f"{d / 'train.txt'} is a frames list but data.modality is 'video'"
    assert mismatch[:-1] == [p for p in problems if "train.txt:7" in p or "train.txt:8" in p]  # the list's own lines
    # videos: a truncated file and a missing one
    cfg = as_video
    vids = (d / "val_video.txt").read_text().split()
    (d / "videos" / vids[0]).write_bytes((d / "videos" / vids[0]).read_bytes()[:100])
    (d / "videos" / vids[2]).unlink()
    n, problems = check_split(cfg.data, "val")
    assert n == 2 and len(problems) == 2
    assert "val_video.txt:1: cannot open video" in problems[0] and "val_video.txt:2: video not found" in problems[1]
    assert problems[0].endswith("(the file is damaged or not a video: PyAV cannot read it either)") or problems[
        0
    ].endswith("(the file is damaged or not a video: FFmpeg cannot read it)")


def test_a_decoder_that_cannot_run_is_one_error_not_a_bad_file_per_video(tmp_path, monkeypatch, capsys):
    import yaml

    from datasets import video_reader
    from datasets.check import main

    d = tmp_path / "d"
    generate(d, classes=2, videos_per_class=1, val_videos_per_class=2, frames=6, size=32, fmt="video")
    data = {"val_root": str(d / "videos"), "val_list": str(d / "val_video.txt"), "modality": "video"}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {**data, "decoder": "torchcodec"}}))
    reason = "torchcodec cannot run on this machine: FFmpeg's shared libraries are not installed; to use it, apt-get"
    real = video_reader.decoder_problem
    monkeypatch.setattr(video_reader, "decoder_problem", lambda name: reason if name == "torchcodec" else real(name))
    monkeypatch.setattr(video_reader, "_log_choice", lambda name: None)
    with pytest.raises(video_reader.DecoderUnavailableError) as err:
        main(["--config", str(cfg_path), "--split", "val"])
    assert str(err.value) == f"data.decoder is 'torchcodec' but {reason}; or set data.decoder: auto"
    assert capsys.readouterr().out == ""  # no video reported as bad
    cfg_path.write_text(yaml.safe_dump({"data": {**data, "decoder": "auto"}}))
    main(["--config", str(cfg_path), "--split", "val"])
    captured = capsys.readouterr()
    fallback = video_reader.available_decoders()[0]
    assert captured.err.splitlines()[0] == (
        f"check val: video decoder: {fallback} (data.decoder: auto); torchcodec skipped: {reason}"
    )
    assert captured.out.strip() == "val: 4 videos scanned, 0 problem(s)"


def _frames_config(tmp_path, videos_per_class=3):
    d = tmp_path / "d"
    generate(d, classes=2, videos_per_class=videos_per_class, val_videos_per_class=1, frames=6, size=32, fmt="frames")
    data = {
        "train_root": str(d / "frames"),
        "val_root": str(d / "frames"),
        "train_list": str(d / "train.txt"),
        "val_list": str(d / "val.txt"),
        "label_list": str(d / "labels.csv"),
        "modality": "RGB",
        "min_frames": 1,
    }
    return d, data


def test_empty_and_truncated_frames_found_without_decoding_them(tmp_path):
    """Frames in the middle are not decoded without --full; their size and JPEG end marker are checked."""
    d, data = _frames_config(tmp_path)
    cfg = to_config(resolve({"data": data}, "test"))
    folders = [line.split()[0] for line in (d / "train.txt").read_text().splitlines()]
    empty = d / "frames" / folders[0] / "img_00003.jpg"
    empty.write_bytes(b"")
    cut = d / "frames" / folders[1] / "img_00004.jpg"
    data_bytes = cut.read_bytes()
    assert data_bytes[:2] == b"\xff\xd8" and data_bytes[-2:] == b"\xff\xd9"
    cut.write_bytes(data_bytes[: len(data_bytes) // 2])
    padded = d / "frames" / folders[2] / "img_00002.jpg"  # bytes after the end marker: still whole
    padded.write_bytes(padded.read_bytes() + b"\x00" * 16)
    n, problems = check_split(cfg.data, "train")
    assert n == 6
    assert problems == [
        f"{d / 'train.txt'}:1: frame file is empty (0 bytes): {empty}",
        f"{d / 'train.txt'}:2: truncated JPEG (no end-of-image marker at the end of the file, "
        f"{len(data_bytes) // 2} bytes): {cut}",
    ]
    assert check_split(cfg.data, "train", full=True)[1] == problems  # reported once, not again by decoding
    last = d / "frames" / folders[3] / "img_00006.jpg"  # the last frame, also decoded: one report
    last.write_bytes(b"")
    assert check_split(cfg.data, "train")[1][2:] == [f"{d / 'train.txt'}:4: frame file is empty (0 bytes): {last}"]


def test_cli_shows_progress_when_not_on_a_terminal(tmp_path, capsys):
    import yaml

    from datasets.check import main

    _, data = _frames_config(tmp_path, videos_per_class=10)  # 20 training videos: a line per 10 %
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": data}))
    main(["--config", str(cfg_path), "--split", "train"])
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"check train: {k}/20 videos checked" for k in range(2, 21, 2)]
    assert captured.out.strip() == "train: 20 videos scanned, 0 problem(s)"


def test_quick_check_reads_each_frames_header_and_finds_non_images(tmp_path):
    """Without --full only the first and last frame are decoded; every frame's signature and end
    marker are read: a text file named .jpg in the middle, a PNG cut short, a PNG named .jpg (PIL
    reads it: fine)."""
    from PIL import Image

    d, data = _frames_config(tmp_path)
    data["image_tmpl"] = "img_{:05d}.png"
    folders = [line.split()[0] for line in (d / "train.txt").read_text().splitlines()]
    for folder in folders:  # the same frames as PNG files
        for jpg in sorted((d / "frames" / folder).glob("*.jpg")):
            Image.open(jpg).save(jpg.with_suffix(".png"))
            jpg.unlink()
    cfg = to_config(resolve({"data": data}, "test"))
    assert check_split(cfg.data, "train") == (6, [])
    text = d / "frames" / folders[0] / "img_00003.png"
    text.write_bytes(b"hello world")  # 11 bytes of text
    cut = d / "frames" / folders[1] / "img_00004.png"
    cut.write_bytes(cut.read_bytes()[:-20])
    as_jpg = d / "frames" / folders[2] / "img_00002.png"
    with Image.open(as_jpg) as im:
        im.convert("RGB").save(as_jpg, format="JPEG")  # a JPEG named .png: its bytes say what it is
    n, problems = check_split(cfg.data, "train")
    assert problems == [
        f"{d / 'train.txt'}:1: not an image file (11 bytes, starting b'hello wo'): {text}",
        f"{d / 'train.txt'}:2: truncated PNG (no IEND chunk at the end of the file, {cut.stat().st_size} bytes): {cut}",
    ]
