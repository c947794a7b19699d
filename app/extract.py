"""Video embeddings of a list, a split or folders of videos / frame folders / images, to one `.npz`.

    python -m app.extract --weights W --list LIST [--root DIR] --out emb.npz
    python -m app.extract --weights W --split val --out val_emb.npz          # the config's val list
    python -m app.extract --weights W videos/ frames/clip1/ img.jpg --out emb.npz
    torchrun --nproc_per_node=N -m app.extract ...                          # the same file, N processes

Each input goes through the test pipeline (test.py's sampling and crops; `--test_crops`,
`--test_clips` for several views). The file (docs/after_training.md) holds, in input order:
`ids` (list paths or input paths), `labels` (-1 when unknown), `embeddings` (N, D) float32: the
un-normalised video embeddings `model.encode_video`, averaged over the views (test.py's fusion),
optionally `view_embeddings` (N, V, D) and `frame_embeddings` (N, V, T, D) (`--per_view`,
`--per_frame`), `class_names`, `failed_ids` / `failed_errors` (inputs that could not be read: listed,
never replaced by another video) and `meta` (a JSON string). When any input failed, the file is
still written, then one line names them (`2 of 6 inputs failed: a.mp4 (reason), ...`) and the exit
status is 1. Progress per input on stderr (utils.progress).

Resumable: the inputs are cut into chunks of `--chunk` (fixed by the order of the inputs), each
written atomically to `OUT.parts/` as it is finished; a run that was killed continues with the
missing chunks only, and the merged file is the same, byte for byte, as an uninterrupted run's on
the same machine and process count. The parts folder is removed once the file is written.
"""

from __future__ import annotations

import argparse

from utils.choices import DEVICES, PRECISIONS
from utils.cli import add_config_args, add_trust_arg, add_view_args, cli_parser, help_before_imports, parse_with_opts


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m app.extract", __doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", help="video files, frame folders, images, or folders holding them")
    parser.add_argument("--weights", required=True, help="checkpoint, run folder or export (python -m app.export)")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--list", default=None, help="a list file (frames or video format) instead of paths")
    parser.add_argument("--root", default=None, help="folder the --list paths are relative to")
    parser.add_argument("--split", default=None, choices=("train", "val"), help="the config's train or val list")
    parser.add_argument("--labels", default=None, help="class-name CSV that the labels index (default: the model's)")
    add_config_args(parser, "YAML config (default: the stored one)")
    add_view_args(parser)
    parser.add_argument("--per_view", action="store_true", help="also store view_embeddings (N, V, D)")
    parser.add_argument("--per_frame", action="store_true", help="also store frame_embeddings (N, V, T, D)")
    parser.add_argument("--chunk", type=int, default=512, help="inputs per resumable part (default 512)")
    parser.add_argument("--batch_size", type=int, default=None, help="clips per forward (default data.batch_size)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default data.workers)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="precision of the forward pass")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA when available")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT and any parts of an earlier run")
    add_trust_arg(parser)
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from app.extract_parts import chunk_path, merge, prepare_parts
from app.load_weights import WeightsFile, input_normalize, load_model, open_weights
from app.media import as_numpy_ids, expand_inputs, load_input
from datasets.data_builder import WorkerInit, build_dataset
from datasets.lists import read_label_csv, read_list
from utils.config import Config, replace, to_dict
from utils.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed, rank_zero_first
from utils.errors import UserError, run_cli
from utils.evaluate import ViewSet, encode_views_frames
from utils.fileio import write_npz
from utils.progress import Progress, failure_summary

FORMAT = "text4vis-embeddings"
VERSION = 1


class PathDataset(Dataset):
    """Inputs given by path (`app.media.load_input`): `(clip, -1, index)`."""

    def __init__(self, paths: Sequence[str], cfg: Config, crops: int, clips: int, dense: bool):
        self.paths, self.cfg, self.crops, self.clips, self.dense = list(paths), cfg, crops, clips, dense

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return load_input(self.paths[index], self.cfg, crops=self.crops, clips=self.clips, dense=self.dense), -1, index


