"""Reading the sampled frames of a video file (or its bytes, from a shard) in one batched call.

Decoders (`data.decoder`), in the order `auto` prefers them:
- `torchcodec` (PyTorch's decoder; needs FFmpeg's shared libraries 4-8): `get_frames_at` for the
  sampled indices, CPU or NVDEC (`device="cuda"`). Fastest here and pixel-identical to decord and
  PyAV on every file tested (tests/test_data_decoders.py).
- `decord`: `get_batch`; on some geometries (48 px wide) it returns broken 4-channel frames, and the
  reader then decodes that clip with PyAV.
- `pyav` (bundles FFmpeg, so it always installs): one decoding pass up to the last wanted frame;
  on constant-frame-rate files (`approximate`, below) a seek to each wanted frame's keyframe.
Frame i is the i-th decoded frame for all three. Any failure raises `BadSampleError` naming the
file; no decoder silently substitutes another frame.

Whether a decoder can run here is decided by a real decode of a tiny generated clip, once per
process (`decoder_problem`): torchcodec imports fine on a machine without FFmpeg's shared
libraries and fails only when it opens a video. `auto` logs one line naming the decoder it took
and why each better one was skipped. A decoder that cannot run raises `DecoderUnavailableError`
(the fix named), never a per-file error; a file that one decoder cannot open is tried with PyAV,
so the message says whether the file or the decoder is at fault.

Seek mode (torchcodec): `exact` scans the file's packet index when it is opened (always right);
`approximate` trusts the header's frame rate and is right only for constant-frame-rate files. It
saves 0.5-1 ms per clip (docs/data.md), so the builder uses it only on files written by
`python -m datasets.preprocess` (constant frame rate by construction). PyAV uses the same
assumption there to seek instead of decoding from the start (~10x faster on all-intra files).
Decoder-side resizing (torchcodec `transforms=`) is not used: it is bilinear in FFmpeg, differs
from torchvision's resize by up to 7 grey levels and was no faster on 720p files (docs/data.md).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datasets.decoding import BadSampleError, to_clip, unique_indices
from utils.errors import UserError

DECODERS = ("torchcodec", "decord", "pyav")
# How a decoder seeks: `approximate` trusts a constant frame rate (python -m datasets.preprocess output)
SeekMode = Literal["exact", "approximate"]
CFR_MARKER = "text4vis_preprocess.json"  # written by datasets.preprocess into its output folder
FFMPEG_PACKAGES = "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 libavdevice59"
FFMPEG_FIX = (
    f"install FFmpeg's shared libraries: apt-get install -y {FFMPEG_PACKAGES} (Debian 12; "
    f"scripts/setup_env.sh does this when run as root)"
)
PROBE_SIZE = (64, 48)  # (w, h) of the probe clip: small, even (yuv420p), not 48 wide (decord)
PROBE_GREY = (60, 190)  # its two frames are flat grey at these levels
_log = logging.getLogger("Text4Vis")


class DecoderUnavailableError(UserError):
    """The configured decoder cannot run on this machine (a missing library), as opposed to a bad
    file: not a `BadSampleError`, so `data.on_bad_sample: skip` does not skip every video."""


@functools.cache
def _probe_clip() -> bytes:
    """A two-frame H.264 mp4 (flat grey frames), written with PyAV into a temporary folder once
    per process: what `decoder_problem` asks each decoder to decode."""
    import av

    w, h = PROBE_SIZE
    with tempfile.TemporaryDirectory(prefix="text4vis-probe-") as tmp:
        path = os.path.join(tmp, "probe.mp4")
        with av.open(path, "w") as out:
            stream = out.add_stream("libx264", rate=25, options={"threads": "1"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for level in PROBE_GREY:
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level, np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as fh:
            return fh.read()


def _decode_probe(name: str, path: str) -> np.ndarray:
    """Frame 1 of the probe clip at `path`, decoded by decoder `name`, as (H, W, C) uint8."""
    if name == "torchcodec":
        from torchcodec.decoders import VideoDecoder

        return VideoDecoder(path, num_ffmpeg_threads=1).get_frame_at(1).data.permute(1, 2, 0).numpy()
    if name == "decord":
        import decord

        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)[1].asnumpy()
    import av

    with av.open(path) as container:
        frames = container.decode(video=0)
        next(frames)
        return next(frames).to_ndarray(format="rgb24")


@functools.cache
def decoder_problem(name: str) -> str | None:
    """Why decoder `name` cannot run here, or None when it can.

    Decided by a real decode (frame 1 of a tiny generated H.264 clip, checked against its known
    grey level), once per process: importing torchcodec succeeds without FFmpeg's libraries, and
    only opening a video shows they are missing."""
    if name not in DECODERS:
        return f"unknown decoder {name!r}"
    module = {"torchcodec": "torchcodec", "decord": "decord", "pyav": "av"}[name]
    if importlib.util.find_spec(module) is None:
        return f"{name} is not installed (pip install {module})"
    try:
        data = _probe_clip()
    except Exception as err:
        return f"the test clip could not be written with PyAV ({_short(err)})"
    try:
        with tempfile.TemporaryDirectory(prefix="text4vis-probe-") as tmp:
            path = os.path.join(tmp, "probe.mp4")
            with open(path, "wb") as fh:
                fh.write(data)
            frame = _decode_probe(name, path)
    except Exception as err:
        if name == "torchcodec" and "libtorchcodec" in str(err):
            return _torchcodec_load_problem(str(err))
        return f"{name} cannot decode a test clip: {_short(err)}"
    w, h = PROBE_SIZE
    if frame.shape != (h, w, 3) or abs(float(frame.mean()) - PROBE_GREY[1]) > 8:
        return f"{name} decodes a test clip wrongly (frame of shape {tuple(frame.shape)}, mean {frame.mean():.0f})"
    return None


def _torchcodec_load_problem(text: str) -> str:
    """torchcodec's 'Could not load libtorchcodec' message (a page of tracebacks, one per FFmpeg
    version it tried) → one line: each version's cause and the fix."""
    causes: dict[str, str] = {}
    version = ""
    for line in text.splitlines():
        found = re.match(r"\s*FFmpeg version (\d+):", line)
        if found:
            version = found.group(1)
            continue
        error = re.match(r"\w+(?:Error|Exception): (.*)", line)
        if version and error and version not in causes:  # the first error of a version: its cause
            causes[version] = error.group(1).strip()
    missing = {v: c for v, c in causes.items() if "cannot open shared object file" in c}
    if causes and len(missing) == len(causes):
        libs = ", ".join(c.split(":", 1)[0] for c in missing.values())
        why = f"FFmpeg's shared libraries are not installed (none of {libs} found)"
    elif causes:
        why = "libtorchcodec does not load: " + "; ".join(f"FFmpeg {v}: {c}" for v, c in causes.items())
    else:
        why = "libtorchcodec does not load: " + " ".join(text.split())
    return f"torchcodec cannot run on this machine: {why}; to use it, {FFMPEG_FIX}"


