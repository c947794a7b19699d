"""Predictions over time for long inputs: `predict.py --window W [--stride S]`.

The input is cut into windows of W (seconds, `2s`, or frames, `64f`; a bare number is seconds)
starting every S (default: W, no overlap); the last window is moved back to end at the last frame,
so the windows cover the whole input. Each window is sampled and cropped as test.py samples a
whole video (T frames spread over the window, `--test_crops` x `--test_clips` views), scored as
one video, and its top-k classes reported. Frames are read in groups of windows (one decoder call
per group), so memory stays bounded on hour-long files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.media import Media, uniform_window_indices
from datasets.data_builder import eval_transform
from utils import plots
from utils.config import Config
from utils.errors import UserError
from utils.evaluate import encode_views
from utils.fileio import atomic_write_text
from utils.progress import Progress
from utils.similarity import class_probabilities

WINDOWS_PER_BATCH = 8


@dataclass(frozen=True)
class Span:
    """A length given on the command line: `value` seconds (`unit="s"`) or frames (`"f"`)."""

    value: float
    unit: str

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


def parse_span(text: str, flag: str) -> Span:
    """`2s`, `2.5`, `0.5s` (seconds) or `64f` (frames); a UserError naming `flag` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|seconds?|f|frames?)?\s*", str(text))
    if not m:
        raise UserError(f"{flag} {text!r}: give seconds (2s, 2.5) or frames (64f)")
    value, unit = float(m.group(1)), (m.group(2) or "s")[0]
    if value <= 0:
        raise UserError(f"{flag} must be > 0, got {text!r}")
    if unit == "f" and value != int(value):
        raise UserError(f"{flag} {text!r}: a number of frames must be a whole number")
    return Span(value, unit)


def to_frames(span: Span, fps: float | None, flag: str, path: str) -> int:
    """The span in frames of an input whose frame rate is `fps`."""
    if span.unit == "f":
        return int(span.value)
    if not fps:
        raise UserError(
            f"{path}: its frame rate is unknown (a frame folder), so {flag} {span} cannot be turned into "
            f"frames: give {flag} in frames (e.g. 64f) or pass --fps"
        )
    return max(1, round(span.value * fps))


def plan_windows(
    num_frames: int, window: int, stride: int, path: str = "input", window_text: str = ""
) -> list[tuple[int, int]]:
    """[start, end) frame ranges of length `window` every `stride` frames, the last one moved back to
    end at `num_frames`; together they cover every frame."""
    if window > num_frames:
        raise UserError(
            f"{path}: --window {window_text or window} is {window} frames, longer than the input's "
            f"{num_frames} frames: use a shorter window, or leave --window out to classify it whole"
        )
    if stride < 1:
        raise UserError("--stride must be at least one frame")
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


def top_predictions(
    emb: torch.Tensor, classes: torch.Tensor, scale: float, k: int, class_names: Sequence[str]
) -> list[list[dict[str, Any]]]:
    """Video embeddings (B, D) → each one's k most probable classes, most probable first."""
    top = class_probabilities(emb, classes, scale).topk(k, dim=1)
    return [
        [
            {"rank": r + 1, "index": int(i), "class": class_names[int(i)], "probability": float(p)}
            for r, (p, i) in enumerate(zip(values, indices, strict=True))
        ]
        for values, indices in zip(top.values, top.indices, strict=True)
    ]


@dataclass(frozen=True)
class WindowPlan:
    """The windows of a timeline (`window` long, every `stride`; None: back to back) and the views
    of each: `crops` x `clips`."""

    window: Span
    stride: Span | None
    crops: int
    clips: int


@dataclass(frozen=True)
class ClassScoring:
    """What a window is scored against: (C, D) class embeddings, their names, the logit scale, and
    how many top classes to keep."""

    classes: torch.Tensor
    class_names: Sequence[str]
    scale: float
    topk: int


@dataclass(frozen=True)
class ModelRun:
    """Where and how the model runs: its device, the normalisation of its input, its precision."""

    device: torch.device
    normalize: Callable[[torch.Tensor], torch.Tensor]
    precision: str = "fp32"


