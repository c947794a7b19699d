"""Reading the sampled frames of one clip from a frame folder as a uint8 tensor (N, 3, H, W), in
one call per clip (videos: `datasets.video_reader`).

Frame folders: the count is the number of files in the folder (`num_frames_from="dir"`, as the
original) or the list's number (`"list"`, no directory listing); JPEG frames are
decoded in one batched torchvision.io call (libjpeg-turbo, the same pixels as PIL), other formats
and broken files with PIL.
Any failure raises `BadSampleError` (a `UserError`) naming the file: there is no silent
substitution of another frame or video (the original loaded frame 1 instead of a broken frame).
"""

from __future__ import annotations

import io
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


def unique_indices(indices: Sequence[int]) -> tuple[list[int], list[int]]:
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
        uniq, where = unique_indices(indices)
        paths = [self.frame_path(folder, i) for i in uniq]
        hwc = decode_frames(paths)
        if hwc is None:
            hwc = _stack_same_size([torch.from_numpy(decode_frame(p)) for p in paths], folder)
        return to_clip(hwc, uniq, where)


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
            warnings.simplefilter("ignore")  # torchvision >= 0.29 marks its image I/O deprecated
            datas = [_read_file(p) for p in paths]
        return _jpeg_batch(datas)
    except Exception:
        return None


def _jpeg_batch(datas: list[torch.Tensor]) -> torch.Tensor | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision >= 0.29 marks its decoders deprecated
        chw = _decode_jpeg(datas, mode=_RGB)
    if len({tuple(f.shape) for f in chw}) > 1:
        return None
    return torch.stack([f.permute(1, 2, 0) for f in chw])


def decode_frame_bytes(datas: Sequence[bytes], names: Sequence[str], where: str) -> torch.Tensor:
    """Encoded frames held in memory (a shard's sample) → (K, H, W, 3) uint8: JPEG in one batched
    call, anything else (or a corrupt frame) with PIL, whose error names `names[k]` of `where`."""
    if _decode_jpeg is not None and all(n.lower().endswith((".jpg", ".jpeg")) for n in names):
        try:
            out = _jpeg_batch([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas])
            if out is not None:
                return out
        except Exception:
            pass
    frames = []
    for data, name in zip(datas, names, strict=True):
        try:
            frames.append(torch.from_numpy(_pil_rgb(io.BytesIO(data))))
        except Exception as err:
            raise BadSampleError(f"cannot decode frame {name} of {where}: {err}") from None
    return _stack_same_size(frames, where)


try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.io import ImageReadMode as _Mode
        from torchvision.io import decode_jpeg as _decode_jpeg
        from torchvision.io import read_file as _read_file
    _RGB = _Mode.RGB
except ImportError:  # pragma: no cover - torchvision without image I/O
    _decode_jpeg = None


def to_clip(hwc: np.ndarray | torch.Tensor, uniq: list[int], where: list[int]) -> torch.Tensor:
    """(K, H, W, 3) distinct frames → (N, 3, H, W) view in the requested order.

    The result keeps channels-last strides: torchvision's uint8 resize is about 2x faster on it
    than on a contiguous (N, 3, H, W) copy (measured, docs/data.md)."""
    clip = torch.from_numpy(hwc) if isinstance(hwc, np.ndarray) else hwc
    if where != list(range(len(uniq))):
        clip = clip[where]
    return clip.permute(0, 3, 1, 2)


def _pil_rgb(source: str | io.BytesIO) -> np.ndarray:
    """An image (path or bytes) → (H, W, 3) uint8 RGB; grayscale, palette and CMYK converted."""
    with Image.open(source) as im:
        return np.array(im if im.mode == "RGB" else im.convert("RGB"))


def decode_frame(path: str) -> np.ndarray:
    """One image file → (H, W, 3) uint8 RGB with PIL (grayscale, palette and CMYK files converted).

    PIL and torchvision.io.decode_jpeg give identical pixels at about the same speed here
    (libjpeg-turbo in both); torchvision's decoders are deprecated since 0.29."""
    try:
        return _pil_rgb(path)
    except FileNotFoundError:
        raise BadSampleError(f"frame not found: {path}") from None
    except IsADirectoryError:
        raise BadSampleError(f"frame path is a folder: {path}") from None
    except Exception as err:  # PIL raises many types for corrupt data
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise BadSampleError(f"frame file is empty: {path}") from None
        raise BadSampleError(f"cannot decode frame {path}: {err}") from None
