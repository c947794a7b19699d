"""K400-like clips for the benchmarks: 10 s, 340x256, 30 fps, H.264 with x264's defaults (crf 23,
preset medium, GOP 250, B-frames), a textured scene that pans with moving objects and sensor noise,
and the inputs made from them (pre-processed mp4s, JPEG frame folders, shards, lists)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.preprocess import DEFAULT_GOP, Settings, preprocess
from datasets.shards import ShardLayout, write_shards
from datasets.video_reader import DECODERS, decoder_problem, resolve_decoder
from utils.errors import UserError

W, H, FPS, SECONDS, T = 340, 256, 30, 10, 8
# one folder per setting: a changed default is redone, not mixed
FOLDERS = {"pre": f"pre_gop{DEFAULT_GOP}", "frames": "frames_q95"}


def k400_like_clip(path: Path, seed: int) -> None:
    """A 10 s 340x256 30 fps clip: multi-scale texture panning, 4 moving discs, sensor noise; x264 defaults."""
    import av

    rng = np.random.default_rng(seed)
    ch, cw = H + 96, W + 160
    canvas = np.zeros((ch, cw, 3), np.float32)
    for cell, amp in ((64, 60), (16, 30), (4, 16), (2, 12)):
        gh, gw = ch // cell + 2, cw // cell + 2
        small = rng.normal(0, 1, (gh, gw, 3)).astype(np.float32)
        size = (gw * cell, gh * cell)
        up = np.stack(
            [np.asarray(Image.fromarray(small[..., k]).resize(size, Image.Resampling.BICUBIC)) for k in range(3)], -1
        )
        canvas += amp * up[:ch, :cw]
    canvas += rng.uniform(60, 190, 3)
    discs = [
        (
            rng.uniform(0.2, 0.8),
            rng.uniform(0.2, 0.8),
            rng.uniform(8, 20),
            rng.uniform(0.02, 0.08),
            rng.uniform(0, 6),
            rng.uniform(0, 255, 3),
        )
        for _ in range(4)
    ]
    yy, xx = np.mgrid[0:H, 0:W]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "medium", "threads": "1"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for t in range(SECONDS * FPS):
            fx, fy = int(80 + 70 * np.sin(t / 90.0)), int(48 + 40 * np.sin(t / 70.0))
            fr = canvas[fy : fy + H, fx : fx + W].copy()
            for bx, by, r, sp, ph, col in discs:
                cx, cy = W * (bx + 0.25 * np.sin(sp * t + ph)), H * (by + 0.25 * np.cos(1.3 * sp * t + ph))
                m = (xx - cx) ** 2 + (yy - cy) ** 2 < (r * (1 + 0.3 * np.sin(2 * sp * t))) ** 2
                fr[m] = 0.6 * col + 0.4 * fr[m]
            fr += rng.normal(0, 2.0, fr.shape)
            for p in s.encode(av.VideoFrame.from_ndarray(np.clip(fr, 0, 255).astype(np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_data(root: Path, videos: int, *, workers: int = 1, frames_and_shards: bool = True) -> dict[str, Any]:
    """Raw clips, pre-processed mp4s, frame folders, shards and their lists; timing of each step.

    `workers`: pre-processing processes (1 for the per-process cost bench/data.py reports);
    `frames_and_shards=False` makes only the pre-processed mp4s and the lists (bench/train.py)."""
    raw = root / "raw" / "k400like"
    raw.mkdir(parents=True, exist_ok=True)
    for k in range(videos):
        path = raw / f"clip{k:03d}.mp4"
        if not path.exists():
            tmp = path.with_name(".tmp_" + path.name)
            k400_like_clip(tmp, k)
            os.replace(tmp, path)
    names = [f"k400like/clip{k:03d}.mp4" for k in range(videos)]
    info: dict[str, Any] = {"raw_bytes": sum((root / "raw" / n).stat().st_size for n in names)}
    kinds = [("pre", Settings()), ("frames", Settings(frames=True))][: 2 if frames_and_shards else 1]
    for kind, settings in kinds:
        out = root / FOLDERS[kind]
        t0 = time.perf_counter()
        res = preprocess(root / "raw", out, settings, workers=workers, progress=False)
        info[f"{kind}_seconds"] = time.perf_counter() - t0
        info[f"{kind}_new"] = res["processed"]
        files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".mp4", ".jpg")]
        info[f"{kind}_bytes"] = sum(p.stat().st_size for p in files)
    (root / "video.txt").write_text("".join(f"{n} 0\n" for n in names))
    (root / "frames.txt").write_text("".join(f"{n[:-4]} {SECONDS * FPS} 0\n" for n in names))
    (root / "labels.csv").write_text("id,name\n0,k400like\n")
    shards = root / "shards" / FOLDERS["pre"]
    index = shards.with_suffix(".json")
    stale = not index.exists() or len(json.loads(index.read_text())["text4vis"]["records"]) != videos
    if frames_and_shards and stale:
        write_shards(
            str(root / "video.txt"),
            str(root / FOLDERS["pre"]),
            str(shards),
            layout=ShardLayout(maxcount=4),
            progress=False,
        )
    return info


def runnable_decoders(spec: str) -> list[str]:
    """The decoders `--decoder` names (`all`, `auto` or a comma-separated list) that can run here,
    in that order; a line is printed for each one left out, with the reason (a benchmark goes on
    with the others). None left is an error."""
    names = list(DECODERS) if spec == "all" else [d.strip() for d in spec.split(",") if d.strip()]
    unknown = [d for d in names if d not in (*DECODERS, "auto")]
    if unknown or not names:
        raise UserError(f"--decoder {spec!r}: use all, auto or a comma-separated list of {', '.join(DECODERS)}")
    kept = []
    for name in names:
        problem = None if name == "auto" else decoder_problem(name)
        if problem:
            print(f"left out decoder {name}: {problem}", flush=True)
        else:
            kept.append(resolve_decoder(name))
    if not kept:
        raise UserError(f"--decoder {spec!r}: none of these decoders can run on this machine (reasons above)")
    return list(dict.fromkeys(kept))
