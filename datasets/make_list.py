"""Write an annotation list (and, if needed, a label CSV) from a folder-per-class tree.

The original ships no Kinetics-400 training list and expects users to produce lists in its
formats (docs/recipes.md#list-formats) themselves. This tool does it from the usual layout::

    ROOT/<class>/<video_dir>/img_00001.jpg ...   ->  `<class>/<video_dir> <num_frames> <label>`
    ROOT/<class>/<video>.mp4                     ->  `<class>/<video>.mp4 <label>`

    python -m datasets.make_list ROOT --out FILE [--labels CSV] [--format auto|frames|video]
                                 [--image-tmpl 'img_{:05d}.jpg']

With `--labels`, class folders are mapped to the CSV's row ids: an exact name match first, then a
match that ignores case and treats `_` as a space (so `air_drumming/` finds `air drumming`); a
folder that matches no class is an error. Without `--labels`, classes are numbered in sorted
folder-name order and a label CSV is written next to the list: `<list>_labels.csv`, the list's
whole name less a `.txt` (`--labels-out` to choose where). That CSV is refused if it exists and was
written for another list (a hidden `.<csv name>.source` next to it records which).
Every class folder counts, even an empty one, so the numbering depends on the folder names only.
Output order is deterministic: classes sorted, then videos sorted by name (code-point order).
"""

from __future__ import annotations

import csv
import io
import os
import re
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets.lists import read_label_csv
from utils.cli import cli_parser
from utils.errors import UserError, run_cli
from utils.fileio import atomic_write_text, make_folder

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

Format = Literal["frames", "video"]


@dataclass(frozen=True)
class Entry:
    """One video found in the tree: its class folder, its path relative to ROOT (with `/`), and
    its frame count (frame folders) or None (video files)."""

    class_name: str
    path: str
    num_frames: int | None


def template_regex(image_tmpl: str) -> re.Pattern[str]:
    """A regex matching the file names `image_tmpl.format(i)` produces, capturing the index.

    `img_{:05d}.jpg` -> `img_(\\d{5,})\\.jpg`; `{}` and `{:d}` -> `(\\d+)`. Exactly one field is
    required because the dataset formats the template with the frame index only.
    """
    parts = list(string.Formatter().parse(image_tmpl))
    fields = [p for p in parts if p[1] is not None]
    if len(fields) != 1:
        raise UserError(f"--image-tmpl '{image_tmpl}' must contain exactly one '{{...}}' field for the frame index")
    pattern = ""
    for literal, field, spec, _conv in parts:
        pattern += re.escape(literal)
        if field is None:
            continue
        if field not in ("", "0"):
            raise UserError(f"--image-tmpl '{image_tmpl}': use a positional field such as {{:05d}}, not '{{{field}}}'")
        width = re.fullmatch(r"0?(\d*)d?", spec or "")
        if width is None:
            raise UserError(f"--image-tmpl '{image_tmpl}': unsupported format spec ':{spec}' (use e.g. {{:05d}})")
        n = int(width.group(1)) if width.group(1) else 1
        pattern += rf"(\d{{{n},}})"
    return re.compile(pattern + r"\Z")


def count_frames(folder: str, pattern: re.Pattern[str] | None) -> tuple[int, bool]:
    """(number of frame files in `folder`, whether their indices are exactly 1..n).

    With a template pattern only matching names count (as the dataset will open exactly those);
    without one, every file with an image extension counts and numbering is not checked.
    """
    count, indices = 0, []
    with os.scandir(folder) as it:
        for item in it:
            name = item.name
            if name.startswith("."):
                continue
            if pattern is not None:
                m = pattern.match(name)
                if m:
                    count += 1
                    indices.append(int(m.group(1)))
            elif name.lower().endswith(IMAGE_EXTENSIONS):
                count += 1
    contiguous = pattern is None or sorted(indices) == list(range(1, count + 1))
    return count, contiguous


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise UserError(f"data root not found or not a folder: {root}")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise UserError(f"{root}: no class folders (expected ROOT/<class>/<video folder or file>)")
    return names


