"""Classify videos, frame folders or images and print the top-k classes with probabilities.

    python predict.py --weights W clip.mp4 frames_dir/ photo.jpg [...] [--labels CSV] [--topk 5]
                      [--test_crops 3 --test_clips 4] [--json] [--config CFG] [--opts K=V ...]
    python predict.py --weights W long.mp4 --window 4s [--stride 2s] [--out DIR]   # a timeline

Each input goes through the test pipeline of test.py (same frame sampling, crops, view fusion); an
image is a one-frame clip (its frame repeated T times, as a 1-frame video is sampled).
`--labels CSV` classifies against any list of class names (`id,name` CSV): their embeddings are
computed with the CLIP text encoder, so new names work without retraining (zero-shot) unless the
model's classifier is trainable (`network.fix_text: False`), whose rows come from the checkpoint.
`--config` may be left out for checkpoints written by our train.py and for exports (`python -m
app.export`: `.pt`, TorchScript `.ts` and ONNX `.onnx` files run directly; they hold their config).
`--window W [--stride S]` (seconds `4s` or frames `64f`) scores windows along each input instead
of the whole input and writes `<name>.timeline.json`, `.csv` and `.png` to `--out` (app/timeline.py;
default: a folder of its own per model and settings under exp/predict/, docs/evaluation.md).
An input that cannot be read is reported and skipped; at the end a line says which inputs failed
and the exit status is 1 if any did.
Runs on CPU when no GPU is present.
"""

from __future__ import annotations

import argparse

from utils.choices import DEVICES, PRECISIONS
from utils.cli import add_config_args, add_trust_arg, add_view_args, cli_parser, help_before_imports, parse_with_opts

DEFAULT_OUT = "exp/predict"


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("predict.py", __doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="video files, frame folders and/or images")
    add_config_args(parser, "YAML config (default: the one stored in our checkpoint or export)")
    parser.add_argument(
        "--weights",
        required=True,
        help="checkpoint (ours, converted or the original's layout), run folder, or export (.pt/.ts/.onnx)",
    )
    parser.add_argument("--labels", default=None, help="class-name CSV (`id,name`); default: the model's classes")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per input (or per window)")
    add_view_args(parser)
    parser.add_argument(
        "--window",
        default=None,
        help="score windows of this length along each input: seconds (4s, 2.5) or frames (64f)",
    )
    parser.add_argument("--stride", default=None, help="start a window every this long (default: --window)")
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate of frame folders (or to override a video's), for --window in seconds",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"folder of the timeline files (with --window; default {DEFAULT_OUT}/<weights>_<views>_<window>_<hash>, "
        "one per model and settings); files of the same name already there are refused unless --overwrite",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace timeline files already in --out")
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="amp/fp16: float16 autocast on CUDA (fp32 on CPU)"
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present")
    add_trust_arg(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return parser


# --help answers here, before torch and open_clip are imported (seconds); the imports below come
# after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.load_weights import WeightsFile, input_normalize, load_model, open_weights
from app.media import load_input, open_media
from app.outputs import config_identity, default_folder, file_identity, refuse_existing, weights_name
from app.timeline import (
    ClassScoring,
    ModelRun,
    WindowPlan,
    parse_span,
    timeline_lines,
    top_predictions,
    window_timeline,
    write_timeline,
)
from datasets.lists import read_label_csv
from utils.checkpoint import BEST, LAST
from utils.config import Config, replace
from utils.distributed import select_device
from utils.errors import UserError, run_cli
from utils.evaluate import class_embeddings_of, encode_views, eval_scale
from utils.progress import failure_summary


def stems(paths: Sequence[str]) -> list[str]:
    """File-name stems for the timeline files, made unique (`clip`, `clip_2`, ...)."""
    out: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p.rstrip("/")).stem or "input")
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out.append(name)
    return out


TIMELINE_FILES = (".timeline.json", ".timeline.csv", ".timeline.png")


def timeline_stems(inputs: Sequence[str], folder: Path, explicit: bool, overwrite: bool) -> list[str]:
    """The file-name stem of each input's timeline in `folder`. In an explicit --out, files already
    there are refused (UserError) unless `overwrite`; in the default folder (one per settings), the
    timeline of the same input is replaced and another input of the same name gets `name_2`, ..."""
    names = stems(inputs)
    if explicit:
        refuse_existing(folder, [n + ext for n in names for ext in TIMELINE_FILES], "--out", overwrite)
        return names
    taken: set[str] = set()
    out = []
    for path, base in zip(inputs, names, strict=True):
        name, n = base, 1
        while name in taken or _timeline_of_another(folder / f"{name}.timeline.json", path):
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out.append(name)
    return out


def _timeline_of_another(json_path: Path, path: str) -> bool:
    """Whether `json_path` exists and holds the timeline of another input than `path`."""
    if not json_path.exists():
        return False
    try:
        other = json.loads(json_path.read_text())["input"]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable: keep it
    return Path(str(other)).resolve() != Path(path).resolve()


def check_args(args: argparse.Namespace) -> None:
    if args.topk < 1 or args.test_clips < 1:
        raise UserError("--topk and --test_clips must be >= 1")
    if args.fps is not None and args.fps <= 0:
        raise UserError(f"--fps must be > 0, got {args.fps:g}")
    if args.stride is not None and args.window is None:
        raise UserError("--stride needs --window")
    if args.out is not None and args.window is None:
        raise UserError("--out needs --window (only timelines are written to files)")