class Guarded(Dataset):
    """`(clip, label, index, ok, error)`: an input that cannot be read gives a zero clip, ok=False and
    its one-line error instead of stopping the run (it is listed in `failed_ids`)."""

    def __init__(self, dataset: Dataset, labels: Sequence[int], shape: tuple[int, ...]):
        self.dataset, self.labels, self.shape = dataset, list(labels), shape

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, bool, str]:
        try:
            clip, label, _ = self.dataset[index][:3]
            return clip, int(label), index, True, ""
        except UserError as err:
            return torch.zeros(self.shape, dtype=torch.uint8), self.labels[index], index, False, str(err)


def build_inputs(
    args: argparse.Namespace, cfg: Config, crops: int, clips: int, dense: bool
) -> tuple[Dataset, list[str], list[int], str]:
    """(dataset, ids, labels, description) of the inputs the arguments name."""
    given = [bool(args.inputs), bool(args.list), bool(args.split)]
    if sum(given) != 1:
        raise UserError(
            "give the inputs one way: paths (videos, frame folders, images, folders of them), "
            "--list LIST, or --split train|val (the config's lists)"
        )
    if args.inputs:
        paths = expand_inputs(args.inputs)
        return PathDataset(paths, cfg, crops, clips, dense), paths, [-1] * len(paths), f"{len(paths)} paths"
    if args.list:
        list_path, root = args.list, args.root or ""
    else:
        list_path = cfg.data.train_list if args.split == "train" else cfg.data.val_list
        root = cfg.data.train_root if args.split == "train" else cfg.data.val_root
        if not list_path:
            raise UserError(
                f"--split {args.split}: data.{args.split}_list is not set: name it with --config CFG or --opts "
                f"data.{args.split}_list=... (a checkpoint's stored config never supplies data sources)"
            )
    records = read_list(list_path)
    inputs = replace(  # the test pipeline of build_dataset, on this list
        cfg,
        **{
            "data.val_list": str(list_path),
            "data.val_root": root,
            "data.format": "files",
            "data.modality": "video" if records[0].num_frames is None else "RGB",
            "data.label_list": "",  # labels index --labels (or the model's classes), not the config's CSV
            "data.on_bad_sample": "error",  # Guarded lists a failed input instead of replacing it
            "data.transform_device": "cpu",  # Guarded needs finished clips of one shape
        },
    )
    ds = build_dataset(inputs, "test", test_crops=crops, test_clips=clips, dense=dense)
    return ds, [r.path for r in records], [r.label for r in records], f"list {list_path} (root {root or '.'})"


def signature(
    args: argparse.Namespace,
    cfg: Config,
    wf: WeightsFile,
    ids: Sequence[str],
    labels: Sequence[int],
    views: tuple[int, int],
    dense: bool,
) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the parts."""
    stat = wf.path.stat()
    digest = hashlib.sha256("\n".join(f"{i}\t{y}" for i, y in zip(ids, labels, strict=True)).encode()).hexdigest()
    config = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return {
        "format": FORMAT,
        "version": VERSION,
        "weights": str(wf.path.resolve()),
        "weights_size": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "inputs_sha256": digest,
        "num_inputs": len(ids),
        "chunk": args.chunk,
        "batch_size": args.batch_size,
        "test_crops": views[0],
        "test_clips": views[1],
        "dense": dense,
        "per_view": args.per_view,
        "per_frame": args.per_frame,
        "precision": args.precision,
    }


class ChunkBatches(Sampler[list[int]]):
    """The batches of every chunk in turn, none crossing a chunk's end: one loader (one start of
    the workers) serves all of this process's chunks."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