def _check_no_whitespace(rel: str, root: Path) -> None:
    if any(c.isspace() for c in rel):
        raise UserError(
            f"{root / rel}: the path contains whitespace, which the list format "
            f"(space-separated fields) cannot hold; rename it, e.g. replace spaces with '_' "
            f"(`--labels` still matches 'air_drumming' to the class 'air drumming'); "
            f"`python -m datasets.preprocess` writes a copy with such names and keeps the class names"
        )


def _one_level_too_high(root: Path, dirs: list[tuple[str, str]], sample: int = 20) -> str:
    """The message for a ROOT one level above the class folders (e.g. the dataset folder holding
    `train/` and `val/`), recognised by its would-be video folders holding folders or video files
    instead of frames; "" when the tree does not look like that."""
    looked = 0
    for cls, name in dirs[:sample]:
        try:
            with os.scandir(root / cls / name) as it:
                items = [e for e in it if not e.name.startswith(".")]
        except OSError:
            return ""
        if any(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in items):
            return ""
        if any(e.is_dir() or e.name.lower().endswith(VIDEO_EXTENSIONS) for e in items):
            looked += 1
    if not looked:
        return ""
    tops = sorted({cls for cls, _ in dirs})
    examples = " or ".join(str(root / t) for t in tops[:3])
    return (
        f"{root} looks one level too high: its sub-folders ({', '.join(tops[:5])}"
        f"{', ...' if len(tops) > 5 else ''}) hold class folders, not videos. Point at the folder that "
        f"holds one folder per class, e.g. {examples}"
    )


def scan_tree(
    root: str | Path, fmt: str = "auto", image_tmpl: str | None = None, threads: int = 8
) -> tuple[Format, list[str], list[Entry], list[str]]:
    """Walk ROOT/<class>/<video>: returns (format, class folder names, entries, warnings).

    `fmt` `auto` picks `frames` when class folders hold sub-folders and `video` when they hold
    video files; a tree with both needs an explicit `fmt`. Frame folders without any frame are
    skipped with a warning (the dataset could not read them).
    """
    root = Path(root)
    if fmt not in ("auto", "frames", "video"):
        raise UserError(f"--format must be auto, frames or video, got '{fmt}'")
    classes = _class_folders(root)
    dirs: list[tuple[str, str]] = []
    videos: list[tuple[str, str]] = []
    for cls in classes:
        for item in sorted(os.scandir(root / cls), key=lambda e: e.name):
            if item.name.startswith("."):
                continue
            if item.is_dir():
                dirs.append((cls, item.name))
            elif item.name.lower().endswith(VIDEO_EXTENSIONS):
                videos.append((cls, item.name))
    if fmt == "auto":
        if dirs and videos:
            raise UserError(
                f"{root}: class folders hold both frame folders ({len(dirs)}) and video files "
                f"({len(videos)}); pass --format frames or --format video"
            )
        if not dirs and not videos:
            raise UserError(
                f"{root}: found no frame folders and no video files "
                f"({', '.join(VIDEO_EXTENSIONS)}) inside the class folders"
            )
        fmt = "frames" if dirs else "video"
    if fmt == "video":
        if not videos:
            raise UserError(
                _one_level_too_high(root, dirs)
                or f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) inside the class folders"
            )
        for cls, name in videos:
            _check_no_whitespace(f"{cls}/{name}", root)
        return "video", classes, [Entry(cls, f"{cls}/{name}", None) for cls, name in videos], []
    if not dirs:
        raise UserError(f"{root}: no frame folders inside the class folders")
    entries, warnings = _frame_entries(root, dirs, image_tmpl, threads)
    if not entries:
        raise UserError(_one_level_too_high(root, dirs) or f"{root}: every frame folder is empty")
    return "frames", classes, entries, warnings


