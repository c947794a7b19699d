"""Scan a dataset up front and report every problem at once (`python -m datasets.check --config CFG`).

Checks the label CSV, every list line (format, label range), and every sample: the frame folder
exists, holds the frames that sampling can ask for (`index_bias` .. n-1+`index_bias` with the
configured template), and its first and last frame decode; or the video opens, has frames, and its
first and last frame decode. `--full` decodes every frame. Exit status 1 when anything is wrong.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datasets.decoding import BadSampleError, FrameFolderReader, decode_frame
from datasets.lists import VideoRecord, read_label_csv, scan_list
from datasets.video_reader import VideoReader, resolve_decoder
from utils.errors import UserError, run_cli


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
        problems.append(f"{folder}: {len(missing)} of the {n} frames that sampling can read are missing "
                        f"({', '.join(missing[:3])}{more}; template {reader.image_tmpl!r}, "
                        f"index_bias {reader.index_bias})")
    if record.num_frames is not None and record.num_frames != len(names) and reader.num_frames_from == "dir":
        problems.append(f"{folder}: note: the list says {record.num_frames} frames, the folder holds "
                        f"{len(names)} files (sampling uses the folder count)")
    present = [e for e in expected if e in names]
    for name in (present if full else present[:1] + present[-1:]):
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


def check_split(data: Any, split: str, full: bool = False, workers: int = 8) -> tuple[int, list[str]]:
    """(number of samples scanned, problem messages) for `train` or `val`."""
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
    if records and is_video != (data.modality == "video"):
        problems.append(f"{list_path} is a {'video' if is_video else 'frames'} list but data.modality is "
                        f"'{data.modality}'")
        return len(records), problems
    reader = FrameFolderReader(data.image_tmpl, data.index_bias, data.num_frames_from)
    decoder = resolve_decoder(data.decoder) if is_video else ""

    def one(rec: VideoRecord) -> list[str]:
        path = os.path.join(root, rec.path) if root else rec.path
        found = check_video(path, decoder, full) if is_video else check_frames(path, rec, reader, full)
        return [f"{list_path}:{rec.line}: {msg}" for msg in found]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found in pool.map(one, records):
            problems += found
    short = [r for r in records if r.num_frames is not None and r.num_frames < data.min_frames]
    if short:
        problems.append(f"{list_path}: note: {len(short)} video(s) list fewer than data.min_frames={data.min_frames} "
                        f"frames; training and train-time validation skip them (test keeps them)")
    return len(records), problems


def main(argv: list[str] | None = None) -> None:
    from utils.config import add_config_args, load_config

    parser = argparse.ArgumentParser(prog="python -m datasets.check", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--split", choices=("train", "val", "all"), default="all")
    parser.add_argument("--full", action="store_true", help="decode every frame (slow)")
    parser.add_argument("--workers", type=int, default=8, help="threads scanning in parallel")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    splits = ("train", "val") if args.split == "all" else (args.split,)
    total_errors = 0
    for split in splits:
        n, problems = check_split(cfg.data, split, args.full, args.workers)
        errors = [p for p in problems if ": note: " not in p]
        for p in problems:
            print(p)
        print(f"{split}: {n} videos scanned, {len(errors)} problem(s)"
              + (f", {len(problems) - len(errors)} note(s)" if len(problems) > len(errors) else ""))
        total_errors += len(errors)
    if total_errors:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
