"""Classify single videos or frame folders and print the top-k classes with probabilities.

    python predict.py --config CFG --weights W clip.mp4 frames_dir/ [...] [--labels CSV] [--topk 5]
                      [--test_crops 3 --test_clips 4] [--json]

Each input goes through the test pipeline of test.py (same frame sampling, crops, view fusion).
`--labels CSV` classifies against any list of class names (`id,name` CSV): their embeddings are
computed with the CLIP text encoder, so new names work without retraining (zero-shot) unless the
model's classifier is trainable (`network.fix_text: False`), whose rows come from the checkpoint.
`--config` may be left out for checkpoints written by our train.py (they store their config).
An input that cannot be read is reported and skipped; the exit status is 1 if any input failed.
Runs on CPU when no GPU is present.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from app.weights import add_trust_arg, load_model, open_weights
from datasets.lists import VideoRecord, read_label_csv
from datasets.make_list import template_regex
from datasets.transforms import EvalTransform, normalize
from datasets.video_dataset import VideoDataset
from utils.choices import DEVICES, PRECISIONS, TEST_CROPS
from utils.distributed import select_device
from utils.errors import UserError, cli_parser, run_cli
from utils.evaluate import class_embeddings_of, encode_views, eval_scale
from utils.similarity import class_probabilities

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def infer_frame_template(folder: Path, preferred: str, index_bias: int) -> tuple[str, int, int]:
    """(image_tmpl, index_bias, frame count) for a frame folder.

    The config's template is used when its first frame exists; otherwise it is inferred from the
    file names (`frame_0001.png` -> `frame_{:04d}.png`, first index 1)."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not names:
        raise UserError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    if (folder / preferred.format(index_bias)).is_file():
        count = sum(1 for n in names if re.fullmatch(_regex(preferred), n))
        return preferred, index_bias, count
    m = re.fullmatch(r"(.*?)(\d+)(\.[A-Za-z0-9]+)", names[0])
    if not m:
        raise UserError(f"{folder}: cannot tell the frame numbering from the file name '{names[0]}' "
                        f"(expected e.g. img_00001.jpg)")
    prefix, digits, ext = m.groups()
    number = f"{{:0{len(digits)}d}}" if digits.startswith("0") else "{}"
    tmpl = prefix.replace("{", "{{").replace("}", "}}") + number + ext
    pattern = re.escape(prefix) + r"(\d+)" + re.escape(ext)
    indices = sorted(int(mm.group(1)) for n in names if (mm := re.fullmatch(pattern, n)))
    first = indices[0]
    if indices != list(range(first, first + len(indices))):
        raise UserError(f"{folder}: frame numbers are not contiguous from {prefix}{digits}{ext}")
    return tmpl, first, len(indices)


def _regex(tmpl: str) -> str:
    return template_regex(tmpl).pattern


def load_input(path: str, cfg: Any, *, crops: int, clips: int, dense: bool) -> torch.Tensor:
    """uint8 (crops*clips*T, 3, S, S) of one video file or frame folder, as test.py would see it."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {path}")
    common: dict[str, Any] = dict(root="", num_segments=int(cfg.data.num_segments), mode="test",
                  transform=EvalTransform(int(cfg.data.input_size), int(cfg.data.scale_size), crops),
                  dense=dense, test_clips=clips, seed=int(cfg.seed), on_bad_sample="error", list_path=path)
    if p.is_dir():
        tmpl, bias, n = infer_frame_template(p, cfg.data.image_tmpl, int(cfg.data.index_bias))
        ds = VideoDataset([VideoRecord(str(p), n, 0, 1)], modality="RGB", image_tmpl=tmpl, index_bias=bias,
                          num_frames_from="list", **common)
    else:
        ds = VideoDataset([VideoRecord(str(p), None, 0, 1)], modality="video",
                          decoder=cfg.data.decoder, **common)
    try:
        return ds.load(0, ds.rng(0))[0]
    except UserError:
        raise
    except Exception as err:  # a decoder's own exception type: still one clear line per input
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {path}: {detail}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli_parser("predict.py", __doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="video files and/or frame folders")
    parser.add_argument("--config", "--cfg", dest="config", default=None,
                        help="YAML config (default: the one stored in our checkpoint)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (give it after the inputs: it takes every KEY=VALUE that follows)")
    parser.add_argument("--weights", required=True,
                        help="checkpoint (ours, converted or the original's layout) or a run folder")
    parser.add_argument("--labels", default=None, help="class-name CSV (`id,name`); default: data.label_list")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per input")
    parser.add_argument("--test_crops", type=int, default=1, choices=TEST_CROPS, help="spatial crops (as test.py)")
    parser.add_argument("--test_clips", type=int, default=1, help="temporal clips (as test.py)")
    parser.add_argument("--dense", action="store_true", default=None, help="dense sampling (as test.py)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="amp/fp16: float16 autocast on CUDA (fp32 on CPU)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present")
    add_trust_arg(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.test_clips < 1:
        raise UserError("--topk and --test_clips must be >= 1")

    weights = open_weights(args.weights)
    cfg = weights.config(args.config, args.opts)
    device = select_device(args.device)
    if args.labels:
        cfg.data.label_list = args.labels
    label_csv = cfg.data.label_list
    class_names = read_label_csv(args.labels) if args.labels else weights.class_names()
    if class_names is None:
        if not label_csv:
            raise UserError("no class names: pass --labels CSV or set data.label_list in the config")
        class_names = read_label_csv(label_csv)
    model = load_model(weights, cfg=cfg, class_names=class_names, device=device,
                       trusted_pickles=args.trust_pickle).model
    classes = class_embeddings_of(model)
    scale = eval_scale(model, cfg.network.eval_logit_scale)
    dense = bool(cfg.data.dense if args.dense is None else args.dense)
    views = args.test_crops * args.test_clips
    k = min(args.topk, len(class_names))

    results, failed = [], 0
    for path in args.inputs:
        try:
            clip = load_input(path, cfg, crops=args.test_crops, clips=args.test_clips, dense=dense)
        except UserError as err:
            failed += 1
            results.append({"input": path, "error": str(err)})
            if not args.json:
                print(f"{path}\n  error: {err}", file=sys.stderr, flush=True)
            continue
        emb = encode_views(model, clip[None], views=views, num_frames=int(cfg.data.num_segments), device=device,
                           normalize=normalize, precision=args.precision).mean(dim=1).cpu()
        probs = class_probabilities(emb, classes, scale)[0]
        top = probs.topk(k)
        preds: list[dict[str, Any]] = [{"rank": r + 1, "index": int(i), "class": class_names[int(i)], "probability": float(p)}
                 for r, (p, i) in enumerate(zip(top.values, top.indices, strict=True))]
        results.append({"input": path, "predictions": preds})
        if not args.json:
            print(path)
            for pr in preds:
                print(f"  {pr['rank']}. {100 * pr['probability']:6.2f}%  {pr['class']}")
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"weights": str(args.weights), "labels": str(label_csv),
                          "views": f"{int(cfg.data.num_segments)}x{args.test_crops}x{args.test_clips}",
                          "results": results}, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
