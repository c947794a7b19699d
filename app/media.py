"""Inputs given by path rather than by a list: video files, frame folders and images, read through
the test pipeline (the same sampling, crops and views as test.py).

* `kind_of(path)`: `video`, `frames` (a folder of image files) or `image`;
* `load_input(path, cfg, ...)`: uint8 (crops*clips*T, 3, S, S) of one input, as test.py sees it;
  an image is a one-frame clip (its frame repeated T times, as the sampling of a 1-frame video);
* `open_media(path, cfg)`: frame count, frame rate and `read(indices)` for windows of a long input;
* `expand_inputs(paths)`: files and folders (searched recursively) to the inputs they hold.
predict.py, `app.timeline` and `app.extract` use these.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.clip_options import Augmentation, ClipSampling
from datasets.data_builder import eval_transform
from datasets.decoding import FrameFolderReader, decode_frame
from datasets.lists import VideoRecord
from datasets.make_list import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, template_regex
from datasets.sampling import sample_indices
from datasets.source_base import ClipReader
from datasets.source_frames import FramesReader
from datasets.source_videos import VideoFilesReader
from datasets.video_dataset import VideoDataset
from datasets.video_reader import VideoReader
from utils.config import Config
from utils.errors import UserError


def _image_names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))


def kind_of(path: str | Path) -> str:
    """`video`, `frames` or `image`; a UserError for anything else (the message names the path)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {path}")
    if p.is_dir():
        return "frames"
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"  # any other file: the decoder says whether it is one


def infer_frame_template(folder: Path, preferred: str, index_bias: int) -> tuple[str, int, int]:
    """(image_tmpl, index_bias, frame count) for a frame folder.

    The config's template is used when its first frame exists; otherwise it is inferred from the
    file names (`frame_0001.png` -> `frame_{:04d}.png`, first index 1)."""
    names = _image_names(folder)
    if not names:
        raise UserError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    if (folder / preferred.format(index_bias)).is_file():
        count = sum(1 for n in names if template_regex(preferred).fullmatch(n))
        return preferred, index_bias, count
    m = re.fullmatch(r"(.*?)(\d+)(\.[A-Za-z0-9]+)", names[0])
    if not m:
        raise UserError(
            f"{folder}: cannot tell the frame numbering from the file name '{names[0]}' (expected e.g. img_00001.jpg)"
        )
    prefix, digits, ext = m.groups()
    number = f"{{:0{len(digits)}d}}" if digits.startswith("0") else "{}"
    tmpl = prefix.replace("{", "{{").replace("}", "}}") + number + ext
    pattern = re.escape(prefix) + r"(\d+)" + re.escape(ext)
    indices = sorted(int(mm.group(1)) for n in names if (mm := re.fullmatch(pattern, n)))
    first = indices[0]
    if indices != list(range(first, first + len(indices))):
        raise UserError(f"{folder}: frame numbers are not contiguous from {prefix}{digits}{ext}")
    return tmpl, first, len(indices)


def _decoder_error(path: str | Path, err: Exception) -> UserError:
    """A decoder's own exception type as one clear line naming the input."""
    text = str(err).strip()
    detail = text.splitlines()[-1] if text else type(err).__name__
    return UserError(f"cannot read {path}: {detail}")


