"""Reading TorchScript and ONNX exports (`python -m app.export`) as models the tools can run.

An export is the whole video classifier as one graph: uint8 frames (B, T, 3, S, S) in (after
test.py's resize and crop; CLIP normalisation is inside), `logits` (B, C) = 100 · cos and
`embeddings` (B, D) (un-normalised video embeddings) out. Both kinds carry the same JSON metadata
(`META_KEY`): the resolved config, the class names, the class embeddings (base64 float32), T, S
and the learned logit scale; TorchScript as the archive's extra file `extra/text4vis.json`, ONNX
as a `metadata_props` entry. So an export needs no other file, and `ExportedModel` gives the
evaluation engine what a `VideoCLIP` gives it (`encode_video`, `class_embeddings`, `logit_scale`).
Running an ONNX file needs onnxruntime (`pip install -e ".[export]"`).
"""

from __future__ import annotations

import base64
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.errors import UserError
from utils.similarity import cosine_logits

META_KEY = "text4vis.json"  # TorchScript extra file name and ONNX metadata_props key
FORMAT = "text4vis-export"
VERSION = 1
INPUT = "frames"
OUTPUTS = ("logits", "embeddings")
EXTRA_HINT = 'pip install -e ".[export]" (onnx, onnxruntime, onnxscript)'


def encode_array(x: torch.Tensor) -> dict[str, Any]:
    arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
    return {"dtype": "float32", "shape": list(arr.shape), "base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> torch.Tensor:
    arr = np.frombuffer(base64.b64decode(d["base64"]), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(arr.copy())


def sniff_export(path: Path) -> str | None:
    """`torchscript`, `onnx`, or None for anything else (a checkpoint, or a file the checkpoint
    reader will explain). A TorchScript archive that is not ours is a UserError."""
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return None
        if any(n.endswith(f"/extra/{META_KEY}") for n in names):
            return "torchscript"
        if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
            raise UserError(
                f"{path} is a TorchScript archive without text4vis metadata (an OpenAI CLIP archive? "
                f"those go in network.pretrained); evaluation tools read checkpoints and the exports "
                f"of python -m app.export"
            )
        return None
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "onnx"
    return None


def _check_meta(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: an export without text4vis metadata (write exports with python -m app.export)")
    if int(meta.get("version", 0)) > VERSION:
        raise UserError(f"{path}: export format version {meta['version']} is newer than this code reads ({VERSION})")
    return meta


def read_export(path: Path, kind: str) -> tuple[dict[str, Any], Any]:
    """(metadata, runnable handle: a ScriptModule on the CPU or an onnxruntime session)."""
    if kind == "torchscript":
        extra = {META_KEY: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 marks TorchScript deprecated
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a broken archive
            raise UserError(f"cannot read TorchScript export {path}: {str(err).strip().splitlines()[0]}") from None
        return _check_meta(json.loads(extra[META_KEY] or "null"), path), module.eval()
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{path} is an ONNX file: running it needs onnxruntime ({EXTRA_HINT})") from None
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot read ONNX file {path}: {str(err).strip().splitlines()[0][:300]}") from None
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    return _check_meta(json.loads(raw) if raw else None, path), session


class ExportedModel(nn.Module):
    """An export as the evaluation engine sees a `VideoCLIP`: `encode_video(uint8 frames)` (it
    normalises inside, hence `takes_uint8`), `class_embeddings` (C, D), `logit_scale`, `forward`."""

    takes_uint8 = True
    class_embeddings: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, kind: str, handle: Any, meta: dict[str, Any], class_embeddings: torch.Tensor):
        super().__init__()
        self.kind = kind
        self.meta = meta
        self.num_frames = int(meta["num_frames"])
        self.input_size = int(meta["input_size"])
        if kind == "torchscript":
            self.scripted = handle
            self.session = None
        else:
            self.session = handle
        self.register_buffer("class_embeddings", class_embeddings.float().clone())
        self.logit_scale = nn.Parameter(torch.tensor(float(meta["logit_scale"])), requires_grad=False)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at the export's scale, embeddings) of uint8 frames (B, T, 3, S, S)."""
        if frames.dtype != torch.uint8:
            raise ValueError(f"an exported model takes uint8 frames, got {frames.dtype}")
        if frames.ndim != 5 or tuple(frames.shape[1:]) != (self.num_frames, 3, self.input_size, self.input_size):
            raise ValueError(
                f"an exported model takes frames (B, {self.num_frames}, 3, {self.input_size}, "
                f"{self.input_size}), got {tuple(frames.shape)}"
            )
        if self.session is None:
            logits, emb = self.scripted(frames)
            return logits.float(), emb.float()
        logits_np, emb_np = self.session.run(list(OUTPUTS), {INPUT: frames.cpu().numpy()})
        return torch.from_numpy(logits_np).to(frames.device), torch.from_numpy(emb_np).to(frames.device)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, S, S) -> (B, D) un-normalised video embeddings."""
        return self.run(frames)[1]

    def logits_from_embeddings(
        self, video_emb: torch.Tensor, scale: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        return cosine_logits(video_emb, self.class_embeddings, self.logit_scale.exp() if scale is None else scale)

    def forward(self, frames: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
        return self.logits_from_embeddings(self.encode_video(frames), scale)
