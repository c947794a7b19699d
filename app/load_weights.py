"""From any weights file to a model ready to evaluate: the one path from checkpoint to model.

Accepted files (all read with `torch.load(weights_only=True)` by `utils.checkpoint`):
* ours (`train.py`): weights, the resolved config, the class names and their embeddings;
* a converted original (`python -m modules.convert`), the original Text4Vis layout
  (`model_state_dict` with `visual.*`, `fusion_model.*`, `logit_scale`) or a bare state dict:
  weights only, so a config is needed (`--config`);
* a run folder: its `model_best.pt` (else `last_model.pt`);
* the exports of `python -m app.export`: `pt` (the first kind, without training state), and the
  TorchScript / ONNX graphs (`app.exported`), which carry their config, class names and class
  embeddings; they run as `app.exported.ExportedModel`, which scores only the classes they hold
  (by name: a reordered or partial label CSV is fine), having no text encoder.

Class embeddings for the requested class names:
1. rows of the checkpoint's own class embeddings, picked by name, when every requested name is
   one of the classes it was trained with (a reordered or partial label CSV is therefore scored
   correctly, never relabelled by row);
2. otherwise text embeddings of the new names from the CLIP text encoder (zero-shot), which needs
   `network.classifier: text`, a frozen classifier and pretrained text weights; any other model
   refuses new names with a UserError saying why (a bare state dict that records no names and has
   as many rows as names given takes its rows in order, with a warning);
3. a checkpoint without class embeddings (the original's) gets them as its config says.
In case 1 no file but the checkpoint is read (the config's `network.pretrained` is not loaded).
A checkpoint that holds a text tower (`text.*`: the contrastive baseline, the original's
train_nce.py or ActionCLIP) is built with it whatever the config says, and new names (case 2/3) are
embedded by *its* trained tower, so again no other file is read.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.exported import ExportedModel, decode_array, read_export, sniff_export
from datasets.data_builder import read_class_names
from datasets.transforms import normalize
from modules.convert import CLASS_KEY, extract_state_dict, load_weights
from modules.model_builder import build_model, text_weights_are_random
from modules.video_model import VideoCLIP
from utils.checkpoint import BEST, LAST, load_checkpoint, unwrap
from utils.config import Config, from_dict, load_config, replace
from utils.errors import UserError

_log = logging.getLogger("Text4Vis")
# `data` keys of a stored config that name what is read: never taken from a weights file
DATA_SOURCES = ("train_list", "val_list", "train_root", "val_root", "train_shards", "val_shards")


@dataclass
class WeightsFile:
    """A weights file read once: its path, its content and the layout it was found in."""

    path: Path
    content: Any
    state: dict[str, torch.Tensor]
    layout: str
    kind: str = "checkpoint"  # or "torchscript" / "onnx" (then content is the export's metadata)
    handle: Any = None  # the export's ScriptModule or onnxruntime session

    def stored_config(self, opts: Sequence[str] = ()) -> Config | None:
        """The config saved in our checkpoints (with `opts` applied), else None. Its data sources
        (`DATA_SOURCES`) are left unset: a weights file is data and never chooses what is read or
        opened (a shard index URL may be a `pipe:` command); the user's `opts` or `--config` name them."""
        raw = self.content.get("config") if isinstance(self.content, dict) else None
        if not raw:
            return None
        raw = copy.deepcopy(raw)
        if isinstance(raw.get("data"), dict):
            for key in DATA_SOURCES:
                raw["data"].pop(key, None)
        return from_dict(raw, f"{self.path} (stored config)", opts)

    def config(self, config_path: str | None, opts: Sequence[str] = ()) -> Config:
        """`--config` when given, else the stored config; a UserError when neither exists."""
        if config_path:
            return load_config(config_path, opts)
        cfg = self.stored_config(opts)
        if cfg is None:
            raise UserError(
                f"{self.path} holds no config ({self.layout} layout): pass --config with the "
                f"network settings it was trained with"
            )
        return cfg

    def class_names(self) -> list[str] | None:
        """Names of the stored class-embedding rows: saved with the weights, or (checkpoints written
        before names were saved) the stored config's label CSV when it still has as many rows."""
        if self.kind != "checkpoint":
            return [str(n) for n in self.content["class_names"]]
        rows = self.state.get(CLASS_KEY)
        if rows is None:
            return None
        names = self.content.get("class_names") if isinstance(self.content, dict) else None
        if isinstance(names, list) and len(names) == rows.shape[0]:
            return [str(n) for n in names]
        stored = self.stored_config()
        if stored is not None and stored.data.label_list and Path(stored.data.label_list).is_file():
            try:
                names = read_class_names(stored.data)
            except UserError:
                return None
            if len(names) == rows.shape[0]:
                return names
        return None


