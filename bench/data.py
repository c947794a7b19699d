"""Data-pipeline throughput per CPU process on K400-like clips, against the original's pipeline.

    python bench/data.py [--videos 8] [--reps 5] [--block 0.5] [--gop-sweep 1,4,8,16] [--device cuda]
                         [--no-loader] [--decoder all|auto|torchcodec,decord,pyav]

Generates `--videos` K400-like clips into `--data` (default .cache/bench_k400, kept between runs):
10 s, 340x256, 30 fps, H.264 with x264's defaults (crf 23, preset medium, GOP 250, B-frames), a
textured scene that pans with moving objects and sensor noise. Then it times (and prints) the
pre-processing tool on them, `python -m datasets.preprocess` to H.264 with its default short GOP
and to JPEG frame folders, and packs the pre-processed mp4s into tar shards (`datasets.shards`).

Each pipeline runs in this one process with one torch thread (clips/s per CPU process: a loader
with W workers gives about W times that when W cores are free), over the same videos:
- `original` (bench/original.py): the original's way: decord opened per video (one thread), frames read
  one by one (`vr[i]`; frame folders: PIL per file), transforms per frame with PIL (bicubic
  resize, random-sized crop + bilinear resize, flip, grayscale; test: resize + 3 crops), CPU
  normalisation; on the unprocessed mp4s and on the frame folders;
- ours (`datasets.build_dataset`, uint8 out, normalised later on the device) for every decoder of
  `--decoder` (default: all three) x input: frame folders, mp4 as is, mp4 after pre-processing,
  shards of the pre-processed mp4s. A decoder that cannot run here (torchcodec without FFmpeg's
  shared libraries) is left out with one line saying why; the rows that use one decoder (the
  DataLoader rows, deferred transforms, the GOP sweep) use the first one left.
Train = 8 frames, random-sized crop 224; test = 8 frames x 3 crops x 4 clips. Speed-ups are against
`original` on the unprocessed mp4s in the same mode. Two more rows time the original's pipeline
and ours on pre-processed mp4s through a DataLoader with one worker and batches of 8, as a
training loop gets them (the default collate into shared memory included; against the original
measured the same way). `--device cuda` adds NVDEC decoding and the
GPU transforms (`datasets.device_transforms`) on the pre-processed mp4s. `--gop-sweep` prints
the size and train-sampling decode time (first decoder) of pre-processed files per GOP: how the
default GOP was chosen.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.k400_like import FOLDERS, FPS, SECONDS, H, T, W, make_data, runnable_decoders  # noqa: E402
from bench.original import Original  # noqa: E402
from datasets import build_dataset  # noqa: E402
from datasets.data_builder import WorkerInit  # noqa: E402
from datasets.device_transforms import BatchTransform, collate_raw  # noqa: E402
from datasets.preprocess import DEFAULT_GOP, Settings, encode_video  # noqa: E402
from datasets.sampling import sample_indices  # noqa: E402
from datasets.shard_dataset import ShardDataset  # noqa: E402
from datasets.video_reader import VideoReader  # noqa: E402
from utils.config import resolve, to_config  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.heap import reuse_freed_memory  # noqa: E402

ORIGINAL = "original (decord + PIL per frame), mp4 as is"  # the baseline of every speed-up
LOADER = "DataLoader, 1 worker, batches of 8"

# ----------------------------------------------------------------------------- ours


def our_dataset(root: Path, fmt: str, decoder: str, train: bool, **data: Any) -> Any:
    d = {
        "num_segments": T,
        "input_size": 224,
        "label_list": str(root / "labels.csv"),
        "decoder": decoder,
        "modality": "RGB" if fmt == "frames" else "video",
        "min_frames": 1,
    }
    if fmt == "frames":
        d.update(
            val_root=str(root / FOLDERS["frames"]),
            train_root=str(root / FOLDERS["frames"]),
            val_list=str(root / "frames.txt"),
            train_list=str(root / "frames.txt"),
        )
    elif fmt == "shards":
        index = str(root / "shards" / f"{FOLDERS['pre']}.json")
        d.update(format="shards", train_shards=index, val_shards=index, shuffle_buffer=0)
    else:
        folder = str(root / ("raw" if fmt == "mp4" else FOLDERS["pre"]))
        lst = str(root / "video.txt")
        d.update(val_root=folder, train_root=folder, val_list=lst, train_list=lst)
    d.update(data)
    cfg = to_config(resolve({"seed": 0, "data": d}, "bench"))
    if train:
        return build_dataset(cfg, "train")
    return build_dataset(cfg, "test", test_crops=3, test_clips=4)


def items(ds: Any) -> Callable[[int | None], int]:
    """A function that loads the first `limit` items of `ds` (all with None; shards: iterates)
    and returns the count."""
    if isinstance(ds, ShardDataset):
        ds.configure(rank=0, world_size=1, batch_size=1, train=ds.train)
        return lambda limit=None: sum(1 for _ in itertools.islice(ds, limit))
    load = ds.load if isinstance(ds, Original) else ds.__getitem__
    count = len(ds.names) if isinstance(ds, Original) else len(ds)
    return lambda limit=None: sum(1 for i in range(min(count, limit or count)) if load(i) is not None)


class Repeated(torch.utils.data.Dataset):
    """A pipeline's `count` clips, `repeat` times over, for a DataLoader."""

    def __init__(self, load: Callable[[int], Any], count: int, repeat: int) -> None:
        self.load, self.count, self.repeat = load, count, repeat

    def __len__(self) -> int:
        return self.count * self.repeat

    def __getitem__(self, index: int) -> Any:
        return self.load(index % self.count)


