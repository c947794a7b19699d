"""python -m datasets.preprocess: short side, constant frame rate, keyframe interval, frames, the
list, resuming, failures reported per file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datasets.preprocess import Settings, main, preprocess, target_size
from datasets.video_reader import CFR_MARKER, VideoReader
from utils.errors import UserError


def _video(path: Path, w: int, h: int, frames: int = 30, rate: int = 30) -> list[np.ndarray]:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(w)
    base = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)[:h, :w]
    out = []
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(frames):
            arr = np.roll(base, 2 * t, axis=1).copy()
            out.append(arr)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return out


@pytest.fixture()
def src(tmp_path) -> Path:
    root = tmp_path / "src"
    _video(root / "jumping" / "v1.mp4", 96, 64)
    _video(root / "running" / "v2.mp4", 64, 96, frames=20, rate=25)
    (root / "running" / "broken.mp4").write_bytes(b"not a video")
    (root / "running" / "notes.txt").write_text("ignored")
    return root


def test_target_size():
    assert target_size(340, 256, 256) == (340, 256)
    assert target_size(1280, 720, 256) == (456, 256)
    assert target_size(720, 1280, 320) == (320, 568)
    assert target_size(101, 77, 256) == (100, 76)  # never upscaled; even for yuv420p


def test_reencode_short_gop_constant_rate(src, tmp_path):
    out = tmp_path / "out"
    res = preprocess(src, out, Settings(short_side=32, gop=1), workers=2, progress=False)
    assert res["processed"] == 2 and res["done_before"] == 0
    assert [p for p, _ in res["failures"]] == [str(src / "running" / "broken.mp4")]
    assert "Invalid data" in res["failures"][0][1]
    assert (out / "preprocess_failures.txt").read_text().startswith(str(src / "running" / "broken.mp4"))
    assert json.loads((out / CFR_MARKER).read_text())["gop"] == 1
    for rel, size, n, rate in (("jumping/v1.mp4", (48, 32), 30, 30), ("running/v2.mp4", (32, 48), 20, 25)):
        with av.open(str(out / rel)) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height) == size and s.average_rate == rate
            packets = [p for p in c.demux(s) if p.size]
            assert len(packets) == n and all(p.is_keyframe for p in packets)  # all-intra
            assert len({p.duration for p in packets}) == 1  # constant frame rate
    # the same picture: re-encoded frame vs the source frame resized by torchvision
    from torchvision.transforms.v2 import functional as F

    src_frames = torch.from_numpy(np.stack(_video(tmp_path / "again.mp4", 96, 64))).permute(0, 3, 1, 2)
    ref = F.resize(src_frames[[0, 29]], [32, 48], antialias=True)
    got = VideoReader(out / "jumping" / "v1.mp4").read([0, 29])
    diff = (got.float() - ref.float()).abs().mean()
    assert diff < 10
    assert (got.float() - ref.flip(0).float()).abs().mean() > 3 * diff  # another frame is far away
    gop4 = preprocess(src, tmp_path / "g4", Settings(short_side=32, gop=4), workers=1, progress=False)
    assert gop4["processed"] == 2
    with av.open(str(tmp_path / "g4" / "jumping" / "v1.mp4")) as c:
        keys = [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]
    assert keys == list(range(0, 30, 4))


def test_resume_and_settings_guard(src, tmp_path):
    out = tmp_path / "out"
    s = Settings(short_side=32)
    preprocess(src, out, s, workers=1, progress=False)
    again = preprocess(src, out, s, workers=1, progress=False)
    assert again["done_before"] == 2 and again["processed"] == 0
    (out / "jumping" / "v1.mp4").unlink()  # an interrupted run left only its temporary file
    (out / "jumping" / ".v1.mp4.tmp").write_bytes(b"partial")
    third = preprocess(src, out, s, workers=1, progress=False)
    assert third["processed"] == 1 and (out / "jumping" / "v1.mp4").is_file()
    assert not (out / "jumping" / ".v1.mp4.tmp").exists()
    with pytest.raises(UserError, match="was written with other settings"):
        preprocess(src, out, Settings(short_side=32, gop=8), workers=1, progress=False)
    with pytest.raises(UserError, match="source folder not found"):
        preprocess(tmp_path / "nowhere", tmp_path / "x", s, progress=False)


def test_frames_and_list(src, tmp_path, capsys):
    out = tmp_path / "frames"
    with pytest.raises(SystemExit) as exit_info:  # one video failed: reported, the rest is written
        main([str(src), str(out), "--frames", "--short-side", "32", "--fps", "10", "--workers", "1"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {src / 'running' / 'broken.mp4'}: " in err
    assert sorted(p.name for p in (out / "jumping" / "v1").iterdir())[:2] == ["img_00001.jpg", "img_00002.jpg"]
    assert len(list((out / "jumping" / "v1").iterdir())) == 10  # 30 frames at 30 fps -> 10 fps
    assert (tmp_path / "frames.txt").read_text() == "jumping/v1 10 0\nrunning/v2 8 1\n"
    assert (tmp_path / "frames_labels.csv").read_text() == "id,name\n0,jumping\n1,running\n"


@pytest.mark.parametrize("frames", [False, True], ids=["video", "frames"])
def test_outputs_are_flushed_to_disk_before_the_rename(src, tmp_path, monkeypatch, frames):
    import datasets.preprocess as pre
    from utils import fileio

    flushed: list[tuple[str, list[str]]] = []

    def record(path):
        p = Path(path)
        assert p.name.startswith(".") and p.name.endswith(".tmp")  # still under its temporary name
        flushed.append((p.name, sorted(f.name for f in p.iterdir()) if p.is_dir() else []))
        fileio.fsync_path(path)

    monkeypatch.setattr(pre, "fsync_path", record)
    out = tmp_path / "out"
    preprocess(src, out, Settings(short_side=32, frames=frames), workers=1, progress=False)
    names = [".v1.tmp", ".v2.tmp"] if frames else [".v1.mp4.tmp", ".v2.mp4.tmp"]
    assert sorted(n for n, _ in flushed) == names  # every finished output, not the failed one
    if frames:
        assert dict(flushed)[".v1.tmp"] == sorted(p.name for p in (out / "jumping" / "v1").iterdir())


def test_whitespace_in_source_names_gives_list_safe_outputs_and_real_class_names(tmp_path, capsys):
    src = tmp_path / "k400"
    _video(src / "air drumming" / "my clip.mp4", 64, 48, frames=6)
    _video(src / "air drumming" / "b.mp4", 64, 48, frames=6)
    _video(src / "zumba" / "z.mp4", 64, 48, frames=6)
    out = tmp_path / "pp"
    main([str(src), str(out), "--short-side", "32", "--workers", "1"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.mp4")) == [
        "air_drumming/b.mp4",
        "air_drumming/my_clip.mp4",
        "zumba/z.mp4",
    ]
    assert (tmp_path / "pp.txt").read_text() == "air_drumming/b.mp4 0\nair_drumming/my_clip.mp4 0\nzumba/z.mp4 1\n"
    assert (tmp_path / "pp_labels.csv").read_text() == "id,name\n0,air drumming\n1,zumba\n"
    said = [line for line in capsys.readouterr().out.splitlines() if "hold whitespace" in line]
    assert said == [
        "2 source name(s) hold whitespace, which lists cannot: written with '_' (e.g. 'air drumming/b.mp4' -> "
        "'air_drumming/b.mp4'); the label CSV keeps the class names"
    ]
    # a rerun (the same OUT) finds everything done and rewrites its own list
    main([str(src), str(out), "--short-side", "32", "--workers", "1"])
    assert "0 processed, 3 already done, 0 failed" in capsys.readouterr().out
    _video(src / "zumba" / "z y.mp4", 64, 48, frames=6)
    _video(src / "zumba" / "z_y.mp4", 64, 48, frames=6)
    with pytest.raises(UserError, match=r"z_y.mp4 and .*z y.mp4 would both be written to .*zumba/z_y.mp4"):
        preprocess(src, out, Settings(short_side=32), workers=1, progress=False)


def test_derived_outputs_keep_the_whole_name_and_are_never_taken_from_another_source(src, tmp_path, capsys):
    (src / "running" / "broken.mp4").unlink()
    pp = tmp_path / "pp"
    main([str(src), str(pp / "x.a"), "--short-side", "32", "--workers", "1"])
    main([str(src), str(pp / "x.b"), "--short-side", "32", "--workers", "1", "--fps", "10"])
    assert (pp / "x.a.txt").read_text() == "jumping/v1.mp4 0\nrunning/v2.mp4 1\n"
    assert (pp / "x.b.txt").is_file() and (pp / "x.a_labels.csv").is_file() and (pp / "x.b_labels.csv").is_file()
    assert not (pp / "x.txt").exists() and not (pp / "x_labels.csv").exists()
    main([str(src), str(pp / "x.a"), "--short-side", "32", "--workers", "1"])  # a rerun of the same source
    # a list of that name written by hand (or from another OUT): refused before any work
    (pp / "x.c.txt").write_text("mine 0\n")
    with pytest.raises(UserError) as err:
        main([str(src), str(pp / "x.c"), "--short-side", "32", "--workers", "1"])
    assert str(err.value) == (
        f"{pp / 'x.c.txt'} exists and was not written by this tool, not from {pp / 'x.c'}: name another file "
        f"with --list, or remove it"
    )
    assert not (pp / "x.c").exists() and (pp / "x.c.txt").read_text() == "mine 0\n"
    (pp / "x.b.txt").rename(pp / "other.txt")  # x.b_labels.csv stays, recorded as written from x.b
    (pp / ".x.b_labels.csv.source").write_text(str((pp / "x.a").resolve()) + "\n")
    with pytest.raises(UserError, match=rf"x.b_labels.csv exists and was written from {pp / 'x.a'}, not from"):
        main([str(src), str(pp / "x.b"), "--short-side", "32", "--workers", "1", "--fps", "10"])


def test_output_under_a_regular_file_is_one_line(src, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError) as err:
        main([str(src), str(tmp_path / "afile" / "out"), "--workers", "1"])
    assert str(err.value) == f"output folder {tmp_path / 'afile' / 'out'}: cannot create the folder: " + (
        f"{tmp_path / 'afile'} is a file, not a folder"
    )
    with pytest.raises(UserError, match=f"output folder {tmp_path / 'afile'}: cannot create the folder: .* is a file"):
        main([str(src), str(tmp_path / "afile"), "--workers", "1"])


def test_progress_is_a_plain_line_with_rate_and_time_left_when_not_on_a_terminal(tmp_path, capsys):
    src = tmp_path / "src"
    for k in range(4):
        _video(src / "c" / f"v{k}.mp4", 64, 48, frames=4)
    preprocess(src, tmp_path / "out", Settings(short_side=32), workers=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "preprocess: 1/4 videos (25 %)"  # no rate from one video: start-up is not in it
    assert re.fullmatch(r"preprocess: 2/4 videos \(50 %\), [\d.]+ (videos/s|s/video), about \d+ s left", lines[1])
    assert re.fullmatch(r"preprocess: 4/4 videos in \d+ s \(.* after the first\)", lines[-1])