@dataclass
class LoadedModel:
    """What `load_model` returns: the model (eval mode), the config it was built from, the class
    names of its rows, and the file they came from."""

    model: VideoCLIP | ExportedModel
    cfg: Config
    class_names: list[str]
    weights: WeightsFile


def resolve_weights_path(weights: str | Path) -> Path:
    """A weights file, or a run folder's `model_best.pt` (else its `last_model.pt`)."""
    path = Path(weights)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise UserError(f"--weights {path} is a folder without {BEST} or {LAST}")
    return path


def open_weights(weights: str | Path) -> WeightsFile:
    """Read a weights file (or a run folder's best checkpoint) once, safely."""
    path = resolve_weights_path(weights)
    kind = sniff_export(path)
    if kind is not None:
        meta, handle = read_export(path, kind)
        return WeightsFile(path, meta, {}, f"{kind} export", kind, handle)
    content = load_checkpoint(path, what="weights file")
    state, layout = extract_state_dict(content, str(path))
    return WeightsFile(path, content, state, layout)


def _class_rows(wf: WeightsFile, cfg: Config, names: list[str]) -> torch.Tensor | None:
    """The checkpoint's class embeddings for `names` (case 1 of the module docstring), None when
    they must be computed (cases 2 and 3); a UserError when they cannot be."""
    stored = wf.state.get(CLASS_KEY)
    if stored is None:
        return None
    trained = wf.class_names()
    if trained is not None and set(names) <= set(trained):
        index = {n: i for i, n in enumerate(trained)}
        return stored[[index[n] for n in names]].float()
    if _text_tower_width(wf) is not None:
        return None  # new names through the checkpoint's own text tower
    net = cfg.network
    why = None
    if net.classifier != "text":
        why = f"its classifier is `{net.classifier}`, not text embeddings of class names"
    elif not net.fix_text:
        why = "its classifier rows were trained (network.fix_text: False)"
    elif text_weights_are_random(net):
        why = "its text encoder has random weights (network.pretrained: none or init: False)"
    if why is None:
        return None  # case 2: zero-shot on new names through the text encoder
    if trained is None and stored.shape[0] == len(names):
        _log.warning(
            "%s does not record the class names of its %d classifier rows; they are taken in the "
            "order of the label CSV (%s)",
            wf.path,
            stored.shape[0],
            why,
        )
        return stored.float()
    unknown = [n for n in names if trained is None or n not in trained]
    known = (
        f"its {stored.shape[0]} training classes"
        if trained is not None
        else f"{stored.shape[0]} rows whose class names it does not record"
    )
    raise UserError(
        f"{wf.path} cannot score the class names given ({', '.join(unknown[:3])}"
        f"{', ...' if len(unknown) > 3 else ''}): it holds class embeddings for {known}, and {why}, "
        f"so new names would get meaningless rows. Use the label CSV it was trained with "
        f"(reordered or a subset is fine)."
    )


def _csv_names(cfg: Config, rows: int) -> list[str] | None:
    """The config's label CSV names when it is readable and has `rows` classes."""
    try:
        names = read_class_names(cfg.data)
    except UserError:
        return None
    return names if len(names) == rows else None


