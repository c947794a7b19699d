"""Data-pipeline throughput: clips/s of our loader against a per-frame PIL baseline.

`python bench/data.py` (about 1-2 minutes) writes a small benchmark set (340x256 JPEG frame
folders and H.264 mp4 files, 64 frames each, like the UCF/HMDB frames of the original) into
`--data` (default `.cache/bench_data`), then measures with 0 and 2 DataLoader workers:

- train: T=8 frames, resize 256 → random-sized crop 224 → flip → grayscale (clip-level);
- test:  T=8 frames, 3 crops × 4 clips (96 frames per video);

for our pipeline (`datasets.VideoDataset`: one batched read per clip, whole-clip torchvision v2
ops, uint8 out, normalisation left to the device) and for a baseline written here that works as
the original did: every frame opened with PIL (videos: decord frame by frame), resized, cropped,
flipped and grayscaled one PIL image at a time, then converted and normalised on the CPU.
Both run with one torch thread per process, as our workers do.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets.lists import VideoRecord  # noqa: E402
from datasets.sampling import sample_indices  # noqa: E402
from datasets.synthetic import class_list, render_video  # noqa: E402
from datasets.transforms import CLIP_MEAN, CLIP_STD, EvalTransform, TrainTransform  # noqa: E402
from datasets.video_dataset import VideoDataset  # noqa: E402

W, H, FRAMES, T = 340, 256, 64, 8


# ----------------------------------------------------------------------------- benchmark data

def make_data(root: Path, videos: int) -> list[VideoRecord]:
    """Frame folders and H.264 videos of generated clips at 340x256 (cached between runs)."""
    import av

    records = []
    done = root / f"done_{videos}"
    for k in range(videos):
        rel = f"v{k:03d}"
        records.append(VideoRecord(rel, FRAMES, k % 10, k + 1))
        if done.exists():
            continue
        imgs = render_video(class_list(10)[k % 10], FRAMES, H, np.random.default_rng(k))
        folder = root / "frames" / rel
        folder.mkdir(parents=True, exist_ok=True)
        wide = [np.asarray(Image.fromarray(a).resize((W, H), Image.BILINEAR)) for a in imgs]
        for t, arr in enumerate(wide):
            Image.fromarray(arr).save(folder / f"img_{t + 1:05d}.jpg", quality=90)
        (root / "videos").mkdir(parents=True, exist_ok=True)
        with av.open(str(root / "videos" / f"{rel}.mp4"), "w") as c:
            s = c.add_stream("libx264", rate=25, options={"crf": "23", "preset": "veryfast"})
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            for arr in wide:
                for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    done.touch()
    return records


# ----------------------------------------------------------------------------- the baseline

class PILBaseline(Dataset):
    """The original's way: one PIL image per frame through every transform."""

    def __init__(self, records, root: Path, video: bool, train: bool, crops: int = 1, clips: int = 1):
        self.records, self.root, self.video, self.train = records, root, video, train
        self.crops, self.clips = crops, clips
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.records)

    def _load(self, rec: VideoRecord, indices):
        if self.video:
            import decord

            vr = decord.VideoReader(str(self.root / "videos" / f"{rec.path}.mp4"))
            return [Image.fromarray(vr[i].asnumpy()).convert("RGB") for i in indices]
        folder = self.root / "frames" / rec.path
        len(os.listdir(folder))  # the original counted the files of every folder it read
        return [Image.open(folder / f"img_{i + 1:05d}.jpg").convert("RGB") for i in indices]

    @staticmethod
    def _scale(imgs, size):
        w, h = imgs[0].size
        ow, oh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
        return [im.resize((ow, oh), Image.BICUBIC) for im in imgs]

    def _train(self, imgs):
        imgs = self._scale(imgs, 256)
        w, h = imgs[0].size
        for _ in range(10):
            area = random.uniform(0.08, 1.0) * w * h
            ar = random.uniform(3 / 4, 4 / 3)
            cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if random.random() < 0.5:
                cw, ch = ch, cw
            if cw <= w and ch <= h:
                x, y = random.randint(0, w - cw), random.randint(0, h - ch)
                imgs = [im.crop((x, y, x + cw, y + ch)).resize((224, 224), Image.BILINEAR) for im in imgs]
                break
        else:
            imgs = self._scale(imgs, 224)
            w, h = imgs[0].size
            x, y = random.randint(0, w - 224), random.randint(0, h - 224)
            imgs = [im.crop((x, y, x + 224, y + 224)) for im in imgs]
        if random.random() < 0.5:
            imgs = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in imgs]
        if random.random() < 0.2:
            imgs = [ImageOps.grayscale(im).convert("RGB") for im in imgs]
        return imgs

    def _test3(self, imgs):
        imgs = self._scale(imgs, 224)
        w, h = imgs[0].size
        ws, hs = (w - 224) // 4, (h - 224) // 4
        out = []
        for x, y in ((0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)):
            out += [im.crop((x, y, x + 224, y + 224)) for im in imgs]
        return out

    def __getitem__(self, i):
        rec = self.records[i]
        if self.train:
            idx = sample_indices(FRAMES, T, mode="train", rng=np.random.default_rng(i))
        else:
            idx = sample_indices(FRAMES, T, mode="test", clips=self.clips)
        imgs = self._load(rec, idx)
        imgs = self._train(imgs) if self.train else self._test3(imgs)
        x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).float() / 255.0
        return (x - self.mean) / self.std, rec.label


