"""Where the evaluation tools write, and the rule that keeps them from overwriting results
(docs/evaluation.md#where-results-go).

* A default folder is a short readable name plus 8 hex digits of SHA-256 over what makes the
  evaluation what it is: the tool, the resolved config (so every `--opts` override, list, template
  and split), the weights file (path, size, modification time) and the command's options that
  change the numbers (views, fusion, precision, protocol, window...). Two evaluations that differ
  in any of them get two folders; the same evaluation again writes the same files again.
* An explicit `--output` / `--out` that already holds results is refused (one line naming it)
  unless `--overwrite` is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from utils.config import Config, to_dict
from utils.errors import UserError

# Keys that change how fast an evaluation runs, never its numbers: left out of the fingerprint.
RUNTIME_KEYS = ("data.workers", "data.reuse_freed_memory", "data.batch_size", "logging")


def safe_name(text: str) -> str:
    """A file-name-safe form of `text` (runs of other characters become `_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def weights_name(path: str | Path, run_files: Iterable[str]) -> str:
    """The weights file's stem, with its run folder's name in front for a run's `run_files`
    (model_best.pt / last_model.pt): the checkpoints of different runs never share a name."""
    p = Path(path)
    return f"{p.parent.name}_{p.stem}" if p.name in tuple(run_files) else p.stem


def config_identity(cfg: Config) -> dict[str, Any]:
    """The resolved config as a plain dict, without the keys that only change speed."""
    plain = json.loads(json.dumps(to_dict(cfg), default=str))
    for key in RUNTIME_KEYS:
        *parents, last = key.split(".")
        node = plain
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return plain


def file_identity(path: str | Path) -> dict[str, Any]:
    """A file as the fingerprint sees it: absolute path, size and modification time (a checkpoint
    written again by further training is another file)."""
    p = Path(path)
    stat = p.stat()
    return {"path": str(p.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fingerprint(identity: Mapping[str, Any]) -> str:
    """8 hex digits of SHA-256 over `identity` (JSON, sorted keys)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_folder(base: str | Path, readable: str, identity: Mapping[str, Any]) -> Path:
    """`base/<readable>_<fingerprint>`."""
    return Path(base) / f"{safe_name(readable)}_{fingerprint(identity)}"


def refuse_existing(folder: str | Path, names: Iterable[str], flag: str, overwrite: bool) -> list[Path]:
    """The files of `names` that already exist in `folder`; a UserError naming them (and `flag`)
    unless `overwrite`."""
    found = [Path(folder) / n for n in names if (Path(folder) / n).exists()]
    if found and not overwrite:
        shown = ", ".join(p.name for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise UserError(
            f"{flag} {folder} already holds results ({shown}): pass --overwrite to replace them, or choose "
            f"another folder (leave {flag} out for a folder of its own per evaluation)"
        )
    return found


def refuse_existing_file(path: str | Path, flag: str, overwrite: bool) -> None:
    """A UserError when the output file `path` exists, unless `overwrite`."""
    if Path(path).exists() and not overwrite:
        raise UserError(f"{flag} {path} already exists: pass --overwrite to replace it, or choose another name")
