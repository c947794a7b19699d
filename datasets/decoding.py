"""Reading the sampled frames of one clip as a uint8 tensor (N, 3, H, W), from a frame folder or a
video file, in one call per clip.

Frame folders: the count is the number of files in the folder (`num_frames_from="dir"`, as the
original) or the list's number (`"list"`, no directory listing); JPEG frames are
decoded in one batched torchvision.io call (libjpeg-turbo, the same pixels as PIL), other formats
and broken files with PIL.
Videos: decord when installed (`backend="auto"`), else PyAV; the frame count comes from the
container. Any failure raises `BadSampleError` (a `UserError`) naming the file: there is no silent
substitution of another frame or video (the original loaded frame 1 instead of a broken frame).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.errors import UserError


class BadSampleError(UserError):
    """A sample's data (folder, frame, video) is missing or unreadable; the message names the file."""


def _unique(indices: Sequence[int]) -> tuple[list[int], list[int]]:
    """Sorted unique indices and, for every requested index, its position in that list."""
    uniq = sorted(set(int(i) for i in indices))
    pos = {v: k for k, v in enumerate(uniq)}
    return uniq, [pos[int(i)] for i in indices]


class FrameFolderReader:
    """Frames `root/<path>/<image_tmpl.format(index + index_bias)>`."""

    def __init__(self, image_tmpl: str = "img_{:05d}.jpg", index_bias: int = 1, num_frames_from: str = "dir"):
        if num_frames_from not in ("dir", "list"):
            raise ValueError(f"num_frames_from must be 'dir' or 'list', got {num_frames_from!r}")
        self.image_tmpl = image_tmpl
        self.index_bias = index_bias
        self.num_frames_from = num_frames_from

    def num_frames(self, folder: str | Path, listed: int | None) -> int:
        if self.num_frames_from == "list" and listed is not None:
            if listed <= 0:
                raise BadSampleError(f"{folder}: the list gives {listed} frames")
            return listed
        try:
            n = len(os.listdir(folder))
        except FileNotFoundError:
            raise BadSampleError(f"frame folder not found: {folder}") from None
        except NotADirectoryError:
            raise BadSampleError(f"not a frame folder: {folder}") from None
        except OSError as err:
            raise BadSampleError(f"cannot list frame folder {folder}: {err}") from None
        if n == 0:
            raise BadSampleError(f"frame folder is empty: {folder}")
        return n

    def frame_path(self, folder: str | Path, index: int) -> str:
        return os.path.join(str(folder), self.image_tmpl.format(index + self.index_bias))

    def read(self, folder: str | Path, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), 3, H, W) uint8 (channels-last memory); each distinct frame is decoded once."""
        uniq, where = _unique(indices)
        paths = [self.frame_path(folder, i) for i in uniq]
        hwc = decode_frames(paths)
        if hwc is None:
            hwc = _stack_same_size([torch.from_numpy(decode_frame(p)) for p in paths], folder)
        return _to_clip(hwc, uniq, where)


def _stack_same_size(frames: list[torch.Tensor], folder: str | Path) -> torch.Tensor:
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise BadSampleError(f"frames of {folder} differ in size: {sorted(shapes)}")
    return torch.stack(frames)


def decode_frames(paths: Sequence[str]) -> torch.Tensor | None:
    """JPEG files → (K, H, W, 3) uint8 with torchvision's batched libjpeg-turbo decoder, about
    25 % faster than PIL per clip here (docs/data.md); None when that is not possible (another
    format, a missing or corrupt file, torchvision without image decoders), so the caller uses
    PIL frame by frame, which also names the bad file."""
    if _decode_jpeg is None or not all(p.lower().endswith((".jpg", ".jpeg")) for p in paths):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision >= 0.29 marks its decoders deprecated
            chw = _decode_jpeg([_read_file(p) for p in paths], mode=_RGB)
        if len({tuple(f.shape) for f in chw}) > 1:
            return None
        return torch.stack([f.permute(1, 2, 0) for f in chw])
    except Exception:
        return None


try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.io import ImageReadMode as _Mode
        from torchvision.io import decode_jpeg as _decode_jpeg
        from torchvision.io import read_file as _read_file
    _RGB = _Mode.RGB
except ImportError:  # pragma: no cover - torchvision without image I/O
    _decode_jpeg = None


def _to_clip(hwc: np.ndarray | torch.Tensor, uniq: list[int], where: list[int]) -> torch.Tensor:
    """(K, H, W, 3) distinct frames → (N, 3, H, W) view in the requested order.

    The result keeps channels-last strides: torchvision's uint8 resize is about 2x faster on it
    than on a contiguous (N, 3, H, W) copy (measured, docs/data.md)."""
    clip = torch.from_numpy(hwc) if isinstance(hwc, np.ndarray) else hwc
    if where != list(range(len(uniq))):
        clip = clip[where]
    return clip.permute(0, 3, 1, 2)


def decode_frame(path: str) -> np.ndarray:
    """One image file → (H, W, 3) uint8 RGB with PIL (grayscale, palette and CMYK files converted).

    PIL and torchvision.io.decode_jpeg give identical pixels at about the same speed here
    (libjpeg-turbo in both); torchvision's decoders are deprecated since 0.29."""
    try:
        with Image.open(path) as im:
            return np.array(im if im.mode == "RGB" else im.convert("RGB"))
    except FileNotFoundError:
        raise BadSampleError(f"frame not found: {path}") from None
    except IsADirectoryError:
        raise BadSampleError(f"frame path is a folder: {path}") from None
    except Exception as err:  # PIL raises many types for corrupt data
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise BadSampleError(f"frame file is empty: {path}") from None
        raise BadSampleError(f"cannot decode frame {path}: {err}") from None