@dataclass
class ChunkParts:
    """What one chunk's batches add up to; `arrays` is the chunk's part file."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    emb: list[torch.Tensor] = field(default_factory=list)
    vemb: list[torch.Tensor] = field(default_factory=list)
    femb: list[torch.Tensor] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def arrays(self, per_view: bool, per_frame: bool) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "index": np.array(self.ids, dtype=np.int64),
            "labels": np.array(self.labels, dtype=np.int64),
            "embeddings": _cat(self.emb),
            "failed_index": np.array([i for i, _ in self.failed], np.int64),
            "failed_errors": as_numpy_ids([e for _, e in self.failed]),
        }
        if per_view:
            out["view_embeddings"] = _cat(self.vemb)
        if per_frame:
            out["frame_embeddings"] = _cat(self.femb)
        return out


@torch.no_grad()
def run_chunks(
    model: torch.nn.Module,
    data: Guarded,
    chunks: list[tuple[int, list[int]]],
    args: argparse.Namespace,
    view_set: ViewSet,
    *,
    worker_init: Any = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(chunk, part arrays) of each `(chunk, input indices)` in turn, as soon as its last batch is
    encoded (`view_set`: the views and frames of an input, where and how they run); failed inputs
    are listed apart. `progress(n)` after each batch of n inputs."""
    bs = args.batch_size
    plan = [(c, indices[s : s + bs]) for c, indices in chunks for s in range(0, len(indices), bs)]
    loader = DataLoader(
        data,
        batch_sampler=ChunkBatches([batch for _, batch in plan]),
        num_workers=args.workers,
        worker_init_fn=worker_init,
    )
    parts, current = ChunkParts(), None
    for (c, _), (clips, label, index, ok, error) in zip(plan, loader, strict=True):
        if current is not None and c != current:
            yield current, parts.arrays(args.per_view, args.per_frame)
            parts = ChunkParts()
        current = c
        parts.failed += [(i, err) for i, good, err in zip(index.tolist(), ok.tolist(), error, strict=True) if not good]
        keep = ok.bool()
        if not keep.any():
            if progress is not None:
                progress(len(index))
            continue
        try:
            per_view, per_frame = encode_views_frames(
                model,
                clips[keep],
                view_set,
                frames=args.per_frame,
            )
        except ValueError as err:
            raise UserError(f"--per_frame: {err}") from None
        parts.ids += index[keep].tolist()
        parts.labels += label[keep].tolist()
        parts.emb.append(per_view.mean(dim=1).cpu())
        if args.per_view:
            parts.vemb.append(per_view.cpu())
        if per_frame is not None:
            parts.femb.append(per_frame.cpu())
        if progress is not None:
            progress(len(index))
    if current is not None:
        yield current, parts.arrays(args.per_view, args.per_frame)


