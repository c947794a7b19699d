"""The three pictures of the README's "After training" section, from a demo run.

    bash scripts/run_demo.sh                          # a trained demo run: exp/demo/<timestamp>/transf
    python bench/readme_images.py exp/demo/<timestamp>/transf [--out docs/img]

Tests the run's `last_model.pt` with one view (test.py writes confusion.png and
per_class_accuracy.png) and runs `predict.py --window 2s` on a 60 s video of six 10 s segments of
generated clips, one per demo class (the timeline picture); copies them to `--out` as
demo_confusion.png, demo_per_class_accuracy.png and demo_timeline.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOTIONS = ("horizontal", "scale", "vertical")  # scripts/run_demo.sh's classes


def long_video(path: Path, seconds_per_class: int = 10, fps: int = 10, size: int = 128) -> None:
    """Every demo class in turn for `seconds_per_class`, as one mp4."""
    import numpy as np

    from datasets.synthetic import class_list, render_video, write_mp4

    rng = np.random.default_rng(0)
    frames = []
    for cls in class_list(motions=MOTIONS):
        frames += render_video(cls, seconds_per_class * fps, size, rng)
    write_mp4(path, frames, fps=fps)


def _run(cmd: list[str]) -> None:
    """Run one step; when it fails its own error line is already printed: add which step, then stop."""
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"error: bench/readme_images.py: step failed: {' '.join(cmd[1:3])} ...")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a demo run folder (config.yaml, last_model.pt)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    a = p.parse_args()
    a.run, a.out = a.run.resolve(), a.out.resolve()  # the steps run from the repository root
    for name in ("last_model.pt", "config.yaml"):
        if not (a.run / name).is_file():
            p.error(f"{a.run} is not a demo run folder: it has no {name} (bash scripts/run_demo.sh makes one)")
    py = [sys.executable]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        weights, cfg = str(a.run / "last_model.pt"), str(a.run / "config.yaml")
        test_out = tmp / "test"
        _run([*py, "test.py", "--config", cfg, "--weights", weights, "--output", str(test_out)])
        video = tmp / "long60.mp4"
        long_video(video)
        pred_out = tmp / "predict"
        cmd = [*py, "predict.py", "--weights", weights, str(video), "--window", "2s", "--out", str(pred_out)]
        _run(cmd)
        a.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(test_out / "confusion.png", a.out / "demo_confusion.png")
        shutil.copy(test_out / "per_class_accuracy.png", a.out / "demo_per_class_accuracy.png")
        timeline = next(pred_out.rglob("*.timeline.png"))
        shutil.copy(timeline, a.out / "demo_timeline.png")
    print(f"wrote {a.out}/demo_confusion.png, demo_per_class_accuracy.png, demo_timeline.png")


if __name__ == "__main__":
    main()