def available_decoders() -> list[str]:
    """The decoders that work here, best first."""
    return [d for d in DECODERS if decoder_problem(d) is None]


def _first_working() -> str | None:
    """The first decoder in `auto`'s order that works here; the ones after it are not probed."""
    return next((d for d in DECODERS if decoder_problem(d) is None), None)


def decoder_choice(name: str = "auto") -> str:
    """One line: the decoder `data.decoder: name` uses here and why each better one was skipped."""
    if name != "auto":
        return f"video decoder: {name} (data.decoder)"
    chosen = _first_working()
    better = DECODERS[: DECODERS.index(chosen)] if chosen else DECODERS
    chosen = chosen or "none"
    return f"video decoder: {chosen} (data.decoder: auto)" + "".join(
        f"; {d} skipped: {decoder_problem(d)}" for d in better
    )


@functools.cache
def _log_choice(name: str) -> None:
    """Say once per process which decoder `auto` took (a warning when a better one was skipped)."""
    line = decoder_choice(name)
    (_log.warning if "skipped" in line else _log.info)(line)


def resolve_decoder(name: str = "auto", device: str = "cpu", *, log: bool = True) -> str:
    """`auto` → the best decoder that works here (torchcodec, decord, PyAV); a named one must work here.

    `device="cuda"` (NVDEC) needs torchcodec. `log`: say the choice of `auto` (once per process);
    a tool that prints `decoder_choice` itself passes False."""
    if name not in ("auto", *DECODERS):
        raise UserError(f"data.decoder must be auto, torchcodec, decord or pyav, got {name!r}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"data.decode_device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        if name not in ("auto", "torchcodec"):
            raise UserError(f"data.decode_device: cuda decodes with torchcodec (NVDEC), not {name}")
        problem = decoder_problem("torchcodec")
        if problem:
            raise DecoderUnavailableError(f"data.decode_device: cuda needs torchcodec: {problem}")
        if not torch.cuda.is_available():
            raise UserError("data.decode_device is cuda but no CUDA device is available")
        return "torchcodec"
    if name != "auto":
        problem = decoder_problem(name)
        if problem:
            raise DecoderUnavailableError(f"data.decoder is {name!r} but {problem}; or set data.decoder: auto")
        return name
    chosen = _first_working()
    if chosen is None:
        raise DecoderUnavailableError(
            "no video decoder works on this machine: " + "; ".join(f"{d}: {decoder_problem(d)}" for d in DECODERS)
        )
    if log:
        _log_choice(name)
    return chosen


def _short(err: BaseException) -> str:
    """The informative tail of a decoder's error (torchcodec prefixes its C++ source location)."""
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    if ".cpp:" in line:
        line = line.split(".cpp:", 1)[1].split(",", 1)[-1].strip()
    return line[:300]


class VideoReader:
    """Open a video once: `num_frames` from the container, `read(indices)` in one batched call.

    `source` is a path, or the file's bytes (shards) with `name` used in messages. `device="cuda"`
    decodes with NVDEC (torchcodec) and returns CUDA tensors."""

    def __init__(
        self,
        source: str | Path | bytes,
        decoder: str = "auto",
        *,
        device: str = "cpu",
        seek_mode: SeekMode = "exact",
        name: str | None = None,
    ):
        self.decoder = resolve_decoder(decoder, device)
        self.device = device
        self.seek_mode = seek_mode
        self.data: bytes | None = source if isinstance(source, bytes) else None
        self.path = name or ("<bytes>" if self.data is not None else str(source))
        if self.data is None:
            if not os.path.isfile(self.path):
                raise BadSampleError(f"video not found: {self.path}")
            if os.path.getsize(self.path) == 0:
                raise BadSampleError(f"video file is empty: {self.path}")
        elif not self.data:
            raise BadSampleError(f"video file is empty: {self.path}")
        self._dec: Any = None
        self._n = 0
        try:
            self._open()
        except BadSampleError:
            raise
        except Exception as err:
            if "libtorchcodec" in str(err):  # the library, not the file (FFmpeg removed since the probe)
                raise DecoderUnavailableError(
                    f"cannot open video {self.path}: {_torchcodec_load_problem(str(err))}"
                ) from None
            if self.decoder != "pyav":
                self._explain_with_pyav(err)
            raise BadSampleError(
                f"cannot open video {self.path}: {_short(err)} (the file is damaged or not a video: "
                f"{'PyAV cannot read it either' if self.decoder != 'pyav' else 'FFmpeg cannot read it'})"
            ) from None
        if not self._n:
            raise BadSampleError(f"video has no frames: {self.path}")

    def _source(self) -> Any:
        return io.BytesIO(self.data) if self.data is not None else self.path

    def _open(self) -> None:
        if self.decoder == "torchcodec":
            from torchcodec.decoders import VideoDecoder

            src = self.data if self.data is not None else self.path
            self._dec = VideoDecoder(src, seek_mode=self.seek_mode, num_ffmpeg_threads=1, device=self.device)
            meta = self._dec.metadata
            self._n = int(meta.num_frames or 0)
            header, content = meta.num_frames_from_header, meta.num_frames_from_content
            if header and content is not None and content < header:
                raise BadSampleError(
                    f"video is truncated: {self.path} holds {content} of the {header} frames its header lists"
                )
        elif self.decoder == "decord":
            import decord

            self._dec = decord.VideoReader(self._source(), ctx=decord.cpu(0), num_threads=1)
            self._n = len(self._dec)
        else:
            self._dec, self._n = _pyav_open(self._source(), self.path)

    def _explain_with_pyav(self, err: Exception) -> None:
        """torchcodec's and decord's errors are terse, and do not say whether the file or the
        decoder is at fault: PyAV says 'no video stream' / 'no frames', or reads the file (then
        the decoder is at fault, and the message names the one that works)."""
        try:
            container, n = _pyav_open(self._source(), self.path)
            if container is not None:
                with container:
                    next(container.decode(video=0))
        except BadSampleError:
            raise
        except Exception:
            return
        if n == 0:
            raise BadSampleError(f"video has no frames: {self.path}")
        raise BadSampleError(
            f"cannot open video {self.path} with {self.decoder}: {_short(err)} (the file is readable: PyAV "
            f"decodes it; set data.decoder: pyav)"
        )

    def _pyav_container(self) -> Any:
        """The container `_open` left open (PyAV, read once), else a newly opened one."""
        import av

        if self.decoder == "pyav" and self._dec is not None:
            container, self._dec = self._dec, None
            return container
        return av.open(self._source())

    @property
    def num_frames(self) -> int:
        return self._n

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), 3, H, W) uint8 RGB (channels-last strides), on the decode device."""
        uniq, where = unique_indices(indices)
        if uniq and (uniq[0] < 0 or uniq[-1] >= self._n):
            raise BadSampleError(f"{self.path}: frame index {uniq[-1]} outside its {self._n} frames")
        if self.decoder == "torchcodec":
            try:
                return to_clip(self._dec.get_frames_at(uniq).data.permute(0, 2, 3, 1), uniq, where)
            except Exception as err:
                raise BadSampleError(f"cannot decode video {self.path}: {_short(err)}") from None
        arr = None
        if self.decoder == "decord":
            try:
                arr = self._dec.get_batch(uniq).asnumpy()
                if arr.ndim != 4 or arr.shape[-1] != 3:
                    arr = None
            except Exception:
                arr = None
            # decord fails on some geometries (e.g. 48 px wide: a 4-channel frame); PyAV is exact.
        if arr is None:
            try:
                if self.seek_mode == "approximate":
                    with self._pyav_container() as container:
                        arr = _pyav_read_seeking(container, uniq)
                if arr is None:
                    with self._pyav_container() as container:
                        arr = _pyav_read(container, uniq, self.path)
            except BadSampleError:
                raise
            except Exception as err:
                raise BadSampleError(f"cannot decode video {self.path}: {_short(err)}") from None
        return to_clip(np.ascontiguousarray(arr), uniq, where)


def _pyav_open(source: Any, name: str) -> tuple[Any, int]:
    """(open container, frame count). The count comes from the header when it has one; otherwise
    the packets are counted, and the container, read to its end, is closed (None)."""
    import av

    container = av.open(source)
    try:
        if not container.streams.video:
            raise BadSampleError(f"video has no frames (no video stream): {name}")
        stream = container.streams.video[0]
        if stream.frames:
            return container, int(stream.frames)
        n = sum(1 for packet in container.demux(stream) if packet.size)
    except BaseException:
        container.close()
        raise
    container.close()
    return None, n


def _pyav_read(container: Any, wanted: list[int], name: str) -> np.ndarray:
    """Decode in order up to the last wanted frame (frame i = i-th decoded frame, as decord)."""
    out: dict[int, np.ndarray] = {}
    targets = set(wanted)
    last = wanted[-1]
    stream = container.streams.video[0]
    stream.thread_count = 1
    for i, frame in enumerate(container.decode(stream)):
        if i in targets:
            out[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    missing = [i for i in wanted if i not in out]
    if missing:
        raise BadSampleError(f"video is truncated: {name} decodes fewer frames than frame {missing[0]}")
    return np.stack([out[i] for i in wanted])


def _pyav_read_seeking(container: Any, wanted: list[int]) -> np.ndarray | None:
    """Constant-frame-rate files (`seek_mode: approximate`): for each wanted frame, seek to the
    keyframe at or before its timestamp (start + i / rate) and decode forward to it, instead of
    decoding everything before the last one (a pre-processed all-intra clip: ~12x fewer frames).

    Returns None when a timestamp does not fall on the constant-rate grid or a seek overshoots;
    the caller then decodes sequentially, which is right for any file."""
    out: dict[int, np.ndarray] = {}
    stream = container.streams.video[0]
    stream.thread_count = 1
    rate = stream.average_rate or stream.guessed_rate
    if not rate or stream.time_base is None:
        return None
    start = stream.start_time or 0
    step = Fraction(1) / (Fraction(rate) * stream.time_base)  # ticks per frame
    frames: Iterator[Any] | None = None
    pos = -1  # index of the last decoded frame
    for target in wanted:
        if frames is None or target > pos + 1:
            container.seek(start + math.floor(target * step), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            if frame.pts is None:
                return None
            exact = (frame.pts - start) / step
            pos = round(exact)
            if abs(exact - pos) > Fraction(1, 4) or pos > target:
                return None
            if pos == target:
                out[target] = frame.to_ndarray(format="rgb24")
                break
        if target not in out:
            return None  # past the end: the sequential pass names the truncation
    return np.stack([out[i] for i in wanted])