def class_names_of(args: argparse.Namespace, weights: WeightsFile, cfg: Config) -> list[str]:
    """--labels, else the names the checkpoint records, else the config's label CSV."""
    if args.labels:
        return read_label_csv(args.labels)
    names = weights.class_names()
    if names is not None:
        return names
    if not cfg.data.label_list:
        raise UserError("no class names: pass --labels CSV or set data.label_list in the config")
    return read_label_csv(cfg.data.label_list)


class Predictor:
    """The model of --weights with everything one input needs: classes, scale, views."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.window = parse_span(args.window, "--window") if args.window is not None else None
        self.stride = parse_span(args.stride, "--stride") if args.stride is not None else None
        if args.out is not None:  # before anything is loaded
            timeline_stems(args.inputs, Path(args.out), True, args.overwrite)
        weights = open_weights(args.weights)
        cfg = weights.config(args.config, args.opts)
        self.cfg = replace(cfg, **{"data.label_list": args.labels}) if args.labels else cfg
        self.device = select_device(args.device)
        self.class_names = class_names_of(args, weights, self.cfg)
        self.dense = bool(self.cfg.data.dense if args.dense is None else args.dense)
        self.k = min(args.topk, len(self.class_names))
        self.out: Path | None = None
        self.stems = stems(args.inputs)
        if self.window is not None:
            self.out = Path(args.out) if args.out is not None else self.default_out(weights.path)
            self.stems = timeline_stems(args.inputs, self.out, args.out is not None, args.overwrite)
        self.model = load_model(
            weights, cfg=self.cfg, class_names=self.class_names, device=self.device, trusted_pickles=args.trust_pickle
        ).model
        self.classes = class_embeddings_of(self.model)
        self.scale = eval_scale(self.model, self.cfg.network.eval_logit_scale)
        self.normalize = input_normalize(self.model)

    def default_out(self, weights: Path) -> Path:
        """exp/predict/<weights>_<views>_w<window>[-s<stride>]_<hash of everything that changes the
        timeline> (app.outputs)."""
        a = self.args
        views = f"{int(self.cfg.data.num_segments)}x{a.test_crops}x{a.test_clips}" + ("_dense" if self.dense else "")
        span = f"w{self.window}" + (f"-s{self.stride}" if self.stride is not None else "")
        identity = {
            "tool": "predict_timeline",
            "config": config_identity(self.cfg),
            "weights": file_identity(weights),
            "class_names": self.class_names,
            "views": views,
            "window": str(self.window),
            "stride": str(self.stride),
            "fps": a.fps,
            "topk": self.k,
            "precision": a.precision,
        }
        return default_folder(DEFAULT_OUT, f"{weights_name(weights, (BEST, LAST))}_{views}_{span}", identity)

    def top_k(self, path: str) -> dict[str, Any]:
        """The whole input as one clip (test.py's views): its top-k classes."""
        a = self.args
        clip = load_input(path, self.cfg, crops=a.test_crops, clips=a.test_clips, dense=self.dense)
        emb = (
            encode_views(
                self.model,
                clip[None],
                views=a.test_crops * a.test_clips,
                num_frames=int(self.cfg.data.num_segments),
                device=self.device,
                normalize=self.normalize,
                precision=a.precision,
            )
            .mean(dim=1)
            .cpu()
        )
        preds = top_predictions(emb, self.classes, self.scale, self.k, self.class_names)[0]
        return {"input": path, "predictions": preds}

    def timeline(self, path: str, stem: str) -> dict[str, Any]:
        """Top-k per window over a long input, written as JSON / CSV / PNG."""
        a = self.args
        assert self.window is not None and self.out is not None, "timeline() needs --window"
        media = open_media(path, self.cfg, fps=a.fps)
        tl = window_timeline(
            self.model,
            media,
            cfg=self.cfg,
            plan=WindowPlan(self.window, self.stride, a.test_crops, a.test_clips),
            scoring=ClassScoring(self.classes, self.class_names, self.scale, self.k),
            run=ModelRun(self.device, self.normalize, a.precision),
            progress_label=Path(path.rstrip("/")).name,
        )
        tl["files"] = [str(f) for f in write_timeline(tl, self.out, stem)]
        return tl


def show(result: dict[str, Any]) -> None:
    """The text form of one input's result."""
    if "error" in result:
        print(f"{result['input']}\n  error: {result['error']}", file=sys.stderr, flush=True)
    elif "predictions" in result:
        print(result["input"])
        for pr in result["predictions"]:
            print(f"  {pr['rank']}. {100 * pr['probability']:6.2f}%  {pr['class']}")
    else:
        print("\n".join(timeline_lines(result)) + f"\n  timeline: {', '.join(result['files'])}")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_with_opts(build_parser(), argv)
    check_args(args)
    predictor = Predictor(args)
    results: list[dict[str, Any]] = []
    for path, stem in zip(args.inputs, predictor.stems, strict=True):
        try:
            result = predictor.timeline(path, stem) if predictor.window is not None else predictor.top_k(path)
        except UserError as err:
            result = {"input": path, "error": str(err)}
        results.append(result)
        if not args.json:
            show(result)
    cfg = predictor.cfg
    if args.json:
        print(
            json.dumps(
                {
                    "weights": str(args.weights),
                    "labels": str(cfg.data.label_list),
                    "views": f"{int(cfg.data.num_segments)}x{args.test_crops}x{args.test_clips}",
                    "results": results,
                },
                indent=2,
            )
        )
    if predictor.out is not None and any("windows" in r for r in results):
        from app.report import after_run  # here, not at the top: predict.py --help stays fast

        page = after_run(predictor.out, "predict.py", cfg.logging.report)
        if page is not None and not args.json:
            print(f"report: {page}", flush=True)
    failed = [(r["input"], r["error"]) for r in results if "error" in r]
    if failed:
        print(failure_summary(failed, len(results)), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
