"""Behaviour fingerprint of the project, to prove that a refactor changed nothing.

    python bench/identity.py record FILE.json [--work DIR]    # fingerprint of this checkout
    python bench/identity.py compare A.json B.json            # exit 1 and list what differs

The fingerprint is taken through the public command lines and functions only, so the same script
runs before and after a refactor of the code behind them:
* the sampled frame indices of every sampling mode over a grid of (frames, segments, clips), with
  seeded generators, and the crop boxes of the training and test crops over a grid of frame sizes;
* a short seeded training run of the demo config on generated frames (2 epochs, one process):
  every metrics.csv value except wall-clock columns, and a SHA-256 of each checkpoint tensor;
* the exported ONNX model's outputs on a fixed input (rounded to 1e-5).
Wall-clock columns differ between any two runs and are left out; everything else must be equal.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIME_COLUMNS = ("time", "data_wait", "step_s", "seconds", "eta", "wall", "clips_per_s", "compute")


def sampling_table() -> dict[str, Any]:
    """Indices of every sampling mode, and the crop boxes of the train and test crops."""
    import numpy as np

    from datasets.sampling import sample_indices
    from datasets.transforms import eval_crop_plan, multiscale_crop_box, random_sized_crop_box

    table: dict[str, Any] = {}
    for n in (1, 5, 9, 37, 128, 300):
        for T in (1, 4, 8, 16):
            for dense in (False, True):
                key = f"n{n}_T{T}_{'dense' if dense else 'seg'}"
                rng = np.random.default_rng(n * 1000 + T)
                table[f"train_{key}"] = sample_indices(n, T, mode="train", dense=dense, rng=rng)
                table[f"val_{key}"] = sample_indices(n, T, mode="val", dense=dense)
                for clips in (1, 2, 4):
                    table[f"test_{key}_c{clips}"] = sample_indices(n, T, mode="test", clips=clips, dense=dense)
    for h, w in ((256, 340), (240, 320), (340, 256), (128, 128)):
        rng = np.random.default_rng(h + w)
        table[f"rsc_{h}x{w}"] = [list(random_sized_crop_box(h, w, 112, rng)) for _ in range(8)]
        table[f"msc_{h}x{w}"] = [list(multiscale_crop_box(h, w, 112, rng)) for _ in range(8)]
        for crops in (1, 3, 5, 10):
            shape, plan = eval_crop_plan(h, w, 112, 128 if crops > 1 else (120, 160), crops)
            table[f"plan_{h}x{w}_c{crops}"] = [list(shape), [[list(box), flip] for box, flip in plan]]
    return table


def run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def metrics_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if not any(t in k for t in TIME_COLUMNS)} for row in rows]


def tensor_hashes(path: Path) -> dict[str, str]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt.get("model_state_dict", ckpt))
    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16] for k, v in sorted(state.items())}


def onnx_outputs(model: Path) -> dict[str, list[float]]:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    outs = sess.run(None, {inp.name: x})
    return {
        o.name: np.round(v.astype(np.float64), 5).ravel().tolist()
        for o, v in zip(sess.get_outputs(), outs, strict=True)
    }


def training_fingerprint(work: Path) -> dict[str, Any]:
    """A 2-epoch seeded demo run on generated frames, its checkpoint and its ONNX export."""
    py = sys.executable
    data, out = work / "data", work / "run"
    run(
        [
            py,
            "-m",
            "datasets.synthetic",
            "--out",
            str(data),
            "--format",
            "frames",
            "--motions",
            "horizontal",
            "--videos-per-class",
            "4",
            "--val-videos-per-class",
            "2",
            "--frames",
            "8",
            "--size",
            "64",
        ],
        ROOT,
    )
    opts = [
        f"data.train_root={data}/frames",
        f"data.val_root={data}/frames",
        f"data.train_list={data}/train.txt",
        f"data.val_list={data}/val.txt",
        f"data.label_list={data}/labels.csv",
        "data.batch_size=4",
        "data.workers=0",
        "solver.epochs=2",
        "logging.eval_freq=1",
    ]
    run([py, "train.py", "--config", "configs/demo/demo_transf.yaml", "--output", str(out), "--opts", *opts], ROOT)
    onnx = work / "model.onnx"
    run([py, "-m", "app.export", "--weights", str(out / "model_best.pt"), "--out", str(onnx)], ROOT)
    return {
        "metrics": metrics_rows(out / "metrics.csv"),
        "last_model": tensor_hashes(out / "last_model.pt"),
        "model_best": tensor_hashes(out / "model_best.pt"),
        "onnx": onnx_outputs(onnx),
    }


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in {'first' if k in a else 'second'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="write this checkout's fingerprint")
    rec.add_argument("out", type=Path)
    rec.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    rec.add_argument("--no-train", action="store_true", help="sampling and crop tables only (seconds)")
    cmp = sub.add_parser("compare", help="compare two fingerprints")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.cmd == "compare":
        a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
        found = diff(a, b)
        print("\n".join(found[:50]) if found else f"identical: {', '.join(sorted(a))}")
        sys.exit(1 if found else 0)
    fp: dict[str, Any] = {"sampling": sampling_table()}
    if not args.no_train:
        with tempfile.TemporaryDirectory() as tmp:
            fp["training"] = training_fingerprint(args.work or Path(tmp))
    args.out.write_text(json.dumps(fp, sort_keys=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
