"""Scan a dataset up front and report every problem at once (`python -m datasets.check --config CFG`).

Checks the label CSV, every list line (format, label range), and every sample: the frame folder
exists, holds the frames that sampling can ask for (`index_bias` .. n-1+`index_bias` with the
configured template), none of them is an empty file, a file that is not an image at all or a
JPEG / PNG cut short (file size, the format's signature in the first bytes and its end marker in
the last ones: a stat and two small reads per frame, no decoding), and its first and last frame
decode; or the video opens, has frames, and its first and last frame
decode. `--full` decodes every frame. Progress goes to stderr (a bar on a terminal, a line every
10 % or 30 s otherwise), and for videos the decoder used (and why a better one was skipped). A
decoder that cannot run on this machine is one error naming the fix, not a bad-file report per
video; a file the decoder cannot open is reported as damaged only when PyAV cannot read it either.
Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import argparse

from utils.cli import add_config_args, cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m datasets.check", __doc__.split("\n\n")[0])
    add_config_args(parser, required=True)
    parser.add_argument("--split", choices=("train", "val", "all"), default="all", help="which list to check")
    parser.add_argument("--full", action="store_true", help="decode every frame (slow)")
    parser.add_argument("--workers", type=int, default=8, help="threads scanning in parallel")
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from datasets.decoding import BadSampleError, FrameFolderReader, decode_frame
from datasets.lists import VideoRecord, read_label_csv, scan_list
from datasets.source_base import check_modality
from datasets.video_reader import VideoReader, decoder_choice, resolve_decoder
from utils.config import load_config
from utils.config_schema import DataConfig
from utils.errors import UserError, run_cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
JPEG_SOI, JPEG_EOI = b"\xff\xd8\xff", b"\xff\xd9"
PNG_SIGNATURE, PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND"
OTHER_IMAGES = (b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")  # BMP, GIF, TIFF (+ RIFF....WEBP)
TAIL_BYTES = 32  # some encoders pad a few bytes after the end-of-image marker
HEAD_BYTES = 16


def cheap_frame_problem(path: str) -> str | None:
    """What is wrong with a frame file that its size and first and last bytes show, without
    decoding: empty; not an image at all (no JPEG, PNG, BMP, GIF, TIFF or WebP signature, e.g. a
    text file named .jpg); a JPEG without its end-of-image marker or a PNG without its IEND chunk
    (a copy or an extraction cut short). The type comes from the bytes, not the name (PIL reads a
    PNG named .jpg). None if none of these."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return f"frame file is empty (0 bytes): {path}"
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read()
    except OSError as err:
        return f"cannot read frame {path}: {err}"
    if head.startswith(JPEG_SOI):
        if JPEG_EOI not in tail:
            return f"truncated JPEG (no end-of-image marker at the end of the file, {size} bytes): {path}"
        return None
    if head.startswith(PNG_SIGNATURE):
        if PNG_IEND not in tail:
            return f"truncated PNG (no IEND chunk at the end of the file, {size} bytes): {path}"
        return None
    if head.startswith(OTHER_IMAGES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not an image file ({size} bytes, starting {head[:8]!r}): {path}"
    return None


def check_frames(folder: str, record: VideoRecord, reader: FrameFolderReader, full: bool) -> list[str]:
    """Problems of one frame folder (empty list = fine)."""
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        return [f"frame folder not found: {folder}"]
    except OSError as err:
        return [f"cannot list frame folder {folder}: {err}"]
    if not names:
        return [f"frame folder is empty: {folder}"]
    n = record.num_frames if reader.num_frames_from == "list" and record.num_frames else len(names)
    expected = [reader.image_tmpl.format(i + reader.index_bias) for i in range(n)]
    missing = [e for e in expected if e not in names]
    problems = []
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        problems.append(
            f"{folder}: {len(missing)} of the {n} frames that sampling can read are missing "
            f"({', '.join(missing[:3])}{more}; template {reader.image_tmpl!r}, "
            f"index_bias {reader.index_bias})"
        )
    if record.num_frames is not None and record.num_frames != len(names) and reader.num_frames_from == "dir":
        problems.append(
            f"{folder}: note: the list says {record.num_frames} frames, the folder holds "
            f"{len(names)} files (sampling uses the folder count)"
        )
    present = [e for e in expected if e in names]
    flagged = set()
    for name in present:
        found = cheap_frame_problem(os.path.join(folder, name))
        if found:
            problems.append(found)
            flagged.add(name)
    for name in present if full else dict.fromkeys(present[:1] + present[-1:]):
        if name in flagged:
            continue
        try:
            decode_frame(os.path.join(folder, name))
        except BadSampleError as err:
            problems.append(str(err))
    return problems


def check_video(path: str, decoder: str, full: bool) -> list[str]:
    try:
        reader = VideoReader(path, decoder)
        n = reader.num_frames
        reader.read(list(range(n)) if full else sorted({0, n - 1}))
    except BadSampleError as err:
        return [str(err)]
    return []


class Progress:
    """Samples checked so far, on stderr: a tqdm bar on a terminal; otherwise (a log file, a batch
    job) a line at every 10 % and at least every `every_s` seconds."""

    def __init__(self, total: int, label: str, every_s: float = 30.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self.done, self.last = 0, time.monotonic()
        self.bar = (
            tqdm(total=total, desc=label, unit="video", file=sys.stderr, leave=False, dynamic_ncols=True)
            if sys.stderr.isatty()
            else None
        )
        self.marks = [math.ceil(total * p / 10) for p in range(1, 11)]

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if (self.marks and self.done >= self.marks[0]) or now - self.last >= self.every_s:
            while self.marks and self.done >= self.marks[0]:
                self.marks.pop(0)
            self.last = now
            print(f"{self.label}: {self.done}/{self.total} videos checked", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_split(
    data: DataConfig, split: str, full: bool = False, workers: int = 8, progress: bool = False
) -> tuple[int, list[str]]:
    """(number of samples scanned, problem messages) for `train` or `val`; `progress` shows how far
    the scan is (see `Progress`)."""
    list_path = data.train_list if split == "train" else data.val_list
    root = data.train_root if split == "train" else data.val_root
    key = f"data.{split}_list"
    if not list_path:
        return 0, [f"{key} is not set"]
    problems: list[str] = []
    num_classes = None
    if data.label_list:
        try:
            num_classes = len(read_label_csv(data.label_list))
        except UserError as err:
            problems.append(str(err))
    try:
        records, bad_lines = scan_list(list_path, num_classes)
    except UserError as err:
        return 0, problems + [str(err)]
    problems += bad_lines
    if root and not os.path.isdir(root):
        return len(records), problems + [f"data.{split}_root is not a folder: {root}"]
    is_video = bool(records) and records[0].num_frames is None
    try:
        if records:
            check_modality("video" if is_video else "RGB", data, f"{list_path} is a {{kind}} list")
    except UserError as err:
        return len(records), problems + [str(err)]
    reader = FrameFolderReader(data.image_tmpl, data.index_bias, data.num_frames_from)
    decoder = resolve_decoder(data.decoder, log=False) if is_video else ""  # one line if it cannot run here
    if is_video and progress:
        print(f"check {split}: {decoder_choice(data.decoder)}", file=sys.stderr, flush=True)

    def one(rec: VideoRecord) -> list[str]:
        path = os.path.join(root, rec.path) if root else rec.path
        found = check_video(path, decoder, full) if is_video else check_frames(path, rec, reader, full)
        return [f"{list_path}:{rec.line}: {msg}" for msg in found]

    shown = Progress(len(records), f"check {split}") if progress else None
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found in pool.map(one, records):
            problems += found
            if shown is not None:
                shown.update()
    if shown is not None:
        shown.close()
    short = [r for r in records if r.num_frames is not None and r.num_frames < data.min_frames]
    if short:
        problems.append(
            f"{list_path}: note: {len(short)} video(s) list fewer than data.min_frames={data.min_frames} "
            f"frames; training and train-time validation skip them (test keeps them)"
        )
    return len(records), problems


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.opts)
    splits = ("train", "val") if args.split == "all" else (args.split,)
    total_errors = 0
    for split in splits:
        n, problems = check_split(cfg.data, split, args.full, args.workers, progress=True)
        errors = [p for p in problems if ": note: " not in p]
        for p in problems:
            print(p)
        print(
            f"{split}: {n} videos scanned, {len(errors)} problem(s)"
            + (f", {len(problems) - len(errors)} note(s)" if len(problems) > len(errors) else "")
        )
        total_errors += len(errors)
    if total_errors:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