def through_loader(ds: Any, batch: int, repeat: int) -> Callable[[int | None], int]:
    """Like `items`, through a DataLoader with one persistent worker (batches of `batch`, the
    default collate into shared memory), over the clips `repeat` times: what a training loop gets."""
    if isinstance(ds, Original):
        data = Repeated(ds.load, len(ds.names), repeat)
        init = None
    else:
        data = Repeated(ds.__getitem__, len(ds), repeat)
        init = WorkerInit(0, 0, reuse_memory=True)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch, num_workers=1, persistent_workers=True, worker_init_fn=init
    )

    def run(limit: int | None = None) -> int:
        # Always a whole pass, even for the warm-up: a pass stopped early leaves prefetched batches
        # that the worker finishes in the background and the next pass drains first.
        return sum(len(out[0] if isinstance(out, (list, tuple)) else out) for out in loader)

    return run


def block_rate(run: Callable[[int | None], int], seconds: float) -> float:
    """Mean clips/s of whole passes of `run` repeated for at least `seconds`, after one untimed clip."""
    run(1)
    n, t0 = 0, time.perf_counter()
    while True:
        n += run(None)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def clips_per_s(run: Callable[[], int], reps: int, sync: Callable[[], None] = lambda: None) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        n = run()
        sync()
        best = min(best, (time.perf_counter() - t0) / n)
    return 1.0 / best


def gop_sweep(root: Path, gops: list[int], reps: int, decoder: str) -> None:
    """Size and train-sampling decode time (with `decoder`) of pre-processed files per GOP."""
    raws = sorted((root / "raw" / "k400like").glob("*.mp4"))
    out = root / "sweep"
    out.mkdir(exist_ok=True)
    raw_bytes = sum(p.stat().st_size for p in raws)
    print(f"\nGOP sweep, decoded with {decoder}:")
    print("| GOP | B-frames | fastdecode | size vs input | decode 8 train frames (ms) | decode 3x4-view test (ms) |")
    print("|---|---|---|---|---|---|")
    variants = [(250, 3, False, "input (x264 defaults)")] + [(g, 0, True, "") for g in gops] + [(16, 3, False, "")]
    for gop, bf, fast, note in variants:
        files = raws if note else []
        if not note:
            for p in raws:
                dst = out / f"g{gop}_bf{bf}_fd{int(fast)}_{p.name}"
                if not dst.exists():
                    encode_video(str(p), str(dst), Settings(gop=gop, bframes=bf, fastdecode=fast))
                files.append(dst)
        size = sum(p.stat().st_size for p in files) / raw_bytes
        times = []
        for mode in ("train", "test"):
            best = math.inf
            for _ in range(reps):
                t0 = time.perf_counter()
                for k, p in enumerate(files):
                    r = VideoReader(p, decoder)
                    idx = sample_indices(r.num_frames, T, mode=mode, clips=4, rng=np.random.default_rng(k))
                    r.read(idx)
                best = min(best, (time.perf_counter() - t0) / len(files))
            times.append(best * 1e3)
        label = note or f"{gop}"
        print(
            f"| {label} | {bf} | {'yes' if fast else 'no'} | {size:.2f}x | {times[0]:.1f} | {times[1]:.1f} |",
            flush=True,
        )


