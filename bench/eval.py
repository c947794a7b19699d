"""Evaluation throughput: our test path against one that follows the original's, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval.py [--arch ViT-B/32] [--frames 8] [--crops 3]
        [--clips 4] [--videos 1] [--rounds 4] [--data-videos 12] [--workers 2] [--device auto] [--precision auto]
        [--input frames|video] [--decoder auto]

Both sides read the same generated frame folders (`python -m datasets.synthetic`, 320 x 320 JPEG
frames, cached under .cache/bench_eval), sample the same frame indices, use 2 DataLoader
workers, and run the same randomly initialised model (`pretrained: none`: speed does not depend
on the weights). They differ where the pipelines differ:

* original: every sampled frame is opened with PIL on its own (a frame used by two clips is
  decoded twice), resized (bicubic) and cropped frame by frame with PIL, stacked through numpy,
  converted to float and normalised channel by channel in the worker (float tensors, 4x the
  bytes, cross the worker queue), fp32 forward without autocast;
* ours: `datasets.build_dataset(..., 'test')` + `build_loader` (each distinct frame decoded once
  with torchvision.io, one resize of the whole clip, crops as slices, uint8 through the loader)
  and `utils.evaluate.collect` (normalisation on the device; autocast with `--precision`, whose
  default `auto` is amp on CUDA and fp32 on CPU).

`--input video` reads the generated mp4s instead (the same content, MPEG-4 Part 2): the original's
side with decord frame by frame (`vr[i]`, PyAV when decord is not installed), ours with
`--decoder` (`auto`, one decoder, or a comma-separated list whose first one that runs here is
used; one that cannot run here, e.g. torchcodec without FFmpeg's shared libraries, is left out
with one line saying why).

Reported: videos/s of the data part alone (loader only) and end to end (loader + model), the
speed-ups, and whether the two paths agree (cosine of the fused embeddings, same top-1 class
against random class embeddings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.k400_like import runnable_decoders  # noqa: E402
from datasets import build_dataset, build_loader  # noqa: E402
from datasets.lists import read_list  # noqa: E402
from datasets.sampling import sample_indices  # noqa: E402
from datasets.synthetic import generate  # noqa: E402
from datasets.transforms import CLIP_MEAN, CLIP_STD, normalize  # noqa: E402
from modules.model_builder import build_model  # noqa: E402
from utils.config import resolve, to_config  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.evaluate import ViewSet, collect  # noqa: E402
from utils.precision import resolve_precision  # noqa: E402


# ----------------------------------------------------------------------------- original-style path
class OriginalStyleTestDataset(Dataset):
    """The original's test-time data path, re-written here for the comparison (PIL per frame)."""

    def __init__(
        self,
        root: str,
        list_path: str,
        num_segments: int,
        clips: int,
        crops: int,
        input_size: int = 224,
        scale_size: int = 256,
        image_tmpl: str = "img_{:05d}.jpg",
        video: bool = False,
    ):
        if crops not in (1, 3):
            raise ValueError("the baseline implements 1 and 3 crops")
        self.video = video
        self.records = read_list(list_path)
        self.root, self.T, self.clips, self.crops = root, num_segments, clips, crops
        self.input_size, self.scale_size, self.tmpl = input_size, scale_size, image_tmpl

    def __len__(self) -> int:
        return len(self.records)

    def _scale(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w <= h:
            size = (self.scale_size, int(self.scale_size * h / w))
        else:
            size = (int(self.scale_size * w / h), self.scale_size)
        return img.resize(size, Image.BICUBIC)

    def _crop_offsets(self, w: int, h: int) -> list[tuple[int, int]]:
        s = self.input_size
        if self.crops == 1:
            return [(int(round((w - s) / 2.0)), int(round((h - s) / 2.0)))]
        w_step, h_step = (w - s) // 4, (h - s) // 4
        return [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 2 * h_step)]  # left, right, centre

    def _video_frames(self, path: str) -> list[Image.Image]:
        """The sampled frames of a video file, one `vr[i]` per sampled index (decord, as the
        original; PyAV's i-th decoded frame where decord is not installed)."""
        try:
            import decord
        except ImportError:
            import av

            with av.open(path) as c:
                frames = [f.to_image() for f in c.decode(video=0)]
            return [frames[i] for i in sample_indices(len(frames), self.T, mode="test", clips=self.clips)]
        vr = decord.VideoReader(path, num_threads=1)
        idx = sample_indices(len(vr), self.T, mode="test", clips=self.clips)
        return [Image.fromarray(vr[int(i)].asnumpy()) for i in idx]

    def __getitem__(self, i: int):
        rec = self.records[i]
        folder = os.path.join(self.root, rec.path)
        images = []
        if self.video:
            images = self._video_frames(folder)
        else:
            n = len(os.listdir(folder))
            for idx in sample_indices(n, self.T, mode="test", clips=self.clips):  # one open per index, repeats too
                with Image.open(os.path.join(folder, self.tmpl.format(idx + 1))) as im:
                    images.append(im.convert("RGB"))
        images = [self._scale(im) for im in images]
        w, h = images[0].size
        s = self.input_size
        crops = [im.crop((ox, oy, ox + s, oy + s)) for ox, oy in self._crop_offsets(w, h) for im in images]
        stacked = np.concatenate([np.asarray(c) for c in crops], axis=2)  # (S, S, 3 * V * T)
        x = torch.from_numpy(stacked).permute(2, 0, 1).contiguous().float().div(255)
        mean, std = list(CLIP_MEAN) * (x.shape[0] // 3), list(CLIP_STD) * (x.shape[0] // 3)
        for t, m, sd in zip(x, mean, std, strict=True):  # channel by channel, as the original's GroupNormalize
            t.sub_(m).div_(sd)
        return x, rec.label, i


@torch.no_grad()
def original_style_collect(model, loader, *, views: int, num_frames: int, device: torch.device):
    """fp32 forward of each batch, view embeddings averaged (as the original's test.py)."""
    model.eval()
    embs, labels = [], []
    for x, y, _ in loader:
        b = x.shape[0]
        x = x.to(device).view(b * views, num_frames, 3, *x.shape[-2:])
        embs.append(model.encode_video(x).float().view(b, views, -1).mean(1).cpu())
        labels.append(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(embs), torch.cat(labels)


# ----------------------------------------------------------------------------- helpers
def ensure_data(folder: Path, videos: int, frames: int, size: int) -> Path:
    """Generate (once) a dataset with at least `videos` validation videos, as frame folders and mp4s."""
    stamp = folder / f"stamp_{videos}_{frames}_{size}_both"
    if not stamp.is_file():
        classes = min(8, videos)
        per_class = -(-videos // classes)
        generate(
            folder,
            classes=classes,
            videos_per_class=1,
            val_videos_per_class=per_class,
            frames=frames,
            size=size,
            fmt="both",
            seed=0,
        )
        stamp.write_text("ok\n")
    return folder


def loader_rate(loader, limit: int) -> float:
    """Videos/s of iterating the loader alone, from the first batch on (worker start-up and the
    first batch excluded, the same for both sides)."""
    it = iter(loader)
    n = next(it)[0].shape[0]
    start, counted = time.perf_counter(), 0
    for batch in it:
        counted += batch[0].shape[0]
        if n + counted >= limit:
            break
    return counted / (time.perf_counter() - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B/32")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--crops", type=int, default=3, choices=(1, 3))
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--videos", type=int, default=1, help="videos per side and round for the end-to-end measure")
    p.add_argument("--rounds", type=int, default=4, help="alternating end-to-end rounds per side (median reported)")
    p.add_argument("--data-videos", type=int, default=12, help="videos per side for the data-only measure")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", help="ours: auto (amp on CUDA, fp32 on CPU), fp32, amp, bf16")
    p.add_argument("--data", default=".cache/bench_eval", help="generated data folder")
    p.add_argument("--size", type=int, default=320, help="generated frame size (pixels)")
    p.add_argument("--input-size", type=int, default=None, help="crop size (default 224; 112 for tiny)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--input", default="frames", choices=("frames", "video"), help="what both sides read")
    p.add_argument(
        "--decoder",
        default="auto",
        help="with --input video: our decoder, or a comma-separated list whose first one that runs here is "
        "used (the others left out with the reason)",
    )
    return p.parse_args(argv)


def bench_config(a: argparse.Namespace, root: Path, size: int, scale: int, decoder: str = "auto") -> Any:
    """The resolved config of the model and test set measured (random weights, no text download)."""
    video = a.input == "video"
    data = {
        "dataset": "bench",
        "num_segments": a.frames,
        "batch_size": a.batch,
        "workers": a.workers,
        "val_root": str(root / ("videos" if video else "frames")),
        "val_list": str(root / ("val_video.txt" if video else "val.txt")),
        "label_list": str(root / "labels.csv"),
        "input_size": size,
        "scale_size": scale,
        "modality": "video" if video else "RGB",
        "decoder": decoder,
    }
    network = {"arch": a.arch, "pretrained": "none", "sim_header": "Transf", "text_cache": ""}
    return to_config(resolve({"seed": 0, "data": data, "network": network}, "bench/eval.py"))


def alternating_rounds(
    a: argparse.Namespace,
    model: Any,
    device: torch.device,
    precision: str,
    ours_loader: Callable[[int], Any],
    orig_loader: Callable[[int], Any],
) -> tuple[dict[str, list[float]], Any, torch.Tensor]:
    """End-to-end seconds per round and side, in alternating rounds (original, ours, ours,
    original, ...) so that a change of machine load hits both sides; each round runs the same first
    `videos` videos. Also returns the last outputs of both sides for the agreement check."""
    views = a.crops * a.clips
    times: dict[str, list[float]] = {"original": [], "ours": []}
    for r in range(a.rounds):
        for side in ("original", "ours") if r % 2 == 0 else ("ours", "original"):
            t = time.perf_counter()
            if side == "original":
                emb_o, _ = original_style_collect(
                    model, orig_loader(a.videos), views=views, num_frames=a.frames, device=device
                )
            else:
                out = collect(
                    model,
                    ours_loader(a.videos),
                    ViewSet(views, a.frames, device, normalize, precision),
                )
            times[side].append(time.perf_counter() - t)
    return times, out, emb_o


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    device = torch.device(
        "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    )
    precision = resolve_precision(None if a.precision == "auto" else a.precision, device)
    n_data = max(a.videos, a.data_videos)
    root = ensure_data(Path(a.data), n_data, frames=32, size=a.size)
    size = a.input_size or (112 if a.arch.startswith("tiny") else 224)
    scale = 256 if size == 224 else size
    decoder = runnable_decoders(a.decoder)[0] if a.input == "video" else "auto"
    cfg = bench_config(a, root, size, scale, decoder)
    names = [line.split(",", 1)[1] for line in (root / "labels.csv").read_text().splitlines()[1:]]
    torch.manual_seed(0)
    model = build_model(cfg, names, device=device).eval()
    print(
        f"{a.arch}, {a.frames} frames x {a.crops} crops x {a.clips} clips, batch {a.batch}, {a.workers} workers, "
        f"{device} ({torch.get_num_threads()} threads), ours: {precision}, original: fp32; "
        + ("frame folders" if a.input == "frames" else f"mp4s, ours decoded with {decoder}"),
        flush=True,
    )

    ours_ds = build_dataset(cfg, "test", test_crops=a.crops, test_clips=a.clips)
    orig_ds = OriginalStyleTestDataset(
        cfg.data.val_root,
        cfg.data.val_list,
        a.frames,
        a.clips,
        a.crops,
        input_size=size,
        scale_size=scale,
        video=a.input == "video",
    )

    all_records = list(ours_ds.records), list(orig_ds.records)

    def ours_loader(n: int) -> Any:
        ours_ds.records = all_records[0][:n]
        return build_loader(ours_ds, a.batch, a.workers, train=False)

    def orig_loader(n: int) -> Any:
        orig_ds.records = all_records[1][:n]
        return DataLoader(orig_ds, batch_size=a.batch, num_workers=a.workers, pin_memory=device.type == "cuda")

    res: dict[str, float] = {}
    # data part alone
    res["data_original"] = loader_rate(orig_loader(a.data_videos), a.data_videos)
    res["data_ours"] = loader_rate(ours_loader(a.data_videos), a.data_videos)
    print(
        f"data only : original {res['data_original']:.2f} videos/s, ours {res['data_ours']:.2f} videos/s "
        f"-> {res['data_ours'] / res['data_original']:.2f}x",
        flush=True,
    )

    # end to end (a warm-up forward first so that neither side pays for lazy initialisation)
    with torch.no_grad():
        model.encode_video(torch.zeros(1, a.frames, 3, size, size, device=device))
    times, out, emb_o = alternating_rounds(a, model, device, precision, ours_loader, orig_loader)
    # median round: one round slowed down by another job on the machine does not decide the result
    res["e2e_original"] = a.videos / statistics.median(times["original"])
    res["e2e_ours"] = a.videos / statistics.median(times["ours"])
    print(
        f"end to end: original {res['e2e_original']:.3f} videos/s, ours {res['e2e_ours']:.3f} videos/s "
        f"-> {res['e2e_ours'] / res['e2e_original']:.2f}x  (rounds: original "
        f"{', '.join(f'{t:.1f}' for t in times['original'])} s; ours {', '.join(f'{t:.1f}' for t in times['ours'])} s)",
        flush=True,
    )

    cos = F.cosine_similarity(out.embeddings, emb_o, dim=-1)
    cls = model.class_embeddings.detach().float().cpu()
    same = out.scores(cls).argmax(1) == (F.normalize(emb_o, dim=-1) @ F.normalize(cls, dim=-1).t()).argmax(1)
    res["min_cosine"] = float(cos.min())
    res["same_top1"] = float(same.float().mean())
    print(
        f"agreement : cosine of fused embeddings min {res['min_cosine']:.5f}; same top-1 class for "
        f"{100 * res['same_top1']:.0f}% of {len(same)} videos",
        flush=True,
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps({"args": vars(a), "device": str(device), "precision": precision, **res}, indent=2)
        )


if __name__ == "__main__":
    run_cli(main)