def _frame_entries(
    root: Path, dirs: list[tuple[str, str]], image_tmpl: str | None, threads: int
) -> tuple[list[Entry], list[str]]:
    """Entries of the frame folders with their frame counts (counted in threads), and warnings for
    empty folders (skipped) and frames not numbered 1..n."""
    pattern = template_regex(image_tmpl) if image_tmpl else None
    for cls, name in dirs:
        _check_no_whitespace(f"{cls}/{name}", root)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # map keeps the input order
        counts = list(pool.map(lambda d: count_frames(str(root / d[0] / d[1]), pattern), dirs))
    warnings: list[str] = []
    entries: list[Entry] = []
    not_numbered = 0
    for (cls, name), (n, contiguous) in zip(dirs, counts, strict=True):
        rel = f"{cls}/{name}"
        if n == 0:
            what = f"files matching '{image_tmpl}'" if image_tmpl else "image files"
            warnings.append(f"skipped {rel}: no {what}")
            continue
        if not contiguous:
            not_numbered += 1
            if not_numbered <= 5:
                warnings.append(f"{rel}: frames are not numbered 1..{n} as '{image_tmpl}'.format(i) will ask for")
        entries.append(Entry(cls, rel, n))
    if not_numbered > 5:
        warnings.append(f"... {not_numbered} folders in all have frames not numbered 1..n")
    return entries, warnings


def normalize_name(name: str) -> str:
    """Case-insensitive, `_` = space, runs of spaces collapsed: the fallback key for --labels."""
    return " ".join(name.replace("_", " ").lower().split())


def map_classes(folders: Sequence[str], class_names: Sequence[str], csv_path: str | Path) -> dict[str, int]:
    """Folder name -> class id by exact name, then by `normalize_name`; unknown folders raise."""
    exact = {name: i for i, name in enumerate(class_names)}
    loose: dict[str, int] = {}
    clashes: set[str] = set()
    for i, name in enumerate(class_names):
        key = normalize_name(name)
        if key in loose:
            clashes.add(key)
        loose[key] = i
    ids: dict[str, int] = {}
    unknown: list[str] = []
    for folder in folders:
        if folder in exact:
            ids[folder] = exact[folder]
            continue
        key = normalize_name(folder)
        if key in clashes:
            raise UserError(
                f"class folder '{folder}' matches several classes of {csv_path} once case and '_' "
                f"are ignored; rename it to the exact class name"
            )
        if key in loose:
            ids[folder] = loose[key]
        else:
            unknown.append(folder)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        shown = ", ".join(f"'{u}'" for u in unknown[:10]) + more
        raise UserError(f"{len(unknown)} class folder(s) are not classes of {csv_path}: {shown}")
    taken: dict[int, str] = {}
    for folder, i in ids.items():
        if i in taken:
            raise UserError(
                f"class folders '{taken[i]}' and '{folder}' both map to class {i} ('{class_names[i]}') of {csv_path}"
            )
        taken[i] = folder
    return ids


def format_lines(entries: Iterable[Entry], ids: dict[str, int]) -> list[str]:
    """List lines in the original's formats: `dir num_frames label` or `file label`."""
    lines = []
    for e in entries:
        label = ids[e.class_name]
        lines.append(f"{e.path} {label}" if e.num_frames is None else f"{e.path} {e.num_frames} {label}")
    return lines


def write_label_csv(names: Sequence[str], path: str | Path) -> None:
    """Header `id,name`, then `i,<name>` per class (csv quoting for names with commas)."""
    path = Path(path)
    make_folder(path.parent, "label CSV folder")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "name"])
    for i, name in enumerate(names):
        writer.writerow([i, name])
    atomic_write_text(path, text.getvalue())


