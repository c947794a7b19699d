"""Re-encode a folder tree of videos for fast random access, or extract JPEG frames
(`python -m datasets.preprocess`).

    python -m datasets.preprocess SRC OUT [--short-side 256] [--fps 0] [--gop 1] [--crf 23]
                                  [--frames] [--workers N] [--labels CSV] [--list FILE]

SRC holds one folder per class with video files (K400's layout); OUT gets the same tree:
- videos (default): H.264 mp4, short side `--short-side` (never upscaled), constant frame rate
  `--fps` (0 = the source's average rate), a keyframe every `--gop` frames, no B-frames and x264's
  `fastdecode` tuning, no audio. Sampling 8 frames from such a file decodes a few frames instead of
  the whole clip: the default GOP was chosen by measurement (docs/data.md, "Pre-processing").
  OUT/text4vis_preprocess.json records the settings; its presence tells the loader that the files
  have a constant frame rate, so torchcodec may seek by timestamp (`approximate`, cheaper).
- `--frames`: JPEG frame folders `OUT/<class>/<video>/img_00001.jpg ...` (`--image-tmpl`,
  `--quality`) at the same short side and frame rate.
Then the list (and, without `--labels`, a label CSV) is written with `datasets.make_list` for OUT:
by default `OUT.txt` and `OUT_labels.csv` next to OUT, with OUT's whole name (`pp/x.a` ->
`pp/x.a.txt`, `pp/x.a_labels.csv`). Such a file that exists and was written from another OUT (or
by hand) is refused before any work; a rerun for the same OUT replaces it (a hidden
`.<name>.source` next to each records the OUT).

Names with whitespace (Kinetics' `air drumming/`), which the list format cannot hold, are written
with `_` instead (`air_drumming/`), said once in the summary; the label CSV keeps the class names
of SRC's folders. Two sources that would get one output name are refused.

Work is spread over `--workers` processes (one FFmpeg thread each). Progress: a bar on a terminal,
otherwise (a log, nohup, CI) a line at every 10 % and every 30 s with the rate and the time left. It is
resumable: every output is written under a temporary name and renamed when complete, so a re-run
skips finished videos and redoes interrupted ones. A video that cannot be decoded is reported
with its path (and listed in OUT/preprocess_failures.txt); the others are still processed, and the
exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from datasets.make_list import VIDEO_EXTENSIONS, TreeScan, claim_derived, default_labels_out, make_list, record_source
from utils.cli import cli_parser
from utils.errors import UserError, run_cli
from utils.fileio import atomic_write_text, fsync_path, make_folder
from utils.progress import Progress

DEFAULT_GOP = 1  # all-intra: chosen by measurement, docs/data.md ("Pre-processing")


@dataclass(frozen=True)
class Settings:
    """What a pre-processed folder was written with (recorded in OUT/text4vis_preprocess.json)."""

    short_side: int = 256
    fps: float = 0.0  # 0 = keep the source's average rate
    frames: bool = False
    gop: int = DEFAULT_GOP
    crf: int = 23
    preset: str = "medium"
    bframes: int = 0
    fastdecode: bool = True
    quality: int = 95
    image_tmpl: str = "img_{:05d}.jpg"


def target_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(w, h) with the short side `short` (never upscaled), both even as yuv420p needs (the long
    side rounded to the nearest even number)."""
    if min(w, h) <= short:
        return max(2, w - w % 2), max(2, h - h % 2)
    if w <= h:
        return short - short % 2, max(2, 2 * round(h * short / w / 2))
    return max(2, 2 * round(w * short / h / 2)), short - short % 2


def _frames(src: str, s: Settings) -> Iterator[tuple[Any, Fraction]]:
    """Decoded frames of `src` at the target size and a constant rate: (av.VideoFrame, rate)."""
    import av

    with av.open(src) as inp:
        if not inp.streams.video:
            raise ValueError("no video stream")
        vs = inp.streams.video[0]
        vs.thread_count = 1
        rate = Fraction(s.fps).limit_denominator(1001) if s.fps else Fraction(vs.average_rate or vs.guessed_rate or 25)
        w, h = target_size(vs.codec_context.width, vs.codec_context.height, s.short_side)
        graph = av.filter.Graph()
        chain = [
            graph.add_buffer(template=vs),
            graph.add("fps", fps=f"{rate.numerator}/{rate.denominator}"),
            graph.add("scale", f"w={w}:h={h}:flags=bicubic"),
            graph.add("format", "yuv420p" if not s.frames else "rgb24"),
            graph.add("buffersink"),
        ]
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            a.link_to(b)
        graph.configure()

        def pull() -> Iterator[Any]:
            while True:
                try:
                    yield graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in inp.decode(vs):
            graph.push(frame)
            for out in pull():
                yield out, rate
        graph.push(None)
        for out in pull():
            yield out, rate