def cuda_rows(root: Path, reps: int) -> list[tuple[str, str, float]]:
    """NVDEC + GPU transforms on the pre-processed mp4s (clips/s, whole batches of 8)."""
    rows = []
    sync = torch.cuda.synchronize
    for decode in ("cpu", "cuda"):
        for train in (True, False):
            ds = our_dataset(root, "pre", "torchcodec", train, decode_device=decode, transform_device="cuda")
            tf = BatchTransform(ds.transform, normalize=True)

            def run(ds: Any = ds, tf: Any = tf) -> int:
                n = 0
                for s in range(0, len(ds), 8):
                    raw, _, _ = collate_raw([ds[i] for i in range(s, min(s + 8, len(ds)))])
                    tf(raw.to("cuda", non_blocking=True))
                    n += len(raw)
                return n

            rows.append(
                (
                    f"pre-processed mp4, {'NVDEC' if decode == 'cuda' else 'CPU'} decode, GPU transforms",
                    "train" if train else "test 3x4",
                    clips_per_s(run, reps, sync),
                )
            )
    return rows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=".cache/bench_k400", help="folder for the generated clips (kept)")
    p.add_argument("--videos", type=int, default=8, help="K400-like clips (10 s each)")
    p.add_argument("--reps", type=int, default=5, help="rounds over all pipelines; each one's best is kept")
    p.add_argument("--block", type=float, default=0.5, help="seconds each pipeline runs per round (whole passes)")
    p.add_argument("--gop-sweep", default="", help="comma-separated GOPs to compare (size vs decode time)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: also NVDEC + GPU transforms")
    p.add_argument(
        "--decoder",
        default="all",
        help="video decoders to measure: all, auto or a comma-separated list (torchcodec,decord,pyav); "
        "one that cannot run here is left out with the reason",
    )
    p.add_argument(
        "--no-loader",
        dest="loader",
        action="store_false",
        help="leave out the two rows timed through a DataLoader worker",
    )
    return p.parse_args()


def print_data(root: Path, videos: int, info: dict[str, Any], seconds: float, heap: bool) -> None:
    """The generated clips, the machine, and what pre-processing them cost."""
    print(
        f"data: {videos} K400-like clips ({SECONDS} s, {W}x{H}, {FPS} fps, x264 defaults) in {root}, "
        f"{seconds:.1f} s; torch {torch.__version__}, {os.cpu_count()} CPUs, one thread, "
        f"freed memory {'kept for reuse' if heap else 'returned (not glibc)'} as in the loader's workers"
    )
    mb = info["raw_bytes"] / 1e6
    for kind, what in (
        ("pre", f"mp4, short side 256, GOP {DEFAULT_GOP}, no B-frames, fastdecode"),
        ("frames", "JPEG frames, short side 256, quality 95"),
    ):
        if info[f"{kind}_new"]:
            per = info[f"{kind}_seconds"] / info[f"{kind}_new"]
            cost = f"{per:.2f} s per clip per process"
        else:
            cost = "cached (delete the folder to time it)"
        print(
            f"pre-processing to {what}: {cost}; size {info[f'{kind}_bytes'] / 1e6:.1f} MB vs {mb:.1f} MB "
            f"({info[f'{kind}_bytes'] / info['raw_bytes']:.2f}x)"
        )


Run = tuple[str, str, Callable[[int | None], int]]  # (label, mode, loads clips)

FORMAT_LABELS = {
    "frames": "ours, frames",
    "mp4": "ours, mp4 as is",
    "pre": "ours, mp4 pre-processed",
    "shards": "ours, shards of pre-processed mp4",
}