def load_model(
    weights: str | Path | WeightsFile,
    *,
    cfg: Config | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    opts: Sequence[str] = (),
    trusted_pickles: Sequence[str] = (),
) -> LoadedModel:
    """The model of `weights` in eval mode on `device`, scoring `class_names`.

    cfg: the config to build from (None: the checkpoint's stored config with `opts` applied).
    class_names: the classes to score; see the module docstring for where their embeddings come
    from. None: the classes the checkpoint holds, as they are (for tools that need only the video
    side), or the config's label CSV for a checkpoint without class embeddings. Weights that do not
    fit the config raise a UserError listing the differing keys. `trusted_pickles`: the user's
    --trust_pickle files, for CLIP weights that need full unpickling (case 2 and 3 only).
    """
    wf = weights if isinstance(weights, WeightsFile) else open_weights(weights)
    cfg = cfg if cfg is not None else wf.config(None, opts)
    if wf.kind != "checkpoint":
        return _load_export(wf, cfg, class_names, device)
    stored = wf.state.get(CLASS_KEY)
    if class_names is None and stored is not None:
        names = wf.class_names() or _csv_names(cfg, stored.shape[0]) or [f"class {i}" for i in range(stored.shape[0])]
        rows: torch.Tensor | None = stored.float()
    else:
        names = list(class_names) if class_names is not None else read_class_names(cfg.data)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"the class names given repeat {', '.join(repeated[:3])}: each class needs one name")
        rows = _class_rows(wf, cfg, names)
    width = _text_tower_width(wf)
    embed_by_tower = width is not None and rows is None
    cfg = replace(cfg, **{"network.text_tower": width is not None})  # built as the checkpoint holds it
    if width is not None and rows is None:
        rows = torch.zeros(len(names), width)
    model = build_model(cfg, names, device="cpu", class_embeddings=rows, trusted_pickles=trusted_pickles)
    load_weights(model, wf.content, class_embeddings=False, source=str(wf.path))
    if embed_by_tower:
        model.refresh_class_embeddings()  # the names through the checkpoint's own text tower
    return LoadedModel(model.to(device).eval(), cfg, names, wf)


def _load_export(
    wf: WeightsFile, cfg: Config, class_names: Sequence[str] | None, device: str | torch.device
) -> LoadedModel:
    """An export as a model: the classes it holds, picked by name; the config must match its input."""
    meta = wf.content
    for key, want in (("num_segments", meta["num_frames"]), ("input_size", meta["input_size"])):
        if int(getattr(cfg.data, key)) != int(want):
            raise UserError(
                f"{wf.path} takes {meta['num_frames']} frames of {meta['input_size']} px, but the "
                f"config sets data.{key}={getattr(cfg.data, key)}: leave it as the export's"
            )
    trained = [str(n) for n in meta["class_names"]]
    rows = decode_array(meta["class_embeddings"])
    names = list(class_names) if class_names is not None else trained
    unknown = [n for n in names if n not in trained]
    if unknown:
        raise UserError(
            f"{wf.path} cannot score the class names given ({', '.join(unknown[:3])}"
            f"{', ...' if len(unknown) > 3 else ''}): an export holds the class embeddings of its "
            f"{len(trained)} classes and no text encoder. Use its class names (reordered or a subset "
            f"is fine), or the checkpoint it was exported from."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"the class names given repeat {', '.join(repeated[:3])}: each class needs one name")
    index = {n: i for i, n in enumerate(trained)}
    model = ExportedModel(wf.kind, wf.handle, meta, rows[[index[n] for n in names]])
    return LoadedModel(model.to(device).eval(), cfg, names, wf)


def input_normalize(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns the loader's uint8 frames into the model's input: CLIP normalisation for a
    VideoCLIP, nothing for an exported model (it takes uint8 frames and normalises inside)."""
    if getattr(unwrap(model), "takes_uint8", False):
        return _identity
    return normalize


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _text_tower_width(wf: WeightsFile) -> int | None:
    """D of the text tower the checkpoint holds (`text.text_projection` (width, D)), else None."""
    proj = wf.state.get("text.text_projection")
    return None if proj is None else int(proj.shape[-1])
