"""Pack a list into tar shards for `data.format: shards` (`python -m datasets.shards`).

    python -m datasets.shards LIST --root ROOT --out DIR/NAME [--labels CSV] [--maxcount 1000]
                              [--maxsize 1e9] [--no-shuffle] [--seed 0] [--image-tmpl img_{:05d}.jpg]

writes DIR/NAME-000000.tar, ... with the webdataset library and the index DIR/NAME.json that the
reader needs (each shard's URL relative to the index, its sample count and list positions, and
the list's records). One sample per list line, key = the line's position in the list:
`<key>.mp4` (the video file's bytes, unchanged: pre-process first, `python -m datasets.preprocess`)
or `<key>.000000.jpg ...` (every frame of the folder, unchanged), plus `<key>.cls` (label) and
`<key>.json` (path, frame count, label, list line). Samples are written in a seeded random order
(`--no-shuffle` keeps the list order) so each shard mixes classes. A missing or unreadable sample
stops the tool with its file and list line (`--skip-bad` leaves such samples out and lists them).
Upload the folder anywhere webdataset reads from (local path, http(s), gs://) and point
`data.train_shards` / `data.val_shards` at the index's path or URL (a `pipe:` command only on the
command line, with --allow-pipe). A write failure (full disk, read-only folder) is one line and
removes the shards this run opened.
"""

from __future__ import annotations

import argparse