# ----------------------------------------------------------------------------- videos

def resolve_backend(backend: str = "auto") -> str:
    """`auto` → `decord` when importable, else `pyav`; a named backend must be importable."""
    if backend not in ("auto", "decord", "pyav"):
        raise UserError(f"data.video_backend must be auto, decord or pyav, got {backend!r}")
    if backend in ("auto", "decord"):
        try:
            import decord  # noqa: F401  (availability check)
            return "decord"
        except ImportError:
            if backend == "decord":
                raise UserError("data.video_backend is 'decord' but decord is not installed "
                                "(pip install decord, or use 'pyav')") from None
    try:
        import av  # noqa: F401
    except ImportError:
        raise UserError("no video decoder: install decord or av (PyAV)") from None
    return "pyav"


class VideoReader:
    """Open a video once; `num_frames` from the container, `read(indices)` in one batched call."""

    def __init__(self, path: str | Path, backend: str = "auto"):
        self.path = str(path)
        self.backend = resolve_backend(backend)
        if not os.path.isfile(self.path):
            raise BadSampleError(f"video not found: {self.path}")
        if os.path.getsize(self.path) == 0:
            raise BadSampleError(f"video file is empty: {self.path}")
        self._vr = None
        self._n: int | None = None
        try:
            if self.backend == "decord":
                import decord

                self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
                self._n = len(self._vr)
            else:
                self._n = _pyav_count(self.path)
        except BadSampleError:
            raise
        except Exception as err:
            if self.backend == "decord":
                self._explain_with_pyav()
            raise BadSampleError(f"cannot open video {self.path}: {_short(err)}") from None
        if not self._n:
            raise BadSampleError(f"video has no frames: {self.path}")

    def _explain_with_pyav(self) -> None:
        """decord's errors are terse: let PyAV say 'no video stream' / 'no frames' when it can."""
        try:
            n = _pyav_count(self.path)
        except BadSampleError:
            raise
        except Exception:
            return
        if n == 0:
            raise BadSampleError(f"video has no frames: {self.path}")

    @property
    def num_frames(self) -> int:
        return int(self._n or 0)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), 3, H, W) uint8 RGB."""
        uniq, where = _unique(indices)
        if uniq and (uniq[0] < 0 or uniq[-1] >= self.num_frames):
            raise BadSampleError(f"{self.path}: frame index {uniq[-1]} outside its {self.num_frames} frames")
        arr = None
        if self.backend == "decord":
            try:
                arr = self._vr.get_batch(uniq).asnumpy()
                if arr.ndim != 4 or arr.shape[-1] != 3:
                    arr = None
            except Exception:
                arr = None
            # decord fails on some geometries (e.g. 48 px wide: a 4-channel frame); PyAV is exact.
        if arr is None:
            try:
                arr = _pyav_read(self.path, uniq)
            except BadSampleError:
                raise
            except Exception as err:
                raise BadSampleError(f"cannot decode video {self.path}: {_short(err)}") from None
        return _to_clip(np.ascontiguousarray(arr), uniq, where)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:300] if text else type(err).__name__


def _pyav_count(path: str) -> int:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise BadSampleError(f"video has no frames (no video stream): {path}")
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def _pyav_read(path: str, wanted: list[int]) -> np.ndarray:
    """Decode in order up to the last wanted frame (frame i = i-th decoded frame, as decord)."""
    import av

    out: dict[int, np.ndarray] = {}
    targets = set(wanted)
    last = wanted[-1]
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            if i in targets:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = [i for i in wanted if i not in out]
    if missing:
        raise BadSampleError(f"video is truncated: {path} decodes fewer frames than frame {missing[0]}")
    return np.stack([out[i] for i in wanted])
