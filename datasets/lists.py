"""Annotation lists and label CSVs in the original's formats (docs/data.md#annotation-lists-and-label-csv).

Two list formats, detected once per file from its first non-blank line:
- frames: `relative_dir num_frames label` (three fields);
- video:  `file.mp4 label` (two fields).
Every later line must have the same number of fields; a line that does not, a label that is not
a non-negative integer, or a label outside the class CSV's range raises `UserError` with
`file:line` and the offending text, so a broken list fails at start-up and not hours into a run.
Paths are kept verbatim (the ActivityNet zero-shot list has `dir//video` paths).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from utils.errors import UserError

_log = logging.getLogger("Text4Vis")

ListFormat = Literal["frames", "video"]


@dataclass(frozen=True)
class VideoRecord:
    """One list line: `path` relative to the data root, `num_frames` (None for video lists),
    `label`, and the 1-based `line` it came from (for error messages)."""

    path: str
    num_frames: int | None
    label: int
    line: int


def _open_text(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"list file not found: {path}")
    try:
        # utf-8-sig drops a BOM; splitlines() handles CRLF.
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err})") from None


def read_label_csv(path: str | Path) -> list[str]:
    """Class names of a CSV with header `id,name` whose row i is `i,<name>` (i = 0..C-1 in order).

    Names are returned verbatim (they go into the prompt as they are). Blank lines are ignored,
    as pandas did in the original; anything else that deviates raises `UserError` at file:line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label CSV not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err})") from None
    rows = list(csv.reader(text.splitlines()))
    names: list[str] = []
    first_line: dict[str, int] = {}
    header_seen = False
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        shown = ",".join(row)
        if not header_seen:
            if [c.strip() for c in row] != ["id", "name"]:
                raise UserError(f"{path}:{lineno}: the header must be 'id,name', got '{shown}'")
            header_seen = True
            continue
        if len(row) != 2:
            raise UserError(f"{path}:{lineno}: expected two columns 'id,name', got {len(row)}: '{shown}'")
        try:
            idx = int(row[0])
        except ValueError:
            raise UserError(f"{path}:{lineno}: id '{row[0]}' is not an integer") from None
        if idx != len(names):
            raise UserError(f"{path}:{lineno}: ids must be 0..C-1 in order; expected {len(names)}, got {idx}")
        name = row[1].strip()
        if not name:
            raise UserError(f"{path}:{lineno}: empty class name for id {idx}")
        if name in first_line:
            raise UserError(
                f"{path}:{lineno}: class name '{name}' repeats line {first_line[name]}; "
                f"two classes with one name cannot be told apart (their prompts are identical)"
            )
        first_line[name] = lineno
        names.append(name)
    if not header_seen:
        raise UserError(f"{path}: empty label CSV (expected a header 'id,name' and one row per class)")
    if not names:
        raise UserError(f"{path}: no classes after the header")
    return names


def detect_format(path: str | Path) -> ListFormat:
    """`frames` or `video`, from the first non-blank line of the list."""
    path = Path(path)
    for lineno, line in enumerate(_open_text(path), start=1):
        if line.strip():
            return _format_of(line, path, lineno)
    raise UserError(f"{path}: empty list file")


def _format_of(line: str, path: Path, lineno: int) -> ListFormat:
    fields = line.split()
    if len(fields) == 3:
        return "frames"
    if len(fields) == 2:
        return "video"
    raise UserError(
        f"{path}:{lineno}: expected 'dir num_frames label' or 'file label', got {len(fields)} fields: '{line.strip()}'"
    )


def read_list(path: str | Path, num_classes: int | None = None) -> list[VideoRecord]:
    """Parse an annotation list; with `num_classes`, also check every label is in [0, C).

    Stops at the first bad line; `scan_list` collects all of them instead."""
    records, _ = scan_list(path, num_classes, stop_at_first=True)
    return records


def scan_list(
    path: str | Path, num_classes: int | None = None, stop_at_first: bool = False
) -> tuple[list[VideoRecord], list[str]]:
    """(records of the good lines, one message per bad line). A missing or empty file raises."""
    path = Path(path)
    lines = _open_text(path)
    fmt: ListFormat | None = None
    records: list[VideoRecord] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            if fmt is None:
                fmt = _format_of(line, path, lineno)
            records.append(_parse_line(line, fmt, path, lineno, num_classes))
        except UserError as err:
            if stop_at_first:
                raise
            problems.append(str(err))
    if not records and not problems:
        raise UserError(f"{path}: empty list file")
    _warn_duplicates(records, path)
    return records, problems


def _warn_duplicates(records: list[VideoRecord], path: Path) -> None:
    """A video listed twice is accepted (each line is a sample, as the original read it) but said."""
    first: dict[str, int] = {}
    repeats = []
    for rec in records:
        if rec.path in first:
            repeats.append((rec.line, first[rec.path], rec.path))
        else:
            first[rec.path] = rec.line
    if repeats:
        line, earlier, video = repeats[0]
        _log.warning(
            "%s: %d line(s) repeat a video listed earlier (first: line %d repeats line %d, '%s'); "
            "each line counts as a separate sample",
            path,
            len(repeats),
            line,
            earlier,
            video,
        )


def _parse_line(line: str, fmt: ListFormat, path: Path, lineno: int, num_classes: int | None) -> VideoRecord:
    fields = line.split()
    expected = 3 if fmt == "frames" else 2
    if len(fields) != expected:
        layout = "'dir num_frames label'" if fmt == "frames" else "'file label'"
        raise UserError(
            f"{path}:{lineno}: this is a {fmt} list ({layout}, from its first line) but the line has "
            f"{len(fields)} fields: '{line.strip()}'"
        )
    num_frames = None
    if fmt == "frames":
        num_frames = _int_field(fields[1], "frame count", path, lineno, line)
    label = _int_field(fields[-1], "label", path, lineno, line)
    if num_classes is not None and label >= num_classes:
        raise UserError(
            f"{path}:{lineno}: label {label} is outside the {num_classes} classes of the "
            f"label CSV (0..{num_classes - 1}): '{line.strip()}'"
        )
    return VideoRecord(fields[0], num_frames, label, lineno)


def _int_field(text: str, what: str, path: Path, lineno: int, line: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{path}:{lineno}: {what} '{text}' is not an integer: '{line.strip()}'") from None
    if value < 0:
        raise UserError(f"{path}:{lineno}: {what} {value} is negative: '{line.strip()}'")
    return value