def load_input(path: str | Path, cfg: Config, *, crops: int = 1, clips: int = 1, dense: bool = False) -> torch.Tensor:
    """uint8 (crops*clips*T, 3, S, S) of one video file, frame folder or image, as test.py would see it."""
    p = Path(path)
    kind = kind_of(p)
    transform = eval_transform(cfg.data, crops)
    frames_per_clip = int(cfg.data.num_segments)
    if kind == "image":
        frame = torch.from_numpy(decode_frame(str(p))).permute(2, 0, 1)[None]  # (1, 3, H, W)
        idx = sample_indices(1, frames_per_clip, mode="test", clips=clips, dense=dense)
        return transform(frame[idx])[0]
    reader: ClipReader
    if kind == "frames":
        tmpl, bias, n = infer_frame_template(p, cfg.data.image_tmpl, int(cfg.data.index_bias))
        reader, record = FramesReader(tmpl, bias, "list"), VideoRecord(str(p), n, 0, 1)
    else:
        reader, record = VideoFilesReader(cfg.data.decoder), VideoRecord(str(p), None, 0, 1)
    sampling = ClipSampling(frames_per_clip, "test", dense=dense, test_clips=clips, seed=int(cfg.seed))
    ds = VideoDataset(
        [record], root="", reader=reader, sampling=sampling, augment=Augmentation(transform), list_path=str(path)
    )
    try:
        return ds.load(0, ds.rng(0))[0]
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - one clear line per input
        raise _decoder_error(path, err) from None


@dataclass
class Media:
    """A long input opened once: `num_frames`, `fps` (None when unknown) and `read(indices)` ->
    uint8 (len(indices), 3, H, W)."""

    path: str
    kind: str
    num_frames: int
    fps: float | None
    read: Callable[[Sequence[int]], torch.Tensor]


def video_fps(path: str | Path) -> float | None:
    """The average frame rate in the container's header (PyAV), None when it gives none."""
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return float(rate) if rate else None
    except Exception:  # noqa: BLE001 - the reader reports unreadable files
        return None


def open_media(path: str | Path, cfg: Config, fps: float | None = None) -> Media:
    """Frame count, frame rate (`fps` overrides the file's; frame folders and images have none) and a
    batched reader of one input."""
    p = Path(path)
    kind = kind_of(p)
    if kind == "image":
        frame = torch.from_numpy(decode_frame(str(p))).permute(2, 0, 1)[None]
        return Media(str(p), kind, 1, fps, lambda idx: frame[[0] * len(idx)])
    if kind == "frames":
        tmpl, bias, n = infer_frame_template(p, cfg.data.image_tmpl, int(cfg.data.index_bias))
        reader = FrameFolderReader(tmpl, bias, "list")
        return Media(str(p), kind, n, fps, lambda idx: reader.read(p, list(idx)))
    try:
        video = VideoReader(str(p), cfg.data.decoder)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise _decoder_error(path, err) from None

    def read(idx: Sequence[int]) -> torch.Tensor:
        try:
            return video.read(list(idx))
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001
            raise _decoder_error(path, err) from None

    return Media(str(p), kind, video.num_frames, fps if fps else video_fps(p), read)


def expand_inputs(paths: Sequence[str | Path]) -> list[str]:
    """Video files, images and frame folders named by `paths`; a folder that holds no image file is
    searched recursively (sorted) for them. Each input once; a UserError when none is found."""
    out: list[str] = []

    def walk(folder: Path) -> None:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        images = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if images and not any(e.is_file() and e.name.lower().endswith(VIDEO_EXTENSIONS) for e in entries):
            out.append(str(folder))  # a frame folder
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                walk(Path(e.path))
            elif e.name.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS):
                out.append(e.path)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"input not found: {raw}")
        if p.is_dir():
            walk(p)
        else:
            out.append(str(raw))
    if not out:
        raise UserError(f"no videos, frame folders or images found in {', '.join(map(str, paths))}")
    seen: set[str] = set()
    repeated = [x for x in out if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
    if repeated:
        raise UserError(f"input given twice: {repeated[0]}")
    return out


def uniform_window_indices(start: int, length: int, frames: int, clips: int = 1) -> list[int]:
    """Test-mode sampling of `frames` frames per clip inside frames [start, start + length)."""
    return [start + i for i in sample_indices(length, frames, mode="test", clips=clips)]


def as_numpy_ids(ids: Sequence[str]) -> np.ndarray:
    """Unicode array of ids (loadable without pickle)."""
    return np.array(list(ids), dtype=str) if ids else np.zeros(0, dtype="<U1")