def _cat(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros((0,), np.float32)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_with_opts(build_parser(), argv)
    if args.chunk < 1 or args.test_clips < 1:
        raise UserError("--chunk and --test_clips must be >= 1")
    wf = open_weights(args.weights)
    cfg = wf.config(args.config, args.opts)
    args.batch_size = args.batch_size or int(cfg.data.batch_size)
    args.workers = int(cfg.data.workers) if args.workers is None else args.workers
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch_size must be >= 1 and --workers >= 0")
    dist = init_distributed(device=args.device)
    try:
        extract(args, cfg, wf, dist)
    finally:
        cleanup()


def extract(args: argparse.Namespace, cfg: Config, wf: WeightsFile, dist: DistInfo) -> None:
    out = Path(args.out)
    parts = Path(str(out) + ".parts")
    dense = bool(cfg.data.dense if args.dense is None else args.dense)
    frames, crops, clips = int(cfg.data.num_segments), args.test_crops, args.test_clips
    views = crops * clips
    dataset, ids, labels, source = build_inputs(args, cfg, crops, clips, dense)
    size = int(cfg.data.input_size)
    data = Guarded(dataset, labels, (views * frames, 3, size, size))
    sig = signature(args, cfg, wf, ids, labels, (crops, clips), dense)
    problem = prepare_parts(out, parts, sig, args.overwrite) if dist.is_main else None
    problem = broadcast_object(problem)
    if problem:
        raise UserError(problem)
    with rank_zero_first():
        loaded = load_model(wf, cfg=cfg, device=dist.device, trusted_pickles=args.trust_pickle)
    class_names = read_label_csv(args.labels) if args.labels else loaded.class_names
    chunks = math.ceil(len(ids) / args.chunk)
    todo = [c for c in range(chunks) if c % dist.world_size == dist.rank and not chunk_path(parts, c).is_file()]
    if dist.is_main:
        done = sum(chunk_path(parts, c).is_file() for c in range(chunks))
        print(
            f"[extract] {source}: {len(ids)} inputs in {chunks} chunks of {args.chunk}"
            + (f", {done} already done (resuming)" if done else "")
            + f"; views {frames}x{crops}x{clips}; {dist.world_size} process(es) on {dist.device}",
            flush=True,
        )
    normalize = input_normalize(loaded.model)
    chunk_inputs = [(c, list(range(c * args.chunk, min((c + 1) * args.chunk, len(ids))))) for c in todo]
    init = WorkerInit(int(cfg.seed), dist.rank, bool(cfg.data.reuse_freed_memory)) if args.workers > 0 else None
    label = "extract" + (f" (rank 0 of {dist.world_size})" if dist.world_size > 1 else "")
    with Progress(sum(len(i) for _, i in chunk_inputs), label, "input", enabled=dist.is_main) as shown:
        written = run_chunks(
            loaded.model,
            data,
            chunk_inputs,
            args,
            ViewSet(views, frames, dist.device, normalize, args.precision),
            worker_init=init,
            progress=shown.update,
        )
        for k, (c, arrays) in enumerate(written):
            write_npz(chunk_path(parts, c), arrays)
            if dist.is_main:
                shown.note(f"[extract] chunk {c + 1}/{chunks} written ({k + 1}/{len(todo)} of this process's)")
    barrier()
    if dist.is_main:
        meta = file_meta(args, wf, source, (frames, crops, clips), dense)
        failed = write_merged(
            out, parts, chunks, ids, {"class_names": as_numpy_ids(class_names), "meta": np.array(json.dumps(meta))}
        )
        if failed:
            print(
                failure_summary(failed, len(ids)) + f" (no row in {out}: listed in failed_ids, failed_errors)",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)


def file_meta(
    args: argparse.Namespace, wf: WeightsFile, source: str, views: tuple[int, int, int], dense: bool
) -> dict[str, Any]:
    """The `meta` entry of the merged file: what was extracted, from which weights and inputs,
    with which views ((frames, crops, clips))."""
    frames, crops, clips = views
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": source,
        "weights": str(wf.path),
        "config": args.config or f"{wf.path} (stored config)",
        "opts": list(args.opts),
        "frames": frames,
        "test_crops": crops,
        "test_clips": clips,
        "views": crops * clips,
        "dense": dense,
        "embeddings": "un-normalised model.encode_video, averaged over the views",
        "labels": "index into class_names; -1 = unknown",
    }


def write_merged(
    out: Path, parts: Path, chunks: int, ids: Sequence[str], extra: dict[str, Any]
) -> list[tuple[str, str]]:
    """Rank 0, once every chunk is written: the merged file, then the parts folder removed.
    Returns the inputs that failed, with their errors."""
    arrays = merge(parts, chunks, ids, extra)
    write_npz(out, arrays)
    shutil.rmtree(parts, ignore_errors=True)
    emb = arrays["embeddings"]
    print(
        f"[extract] wrote {out}: {len(arrays['ids'])} embeddings of dimension {emb.shape[-1] if emb.ndim == 2 else 0}"
        + "".join(f", {k} {tuple(arrays[k].shape)}" for k in ("view_embeddings", "frame_embeddings") if k in arrays),
        flush=True,
    )
    return list(zip(arrays["failed_ids"].tolist(), arrays["failed_errors"].tolist(), strict=True))


if __name__ == "__main__":
    run_cli(main)
