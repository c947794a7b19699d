"""The resumable storage of `app.extract`: a parts folder holding a manifest (the run's settings)
and one atomically written `.npz` per finished chunk, merged in input order at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.media import as_numpy_ids
from utils.fileio import WriteError, atomic_write_text, make_folder, remove_temporaries

MANIFEST = "manifest.json"


def prepare_parts(out: Path, parts: Path, sig: dict[str, Any], overwrite: bool) -> str | None:
    """Rank 0: create (or check) the parts folder; returns an error message or None."""
    if overwrite:
        shutil.rmtree(parts, ignore_errors=True)
    elif out.exists() and not parts.exists():
        return f"--out {out} already exists: pass --overwrite to replace it, or choose another name"
    manifest = parts / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != sig:
            keys = sorted(k for k in set(sig) | set(old or {}) if (old or {}).get(k) != sig.get(k))
            return (
                f"{parts} holds parts of a run with other settings ({', '.join(keys)} differ): delete that "
                f"folder or pass --overwrite to start again"
            )
        remove_temporaries(parts)
        return None
    try:  # a read-only folder, a full disk, a file in the way: the message every rank raises
        make_folder(parts, "--out")
        atomic_write_text(manifest, json.dumps(sig, indent=2) + "\n")
    except WriteError as err:
        return str(err)
    return None


def chunk_path(parts: Path, c: int) -> Path:
    return parts / f"chunk-{c:06d}.npz"


def merge(parts: Path, chunks: int, ids: Sequence[str], extra: dict[str, Any]) -> dict[str, Any]:
    """The chunks in order as one set of arrays (rows of failed inputs left out)."""
    loaded = [dict(np.load(chunk_path(parts, c), allow_pickle=False)) for c in range(chunks)]
    index = np.concatenate([p["index"] for p in loaded]) if loaded else np.zeros(0, np.int64)
    if len(np.unique(index)) != len(index):
        raise RuntimeError("an input appears in two chunks")  # cannot happen: chunks are disjoint
    out: dict[str, Any] = {
        "ids": as_numpy_ids([ids[i] for i in index.tolist()]),
        "labels": np.concatenate([p["labels"] for p in loaded]),
    }
    for key in ("embeddings", "view_embeddings", "frame_embeddings"):
        rows = [p[key] for p in loaded if key in p and p[key].size]
        if key in loaded[0]:
            out[key] = np.concatenate(rows) if rows else np.zeros((0,), np.float32)
    failed = np.concatenate([p["failed_index"] for p in loaded])
    out["failed_ids"] = as_numpy_ids([ids[i] for i in failed.tolist()])
    out["failed_errors"] = as_numpy_ids([e for p in loaded for e in p["failed_errors"].tolist()])
    out.update(extra)
    return out