def build_runs(root: Path, videos: int, loader: bool, decoders: list[str]) -> list[Run]:
    """Every pipeline x input x mode, the original's first; `decoders` (runnable, at least one)."""
    names = [f"k400like/clip{k:03d}.mp4" for k in range(videos)]
    first = decoders[0]
    runs: list[Run] = []
    for train in (True, False):
        mode = "train" if train else "test 3x4"
        runs.append((ORIGINAL, mode, items(Original(root, names, True, train))))
        runs.append(("original (PIL per frame), frames", mode, items(Original(root, names, False, train))))
        for fmt, label in FORMAT_LABELS.items():
            for dec in ["auto"] if fmt == "frames" else decoders:
                full = label if fmt == "frames" else f"{label}, {dec}"
                runs.append((full, mode, items(our_dataset(root, fmt, dec, train))))
        # data.transform_device: cuda leaves the CPU only the decoding
        label = f"ours, mp4 pre-processed, {first}, transforms deferred to the GPU (CPU part)"
        runs.append((label, mode, items(our_dataset(root, "pre", first, train, transform_device="cuda"))))
        if loader:
            orig = Original(root, names, True, train)
            runs.append((f"{LOADER}: {ORIGINAL}", mode, through_loader(orig, 8, 2 if train else 1)))
            ours = our_dataset(root, "pre", first, train)
            label = f"{LOADER}: ours, mp4 pre-processed, {first}"
            runs.append((label, mode, through_loader(ours, 8, 16 if train else 4)))
    return runs


def time_rounds(runs: list[Run], reps: int, block: float) -> list[tuple[str, str, float]]:
    """(label, mode, clips/s) of every run: the best of `reps` round-robin rounds, so load from
    other processes hits every pipeline alike. Within a round each pipeline runs alone for `block`
    seconds (its mean rate counts), warm, as in a loader worker that runs only that pipeline."""
    best = [0.0] * len(runs)
    for rep in range(reps):
        for k, (label, mode, run) in enumerate(runs):
            best[k] = max(best[k], block_rate(run, block))
            if rep == reps - 1:
                print(f"{label:82s} {mode:9s} {best[k]:7.1f} clips/s", flush=True)
    return [(label, mode, v) for (label, mode, _), v in zip(runs, best, strict=True)]


def main() -> None:
    a = parse_args()
    torch.set_num_threads(1)
    heap = reuse_freed_memory()  # this process stands in for a loader worker (data.reuse_freed_memory)
    root = Path(a.data)
    decoders = runnable_decoders(a.decoder)
    t0 = time.perf_counter()
    info = make_data(root, a.videos)
    print_data(root, a.videos, info, time.perf_counter() - t0, heap)
    if a.gop_sweep:
        gop_sweep(root, [int(g) for g in a.gop_sweep.split(",")], a.reps, decoders[0])
    rows = time_rounds(build_runs(root, a.videos, a.loader, decoders), a.reps, a.block)
    if a.device == "cuda" and "torchcodec" not in decoders:
        print("left out the --device cuda rows: they decode with torchcodec (NVDEC), which is not measured here")
    elif a.device == "cuda":
        for row in cuda_rows(root, a.reps):
            rows.append(row)
            print(f"{row[0]:82s} {row[1]:9s} {row[2]:7.1f} clips/s", flush=True)
    print_table(rows)


def print_table(rows: list[tuple[str, str, float]]) -> None:
    """Markdown table; each row's speed-up is against the original's pipeline measured the same way
    (in this process, or through a DataLoader)."""
    base = {(lab.startswith(LOADER), m): v for lab, m, v in rows if lab.endswith(ORIGINAL)}
    print("\n| pipeline (one CPU process) | train clips/s | x original | test 3x4 clips/s | x original |")
    print("|---|---|---|---|---|")
    for label in dict.fromkeys(lab for lab, _, _ in rows):
        vals = {m: v for lab, m, v in rows if lab == label}
        cells = []
        for m in ("train", "test 3x4"):
            v = vals.get(m)
            cells += [f"{v:.1f}", f"{v / base[label.startswith(LOADER), m]:.1f}x"] if v is not None else ["-", "-"]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run_cli(main)