from utils.cli import cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("python -m datasets.shards", __doc__.split("\n\n")[0])
    p.add_argument("list", help="annotation list (frames or video format)")
    p.add_argument("--root", default="", help="folder the list's paths are relative to")
    p.add_argument("--out", required=True, help="DIR/NAME: writes DIR/NAME-000000.tar ... and DIR/NAME.json")
    p.add_argument("--labels", help="label CSV: labels are checked against it")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most (default 1000)")
    p.add_argument("--maxsize", type=float, default=1e9, help="bytes per shard at most (default 1e9)")
    p.add_argument("--no-shuffle", action="store_true", help="write in list order (default: seeded random order)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    p.add_argument("--image-tmpl", default="img_{:05d}.jpg", help="frame file template (frames lists)")
    p.add_argument("--index-bias", type=int, default=1, help="index of the first frame file")
    p.add_argument(
        "--num-frames-from",
        choices=("dir", "list"),
        default="dir",
        help="frames per folder: files in it (dir) or the list's count (list)",
    )
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable samples out and list them")
    return p


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import ShardWriter

from datasets.decoding import BadSampleError, FrameFolderReader
from datasets.lists import VideoRecord, read_label_csv, read_list
from datasets.shard_dataset import INDEX_KIND
from datasets.video_reader import CFR_MARKER
from utils.errors import UserError, run_cli
from utils.fileio import atomic_write_text, make_folder, write_error
from utils.progress import Progress


def sample_files(record: VideoRecord, root: str, frames: FrameFolderReader | None) -> dict[str, bytes]:
    """The tar members (without the key) of one list line."""
    path = os.path.join(root, record.path) if root else record.path
    if frames is None:
        data = _read_bytes(path, "video")
        if not data:
            raise BadSampleError(f"video file is empty: {path}")
        return {Path(path).suffix.lower().lstrip(".") or "mp4": data}
    n = frames.num_frames(path, record.num_frames)
    out = {}
    for i in range(n):
        fp = frames.frame_path(path, i)
        out[f"{i:06d}{Path(fp).suffix.lower()}"] = _read_bytes(fp, "frame")
    return out


def _read_bytes(path: str, what: str) -> bytes:
    """The file's bytes, or a BadSampleError naming it as a `what` (video, frame)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadSampleError(f"{what} not found: {path}") from None
    except OSError as err:
        raise BadSampleError(f"cannot read {what} {path}: {err}") from None


def shard_index(
    name: str,
    shards: dict[str, list[int]],
    content: str,
    root: str,
    list_path: str,
    records: list[VideoRecord],
    skipped: list[str],
) -> dict[str, Any]:
    """The wids-style index (shard URLs, sample counts and keys) plus our section: the list's records,
    content type, and the samples left out (their records stay, their keys do not)."""
    ours: dict[str, Any] = {
        "version": 1,
        "content": content,
        "cfr": bool(root) and (Path(root) / CFR_MARKER).is_file(),
        "list": str(list_path),
        "records": [[r.path, r.num_frames, r.label, r.line] for r in records],
    }
    if skipped:
        ours["skipped"] = skipped
    return {
        "__kind__": INDEX_KIND,
        "wids_version": 1,
        "name": name,
        "shardlist": [{"url": url, "nsamples": len(keys), "keys": keys} for url, keys in shards.items()],
        "text4vis": ours,
    }


@dataclass(frozen=True)
class ShardLayout:
    """How samples are laid into shards: at most `maxcount` samples and `maxsize` bytes a shard,
    in list order or shuffled with `seed`."""

    maxcount: int = 1000
    maxsize: float = 1e9
    shuffle: bool = True
    seed: int = 0


def write_shards(
    list_path: str,
    root: str,
    out: str,
    *,
    labels: str | None = None,
    layout: ShardLayout = ShardLayout(),
    frame_reader: FrameFolderReader | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the shards and the index; returns the index as written. `frame_reader` names and
    counts the frames of a frame-folder list (None: `FrameFolderReader()`'s defaults)."""
    maxcount, maxsize, shuffle, seed = layout.maxcount, layout.maxsize, layout.shuffle, layout.seed
    num_classes = len(read_label_csv(labels)) if labels else None
    records = read_list(list_path, num_classes)
    if root and not os.path.isdir(root):
        raise UserError(f"--root is not a folder: {root}")
    content = "video" if records[0].num_frames is None else "frames"
    frames = None if content == "video" else (frame_reader or FrameFolderReader())
    if maxcount < 1 or maxsize <= 0:
        raise UserError("--maxcount and --maxsize must be positive")
    prefix = Path(out)
    make_folder(prefix.parent, "--out")
    order = np.random.default_rng(seed).permutation(len(records)) if shuffle else np.arange(len(records))
    shards: dict[str, list[int]] = {}
    skipped: list[str] = []
    bar = Progress(len(records), "shards", "video", enabled=progress)  # a bar on a terminal, else lines
    pattern = f"{prefix}-%06d.tar"
    sink: ShardWriter | None = None
    try:
        # An index of an earlier run would vouch for shards this run is about to overwrite: remove it
        # first; the new one is written (atomically) only once every shard is complete.
        prefix.with_name(prefix.name + ".json").unlink(missing_ok=True)
        with ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0) as sink:
            for pos in order.tolist():
                rec = records[pos]
                try:
                    files = sample_files(rec, root, frames)
                except BadSampleError as err:
                    if not skip_bad:
                        _remove_opened(pattern, sink)
                        raise BadSampleError(f"{err} ({list_path}:{rec.line}; --skip-bad leaves it out)") from None
                    skipped.append(f"{list_path}:{rec.line}: {err}")
                    bar.update(1)
                    continue
                sample: dict[str, Any] = {
                    "__key__": f"{pos:09d}",
                    "cls": rec.label,
                    "json": {"path": rec.path, "num_frames": rec.num_frames, "label": rec.label, "line": rec.line},
                }
                sample.update(files)
                sink.write(sample)
                shards.setdefault(Path(sink.fname).name, []).append(pos)
                bar.update(1)
    except OSError as err:  # a full disk, a read-only folder: no half-written shard is left
        where = getattr(sink, "fname", None) or prefix.with_name(prefix.name + ".json")
        _remove_opened(pattern, sink)
        raise write_error(where, err) from None
    finally:
        bar.close()
    index = shard_index(prefix.name, shards, content, root, list_path, records, skipped)
    atomic_write_text(prefix.with_name(prefix.name + ".json"), json.dumps(index))
    return index


def _remove_opened(pattern: str, sink: ShardWriter | None) -> None:
    """Delete the shards this run opened (the writer numbers them 0 .. sink.shard - 1)."""
    for i in range(getattr(sink, "shard", 0)):
        Path(pattern % i).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    index = write_shards(
        a.list,
        a.root,
        a.out,
        labels=a.labels,
        layout=ShardLayout(a.maxcount, a.maxsize, shuffle=not a.no_shuffle, seed=a.seed),
        frame_reader=FrameFolderReader(a.image_tmpl, a.index_bias, a.num_frames_from),
        skip_bad=a.skip_bad,
    )
    for line in index["text4vis"].get("skipped", []):
        print(f"skipped {line}")
    n = sum(s["nsamples"] for s in index["shardlist"])
    print(f"{n} samples in {len(index['shardlist'])} shard(s); index: {a.out}.json")


if __name__ == "__main__":
    run_cli(main)