def window_timeline(
    model: torch.nn.Module,
    media: Media,
    *,
    cfg: Config,
    plan: WindowPlan,
    scoring: ClassScoring,
    run: ModelRun,
    progress_label: str | None = None,
) -> dict[str, Any]:
    """Per-window top-k of one input (a JSON-ready dict); with `progress_label`, progress on stderr
    (utils.progress)."""
    window, stride, crops, clips = plan.window, plan.stride, plan.crops, plan.clips
    if media.kind == "image":
        raise UserError(f"{media.path}: an image has no timeline (leave --window out to classify it)")
    w = to_frames(window, media.fps, "--window", media.path)
    s = to_frames(stride or window, media.fps, "--stride", media.path)
    spans = plan_windows(media.num_frames, w, s, media.path, str(window))
    frames = int(cfg.data.num_segments)
    transform = eval_transform(cfg.data, crops)
    views = crops * clips
    k = min(scoring.topk, len(scoring.class_names))
    rows: list[dict[str, Any]] = []
    progress = Progress(len(spans), progress_label or "", "window", enabled=progress_label is not None)
    for g in range(0, len(spans), WINDOWS_PER_BATCH):
        group = spans[g : g + WINDOWS_PER_BATCH]
        wanted = [uniform_window_indices(a, b - a, frames, clips) for a, b in group]
        decoded = media.read([i for idx in wanted for i in idx])  # one decoder call per group
        per = len(wanted[0])
        batch = torch.stack([transform(decoded[j * per : (j + 1) * per])[0] for j in range(len(group))])
        emb = (
            encode_views(
                model,
                batch,
                views=views,
                num_frames=frames,
                device=run.device,
                normalize=run.normalize,
                precision=run.precision,
            )
            .mean(dim=1)
            .cpu()
        )
        for (a, b), preds in zip(
            group, top_predictions(emb, scoring.classes, scoring.scale, k, scoring.class_names), strict=True
        ):
            rows.append(
                {
                    "index": len(rows),
                    "start_frame": a,
                    "end_frame": b,
                    "start_s": a / media.fps if media.fps else None,
                    "end_s": b / media.fps if media.fps else None,
                    "predictions": preds,
                }
            )
        progress.update(len(group))
    progress.close()
    fps = media.fps
    return {
        "input": media.path,
        "num_frames": media.num_frames,
        "fps": fps,
        "duration_s": media.num_frames / fps if fps else None,
        "window": {"frames": w, "seconds": w / fps if fps else None, "given": str(window)},
        "stride": {"frames": s, "seconds": s / fps if fps else None, "given": str(stride or window)},
        "views": f"{frames}x{crops}x{clips}",
        "windows": rows,
    }


def timeline_lines(tl: dict[str, Any]) -> list[str]:
    """Human-readable lines: one per window with its top classes."""
    fps = tl["fps"]
    head = (
        f"{tl['input']} ({tl['duration_s']:.1f} s, {tl['num_frames']} frames at {fps:g} fps)"
        if fps
        else f"{tl['input']} ({tl['num_frames']} frames)"
    )
    w = tl["window"]
    span = f"{w['seconds']:g} s" if w["seconds"] is not None else f"{w['frames']} frames"
    lines = [f"{head}: {len(tl['windows'])} windows of {span}"]
    for row in tl["windows"]:
        where = (
            f"{row['start_s']:7.2f} - {row['end_s']:7.2f} s"
            if fps
            else f"frames {row['start_frame']:6d} - {row['end_frame']:6d}"
        )
        preds = "  |  ".join(f"{100 * p['probability']:6.2f}% {p['class']}" for p in row["predictions"][:3])
        lines.append(f"  {where}  {preds}")
    return lines


def write_timeline(tl: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    """`<stem>.timeline.json`, `.csv` and `.png` in `folder`."""
    json_path = atomic_write_text(folder / f"{stem}.timeline.json", json.dumps(tl, indent=2) + "\n")
    k = len(tl["windows"][0]["predictions"]) if tl["windows"] else 0
    text = io.StringIO()
    fields = ["window", "start_frame", "end_frame", "start_s", "end_s"]
    fields += [f for r in range(1, k + 1) for f in (f"top{r}", f"top{r}_prob")]
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(fields)
    for row in tl["windows"]:
        times = ["" if row[t] is None else f"{row[t]:.3f}" for t in ("start_s", "end_s")]
        preds = [v for p in row["predictions"] for v in (p["class"], f"{p['probability']:.6f}")]
        writer.writerow([row["index"], row["start_frame"], row["end_frame"], *times, *preds])
    csv_path = atomic_write_text(folder / f"{stem}.timeline.csv", text.getvalue())
    in_seconds = tl["fps"] is not None
    starts = [r["start_s"] if in_seconds else r["start_frame"] for r in tl["windows"]]
    ends = [r["end_s"] if in_seconds else r["end_frame"] for r in tl["windows"]]
    png = plots.plot_timeline(
        starts,
        ends,
        [r["predictions"][0]["class"] for r in tl["windows"]],
        [r["predictions"][0]["probability"] for r in tl["windows"]],
        folder / f"{stem}.timeline.png",
        unit="s" if in_seconds else "frame",
        title=f"{Path(tl['input']).name}: top-1 class per window of {tl['window']['given']} (shade = probability)",
    )
    return [json_path, csv_path] + ([png] if png else [])