def encode_video(src: str, dst: str, s: Settings) -> int:
    """Re-encode `src` into `dst` (mp4); returns the number of frames written."""
    import av

    n = 0
    out = None
    try:
        for frame, rate in _frames(src, s):
            if out is None:
                out = av.open(dst, "w", format="mp4")
                opts = {
                    "crf": str(s.crf),
                    "preset": s.preset,
                    "g": str(s.gop),
                    "keyint_min": str(s.gop),
                    "sc_threshold": "0",
                    "bf": str(s.bframes),
                    "threads": "1",
                }
                if s.fastdecode:
                    opts["tune"] = "fastdecode"
                stream = out.add_stream("libx264", rate=rate, options=opts)
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                stream.time_base = 1 / rate
            frame.pts, frame.time_base = n, 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        if out is not None:
            for packet in stream.encode():
                out.mux(packet)
    finally:
        if out is not None:
            out.close()
    if n == 0:
        raise ValueError("no frames")
    return n


def extract_frames(src: str, dst: str, s: Settings) -> int:
    """JPEG frames of `src` into folder `dst` (`image_tmpl`, first index 1); returns their number."""
    os.makedirs(dst, exist_ok=True)
    n = 0
    for frame, _ in _frames(src, s):
        n += 1
        frame.to_image().save(os.path.join(dst, s.image_tmpl.format(n)), quality=s.quality)
    if n == 0:
        raise ValueError("no frames")
    return n


def process_one(src: str, dst: str, settings: dict) -> tuple[str, str | None]:
    """One video (in a worker process): (src, error or None). Writes under a temporary name first."""
    s = Settings(**settings)
    tmp = os.path.join(os.path.dirname(dst), "." + os.path.basename(dst) + ".tmp")
    try:
        _remove(tmp)  # left over from an interrupted run
        if s.frames:
            extract_frames(src, tmp, s)
        else:
            encode_video(src, tmp, s)
        fsync_path(tmp)
        os.replace(tmp, dst)
        return src, None
    except Exception as err:  # any decoder/encoder failure: reported per file
        _remove(tmp)
        text = (getattr(err, "strerror", None) or str(err)).strip().splitlines()
        return src, (text[-1] if text else type(err).__name__)[:300]


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def list_safe(name: str) -> str:
    """A file or folder name the list format can hold: every whitespace character becomes `_`."""
    return re.sub(r"\s", "_", name)


@dataclass
class Plan:
    """What `plan` found: (src, dst) pairs still to do, the number already done, the class name of
    each output class folder, and the sources whose output name differs (whitespace)."""

    todo: list[tuple[str, str]]
    done: int
    class_names: dict[str, str]
    renamed: list[tuple[str, str]]


def plan(src_root: Path, out_root: Path, frames: bool) -> Plan:
    """The work: SRC/<class>/<video> -> OUT/<class>/<video stem>(.mp4), names made list-safe.

    Two sources that would get the same output name (`a b.mp4` and `a_b.mp4`) are refused."""
    if not src_root.is_dir():
        raise UserError(f"source folder not found: {src_root}")
    todo, done = [], 0
    class_names: dict[str, str] = {}
    renamed: list[tuple[str, str]] = []
    taken: dict[Path, str] = {}
    for cls in sorted(e.name for e in os.scandir(src_root) if e.is_dir() and not e.name.startswith(".")):
        for item in sorted(os.scandir(src_root / cls), key=lambda e: e.name):
            if item.name.startswith(".") or not item.name.lower().endswith(VIDEO_EXTENSIONS):
                continue
            stem = os.path.splitext(item.name)[0]
            rel = f"{list_safe(cls)}/{list_safe(stem)}" + ("" if frames else ".mp4")
            dst = out_root / rel
            if dst in taken:
                raise UserError(
                    f"{item.path} and {taken[dst]} would both be written to {dst} (whitespace becomes '_'); "
                    f"rename one of them"
                )
            taken[dst] = item.path
            class_names[list_safe(cls)] = cls
            if rel != f"{cls}/{stem}" + ("" if frames else ".mp4"):
                renamed.append((f"{cls}/{item.name}", rel))
            if dst.exists():
                done += 1
            else:
                todo.append((item.path, str(dst)))
    if not todo and not done:
        raise UserError(
            f"{src_root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in class folders "
            f"(expected SRC/<class>/<video>)"
        )
    return Plan(todo, done, class_names, renamed)


def check_settings(out_root: Path, s: Settings) -> None:
    """Refuse to mix settings in one output folder (a resumed run must use the same ones)."""
    from datasets.video_reader import CFR_MARKER  # here: the module imports torch, which --help does not need

    marker = out_root / CFR_MARKER
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except ValueError:
            old = None
        if old != asdict(s):
            raise UserError(
                f"{out_root} was written with other settings ({marker}: {old}); "
                f"use the same options to resume, or another output folder"
            )
    make_folder(out_root, "output folder")
    atomic_write_text(marker, json.dumps(asdict(s), indent=1) + "\n")