# ----------------------------------------------------------------------------- timing

def _worker_init(_):
    torch.set_num_threads(1)


def clips_per_s(ds: Dataset, workers: int, n: int, batch: int) -> float:
    """Steady-state clips per second over n samples: the clock starts when the first batch
    arrives, so worker start-up (a second or two per worker here) is not counted."""
    sub = torch.utils.data.Subset(ds, list(range(n)))
    loader = DataLoader(sub, batch_size=batch, num_workers=workers, worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=2 if workers else None)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    seen = 0
    for batch_data in it:
        seen += len(batch_data[0])
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=".cache/bench_data", help="folder for the generated benchmark set")
    p.add_argument("--train-clips", type=int, default=48, help="clips timed per training configuration")
    p.add_argument("--test-videos", type=int, default=12, help="videos timed per test configuration")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is kept")
    a = p.parse_args()
    torch.set_num_threads(1)
    root = Path(a.data)
    n_videos = max(a.train_clips, a.test_videos)
    t0 = time.perf_counter()
    records = make_data(root, n_videos)
    print(f"data: {n_videos} videos of {FRAMES} frames {W}x{H} in {root} ({time.perf_counter() - t0:.1f} s)")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, one torch thread per process")

    rows = []
    for kind in ("frames", "video"):
        video = kind == "video"
        kw = dict(root=str(root / ("videos" if video else "frames")), modality="video" if video else "RGB",
                  num_segments=T, video_backend="decord", num_frames_from="dir")
        recs = [VideoRecord(r.path + (".mp4" if video else ""), None if video else r.num_frames, r.label, r.line)
                for r in records]
        ours_train = VideoDataset(recs, mode="train", transform=TrainTransform(224, 256), **kw)
        ours_test = VideoDataset(recs, mode="test", test_clips=4, transform=EvalTransform(224, 256, crops=3), **kw)
        base_train = PILBaseline(records, root, video, train=True)
        base_test = PILBaseline(records, root, video, train=False, crops=3, clips=4)
        for workers in a.workers:
            for name, ours, base, n, batch in (("train T=8", ours_train, base_train, a.train_clips, 8),
                                               ("test 3x4 views", ours_test, base_test, a.test_videos, 1)):
                # best of `--repeats` alternating runs: the machine is shared, single runs are noisy
                b = o = 0.0
                for _ in range(a.repeats):
                    b = max(b, clips_per_s(base, workers, n, batch))
                    o = max(o, clips_per_s(ours, workers, n, batch))
                rows.append((kind, name, workers, b, o))
                print(f"{kind:6s} {name:15s} workers={workers}: baseline {b:7.1f} clips/s   ours {o:7.1f} clips/s"
                      f"   x{o / b:.1f}", flush=True)
    print("\n| input | pipeline | workers | PIL per-frame baseline (clips/s) | ours (clips/s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for kind, name, workers, b, o in rows:
        print(f"| {kind} | {name} | {workers} | {b:.1f} | {o:.1f} | {o / b:.1f}x |")


if __name__ == "__main__":
    main()