def default_labels_out(out: str | Path) -> Path:
    """`lists/mine/train.txt` -> `lists/mine/train_labels.csv`; any other name is kept whole
    (`pp/x.a` -> `pp/x.a_labels.csv`), so two lists never share a label CSV."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix == ".txt" else out.name) + "_labels.csv")


def source_record(path: str | Path) -> Path:
    """The hidden file next to a derived output that names what it was written from."""
    path = Path(path)
    return path.with_name(f".{path.name}.source")


def claim_derived(path: str | Path, source: str | Path, flag: str) -> None:
    """Refuse to replace `path`, an output whose name was derived from `source`, when it exists
    and was not written from `source` (by another source, or by hand: no record); a rerun from
    the same source may replace it. `flag` names the option that chooses another name."""
    path = Path(path)
    if not path.exists():
        return
    want = str(Path(source).resolve())
    try:
        recorded = source_record(path).read_text().strip()
    except OSError:
        recorded = ""
    if recorded != want:
        was = f"was written from {recorded}" if recorded else "was not written by this tool"
        raise UserError(f"{path} exists and {was}, not from {source}: name another file with {flag}, or remove it")


def record_source(path: str | Path, source: str | Path) -> None:
    """Note next to `path` that it was written from `source` (see `claim_derived`)."""
    atomic_write_text(source_record(path), str(Path(source).resolve()) + "\n")


@dataclass(frozen=True)
class TreeScan:
    """How a dataset tree is scanned: its format (`auto`, `frames` or `video`), the frame file
    names (None: any image file), and the threads that list the frame folders."""

    fmt: str = "auto"
    image_tmpl: str | None = None
    threads: int = 8


def make_list(
    root: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    scan: TreeScan = TreeScan(),
    labels_out: str | Path | None = None,
    space_names: bool = False,
    class_names: Mapping[str, str] | None = None,
    source: str | Path | None = None,
) -> dict:
    """Scan, map classes, write the list (and the label CSV without `labels`); returns a summary.

    `class_names`: the class name of a folder where it is not the folder's name (datasets.preprocess
    writes `air drumming/` as `air_drumming/`). A label CSV named after the list (no `labels_out`)
    is refused if it exists and was written for another list (or, with `source`, from another
    source folder)."""
    found_fmt, classes, entries, warnings = scan_tree(root, scan.fmt, scan.image_tmpl, scan.threads)
    used = {e.class_name for e in entries}
    empty = [c for c in classes if c not in used]
    if empty:
        warnings.append(f"{len(empty)} class folder(s) hold no videos: " + ", ".join(empty[:10]))
    written_csv = None
    if labels is not None:
        csv_names = read_label_csv(labels)
        ids = map_classes(classes, csv_names, labels)
        missing = len(csv_names) - len(set(ids.values()))
        if missing:
            warnings.append(f"{missing} of the {len(csv_names)} classes of {labels} have no videos under {root}")
    else:
        real = [(class_names or {}).get(c, c) for c in classes]
        names = [c.replace("_", " ") if space_names else c for c in real]
        ids = {c: i for i, c in enumerate(classes)}
        written_csv = Path(labels_out) if labels_out else default_labels_out(out)
    derived_from = source if source is not None else out
    if written_csv is not None and not labels_out:
        claim_derived(written_csv, derived_from, "--labels-out")
    out = Path(out)
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"list folder {out.parent}: cannot create the folder: {out.parent} is a file, not a folder")
    make_folder(out.parent, "list folder")
    atomic_write_text(out, "\n".join(format_lines(entries, ids)) + "\n")
    if written_csv is not None:
        write_label_csv(names, written_csv)
        if not labels_out:
            record_source(written_csv, derived_from)
    return {
        "format": found_fmt,
        "videos": len(entries),
        "classes": len(classes),
        "list": str(out),
        "labels_csv": str(written_csv) if written_csv else None,
        "warnings": warnings,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli_parser(
        "python -m datasets.make_list", "Write an annotation list from ROOT/<class>/<frame folder or video file>."
    )
    parser.add_argument("root", help="data root holding one folder per class")
    parser.add_argument("--out", required=True, help="list file to write")
    parser.add_argument("--labels", help="existing label CSV (id,name): map class folders to its ids")
    parser.add_argument(
        "--labels-out",
        help="where to write the label CSV when --labels is not given (default: <out stem>_labels.csv next to --out)",
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=("auto", "frames", "video"),
        help="frames = sub-folders of frames, video = video files (default: detect)",
    )
    parser.add_argument(
        "--image-tmpl",
        help="frame file template, e.g. 'img_{:05d}.jpg': count only matching "
        "files and check they are numbered 1..n (default: count every image file)",
    )
    parser.add_argument(
        "--space-names",
        action="store_true",
        help="in a written label CSV, turn '_' in folder names into spaces (prompt text)",
    )
    parser.add_argument("--threads", type=int, default=8, help="threads counting frames (network file systems)")
    args = parser.parse_args(argv)
    summary = make_list(
        args.root,
        args.out,
        args.labels,
        TreeScan(args.format, args.image_tmpl, args.threads),
        args.labels_out,
        args.space_names,
    )
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {summary['list']}: {summary['videos']} {summary['format']} entries, {summary['classes']} classes")
    if summary["labels_csv"]:
        print(f"wrote {summary['labels_csv']}: class names in sorted folder order")


if __name__ == "__main__":
    run_cli(main)