def preprocess(
    src: str | Path, out: str | Path, s: Settings, *, workers: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Process every video of SRC into OUT; returns counts, the failures (src, message), the class
    name of each output class folder and the renamed sources (see `Plan`).

    Progress (`utils.progress`): a bar on a terminal, otherwise a line at every 10 % and every 30 s
    with the rate and the time left, counted from the first finished video."""
    src_root, out_root = Path(src), Path(out)
    if s.short_side < 16 or s.gop < 1 or s.fps < 0 or not 0 <= s.crf <= 51 or not 1 <= s.quality <= 100:
        raise UserError("--short-side >= 16, --gop >= 1, --fps >= 0, --crf 0-51, --quality 1-100")
    work = plan(src_root, out_root, s.frames)
    todo, done = work.todo, work.done
    check_settings(out_root, s)
    for d in sorted({os.path.dirname(dst) for _, dst in todo}):
        make_folder(d, "output folder")
    failures: list[tuple[str, str]] = []
    bar = Progress(len(todo), "preprocess", "video", enabled=progress)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        results: Iterator[tuple[str, str | None]] = (process_one(a, b, asdict(s)) for a, b in todo)
        for src_path, err in results:
            if err:
                failures.append((src_path, err))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(process_one, a, b, asdict(s)) for a, b in todo]
            for fut in as_completed(futures):
                src_path, err = fut.result()
                if err:
                    failures.append((src_path, err))
                bar.update(1)
    bar.close()
    failures.sort()
    report = out_root / "preprocess_failures.txt"
    if failures:
        atomic_write_text(report, "".join(f"{p}: {e}\n" for p, e in failures))
    elif report.exists():
        report.unlink()
    return {
        "done_before": done,
        "processed": len(todo) - len(failures),
        "failures": failures,
        "class_names": work.class_names,
        "renamed": work.renamed,
    }


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("python -m datasets.preprocess", __doc__.split("\n\n")[0])
    p.add_argument("src", help="source tree SRC/<class>/<video file>")
    p.add_argument("out", help="output tree (same layout)")
    p.add_argument("--short-side", type=int, default=256, help="short side in pixels (256 or 320; never upscaled)")
    p.add_argument("--fps", type=float, default=0.0, help="frame rate (0 = keep the source's average rate)")
    p.add_argument("--frames", action="store_true", help="extract JPEG frame folders instead of re-encoding")
    p.add_argument("--gop", type=int, default=DEFAULT_GOP, help=f"frames between keyframes (default {DEFAULT_GOP})")
    p.add_argument("--crf", type=int, default=23, help="x264 quality (lower = better, larger)")
    p.add_argument("--preset", default="medium", help="x264 preset")
    p.add_argument("--bframes", type=int, default=0, help="x264 B-frames (0: faster random access)")
    p.add_argument("--no-fastdecode", action="store_true", help="keep CABAC and deblocking (smaller, slower to decode)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality with --frames")
    p.add_argument("--image-tmpl", default="img_{:05d}.jpg", help="frame file names with --frames (first index 1)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    p.add_argument("--labels", help="label CSV to number the classes by (else a CSV is written)")
    p.add_argument("--list", help="list file to write (default: OUT's whole name + .txt, next to OUT)")
    p.add_argument("--space-names", action="store_true", help="written label CSV: '_' in folder names as spaces")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    s = Settings(
        short_side=a.short_side,
        fps=a.fps,
        frames=a.frames,
        gop=a.gop,
        crf=a.crf,
        preset=a.preset,
        bframes=a.bframes,
        fastdecode=not a.no_fastdecode,
        quality=a.quality,
        image_tmpl=a.image_tmpl,
    )
    out = Path(a.out)
    list_path = Path(a.list) if a.list else out.with_name(out.name + ".txt")  # pp/x.a -> pp/x.a.txt
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out}: cannot create the folder: {out} is a file, not a folder")
    if not a.list:  # names derived from OUT: refused early if another source wrote them
        claim_derived(list_path, out, "--list")
    if not a.labels:
        claim_derived(default_labels_out(list_path), out, "--list")
    result = preprocess(a.src, out, s, workers=a.workers)
    for path, err in result["failures"]:
        print(f"error: {path}: {err}", file=sys.stderr)
    summary = make_list(
        out,
        list_path,
        a.labels,
        TreeScan("frames" if s.frames else "video", s.image_tmpl if s.frames else None),
        space_names=a.space_names,
        class_names=result["class_names"],
        source=out,
    )
    if not a.list:
        record_source(list_path, out)
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    renamed = result["renamed"]
    if renamed:
        first, written = renamed[0]
        print(
            f"{len(renamed)} source name(s) hold whitespace, which lists cannot: written with '_' "
            f"(e.g. '{first}' -> '{written}')"
            + ("; the label CSV keeps the class names" if summary["labels_csv"] else "")
        )
    print(
        f"{result['processed']} processed, {result['done_before']} already done, {len(result['failures'])} failed; "
        f"list {summary['list']}" + (f", labels {summary['labels_csv']}" if summary["labels_csv"] else "")
    )
    if result["failures"]:
        print(f"failures listed in {out / 'preprocess_failures.txt'}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
