"""Load weights into a VideoCLIP from our checkpoints or the original Text4Vis layout.

Accepted inputs (all read with `torch.load(weights_only=True)`):
* ours: `{'model': state_dict, 'config': ..., ...}` (utils/checkpoint.py);
* the original's: `{'epoch', 'model_state_dict': {'visual.*', 'fusion_model.*', 'logit_scale'},
  'optimizer_state_dict'}`, possibly with `module.` prefixes (saved from DDP);
* the original's train_nce.py and ActionCLIP: `{'model_state_dict': the whole CLIP (visual and
  text tower), 'fusion_model_state_dict': the head}`: CLIP's text keys become `text.*` (a
  `ContrastiveVideoCLIP`), the head's `fusion_model.*`;
* a bare state dict.
Our parameter names equal the original's (open_clip's visual encoder keeps OpenAI's names and the
`Transf` head keeps `fusion_model.*`), so the conversion mostly strips wrappers and prefixes.
Renamed: the original's TSM wrappers (`visual.transformer.resblocks.N.net.*`,
`visual.layerK.M.conv1.net.*` -> without `.net`), ActionCLIP's `Transf_cls` head
(`fusion_model.transformer.{transformer_enc,cls_token,pos_embed}` -> without `transformer.`);
dropped: the 77 x D `frame_position_embeddings` that ActionCLIP builds but never uses for its
`Conv_1D`, `LSTM` and `Transf_cls` heads. Class embeddings are absent from original checkpoints;
they come from the label CSV (or from the checkpoint's text tower).

    python -m modules.convert ORIGINAL.pt OUT.pt   # writes {'model': ..., 'epoch': ..., 'source': ...}
    python -m modules.convert ORIGINAL.pt OUT.pt --config CFG [--opts k=v ...]   # self-contained

Without `--config` the output holds weights only: predict.py / test.py then need `--config`. With
it, the output is self-contained (`utils.checkpoint.export_state`): the resolved config, the class
names of its label CSV and their class embeddings (computed as `network.classifier` says, e.g. with
the CLIP text encoder of `network.pretrained`), so predict.py and test.py need no other file.
"""

from __future__ import annotations

import argparse

from utils.cli import add_config_args, cli_parser, help_before_imports


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser("python -m modules.convert", "Convert an original Text4Vis checkpoint to our format.")
    parser.add_argument("original", help="checkpoint of the original code (model_state_dict layout)")
    parser.add_argument("out", help="output checkpoint ({'model': state_dict, ...})")
    add_config_args(
        parser,
        "config the checkpoint was trained with: embeds it, the class names of its label CSV "
        "and their embeddings, so that predict.py / test.py need no other file",
    )
    return parser


# --help answers here, before torch is imported (seconds); the imports below come after it on purpose:
# ruff: noqa: E402
help_before_imports(__name__, build_parser)

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datasets.lists import read_label_csv
from modules.model_builder import build_model
from utils.checkpoint import export_state, load_checkpoint, save_checkpoint, unwrap
from utils.config import load_config, to_dict
from utils.errors import UserError, run_cli

CLASS_KEY = "class_embeddings"
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 6  # keys listed per kind of mismatch
_TSM_WRAPPER = re.compile(r"^(visual\.(?:transformer\.resblocks\.\d+|layer\d+\.\d+\.conv1))\.net\.")
_ACTIONCLIP_CLS = re.compile(r"^fusion_model\.transformer\.(transformer_enc\.|cls_token$|pos_embed$)")
_UNUSED_POSITIONS = "fusion_model.frame_position_embeddings.weight"
_NON_TRANSF_HEADS = ("fusion_model.shift.", "fusion_model.lstm_visual.", "fusion_model.transformer_enc.")


@dataclass
class LoadReport:
    """What `load_weights` did; empty lists mean an exact match."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    class_embeddings_loaded: bool = False
    layout: str = "ours"


def _strip(key: str) -> str:
    """Drop wrapper prefixes: DDP's `module.` (leading or after a sub-module name, as when the head
    alone was wrapped) and torch.compile's `_orig_mod.`."""
    key = key.replace(".module.", ".").replace("._orig_mod.", ".")
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def _clip_key(key: str) -> str:
    """A key of the original's whole-CLIP `model_state_dict` -> ours (text tower under `text.`)."""
    return key if key.startswith("visual.") or key == "logit_scale" else f"text.{key}"


def _contrastive_state(ckpt: Mapping) -> Mapping[str, Any]:
    """train_nce.py / ActionCLIP: the whole CLIP plus the head saved on its own."""
    state = {_clip_key(_strip(str(k))): v for k, v in ckpt["model_state_dict"].items()}
    state.update({f"fusion_model.{_strip(str(k))}": v for k, v in ckpt["fusion_model_state_dict"].items()})
    return state


def _rename_layouts(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The original's TSM wrappers and ActionCLIP's head layouts -> our names (module docstring)."""
    notes = []
    out = {}
    for key, value in state.items():
        new = _TSM_WRAPPER.sub(r"\1.", key)
        new = _ACTIONCLIP_CLS.sub(r"fusion_model.\1", new)
        out[new] = value
        if new != key and key.startswith("visual."):
            notes.append("TSM .net. wrappers")
        elif new != key:
            notes.append("ActionCLIP Transf_cls")
    if _UNUSED_POSITIONS in out and any(k.startswith(_NON_TRANSF_HEADS) for k in out):
        del out[_UNUSED_POSITIONS]
        notes.append("unused ActionCLIP frame_position_embeddings dropped")
    return out, sorted(set(notes))


def extract_state_dict(ckpt: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with our key names, layout) from any accepted checkpoint object."""
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{source}: not a checkpoint (a {type(ckpt).__name__}, expected a dict)")
    if all(isinstance(ckpt.get(k), Mapping) for k in ("model_state_dict", "fusion_model_state_dict")):
        state, layout = _contrastive_state(ckpt), "original train_nce/ActionCLIP"
    elif "model" in ckpt and isinstance(ckpt["model"], Mapping):
        state, layout = ckpt["model"], "ours"
    elif "model_state_dict" in ckpt and isinstance(ckpt["model_state_dict"], Mapping):
        state, layout = ckpt["model_state_dict"], "original"
    elif "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        state, layout = ckpt["state_dict"], "state_dict"
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state, layout = ckpt, "state_dict"
    else:
        raise UserError(
            f"{source}: no model weights found (keys: {', '.join(sorted(map(str, ckpt))[:8])}); "
            f"expected 'model' (ours) or 'model_state_dict' (original Text4Vis)"
        )
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        name = _strip(str(k))
        if name in out:
            raise UserError(f"{source}: key '{name}' appears twice (with and without a 'module.' prefix)")
        out[name] = v
    if any(str(k).startswith("module.") for k in state):
        layout += ", module.-prefixed"
    out, notes = _rename_layouts(out)
    return out, ", ".join([layout, *notes])


def convert_original(ckpt: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The original's checkpoint -> our checkpoint format (model weights only, no config)."""
    state, layout = extract_state_dict(ckpt, source)
    out: dict[str, Any] = {"model": state, "source": f"{source} ({layout} layout)"}
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("epoch"), int):
        out["epoch"] = ckpt["epoch"]
    return out


def _listing(title: str, items: Sequence[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def load_weights(
    model: nn.Module,
    path_or_state: str | Path | Mapping,
    strict: bool = True,
    class_embeddings: bool | None = None,
    source: str | None = None,
) -> LoadReport:
    """Copy checkpoint weights into `model` (a VideoCLIP, possibly DDP-wrapped).

    `class_embeddings`: True = take them from the checkpoint (shapes must match), False = keep the
    model's (computed from the label CSV), None = take them only when the model's are trainable
    (`fix_text: False`) and the shapes match. Missing class embeddings are never an error.
    strict=True: any other missing/unexpected key or shape mismatch raises a UserError that lists
    them; strict=False loads what matches and returns the report.
    """
    model = unwrap(model)
    if isinstance(path_or_state, (str, Path)):
        source = source or str(path_or_state)
        ckpt = load_checkpoint(path_or_state)
    else:
        source = source or "checkpoint"
        ckpt = path_or_state
    state, layout = extract_state_dict(ckpt, source)
    own = model.state_dict()
    report = LoadReport(layout=layout)

    ckpt_emb = state.pop(CLASS_KEY, None)
    own_emb = own.get(CLASS_KEY)
    if ckpt_emb is not None and own_emb is not None:
        same = tuple(ckpt_emb.shape) == tuple(own_emb.shape)
        take = class_embeddings
        if take is None:
            take = same and isinstance(getattr(model, CLASS_KEY, None), nn.Parameter)
        if take and not same:
            raise UserError(
                f"{source}: its class embeddings have shape {tuple(ckpt_emb.shape)}, the model's "
                f"{tuple(own_emb.shape)} (another label list?)"
            )
        if take:
            state[CLASS_KEY] = ckpt_emb
            report.class_embeddings_loaded = True
    elif class_embeddings and ckpt_emb is None:
        raise UserError(f"{source}: holds no class embeddings")

    compare = {k: v for k, v in own.items() if k != CLASS_KEY or report.class_embeddings_loaded}
    report.missing = sorted(k for k in compare if k not in state)
    report.unexpected = sorted(k for k in state if k not in own)
    report.mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if strict and (report.missing or report.unexpected or report.mismatched):
        parts = [
            _listing(t, items)
            for t, items in (
                ("missing keys", report.missing),
                ("unexpected keys", report.unexpected),
                ("shape mismatches (checkpoint vs model)", report.mismatched),
            )
            if items
        ]
        raise UserError(
            f"{source} ({layout} layout) does not match the model built from the config "
            f"(network.arch, sim_header, tm, joint_st?): " + "; ".join(parts)
        )
    bad = {m.split(" ", 1)[0] for m in report.mismatched}
    loadable = {k: v for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(loadable, strict=False)
    return report


def self_contained(ckpt: Any, config: str, opts: Sequence[str], source: str) -> dict[str, Any]:
    """Our self-contained format from converted weights and a config (class embeddings computed)."""
    cfg = load_config(config, opts)
    if not cfg.data.label_list:
        raise UserError(f"{config}: data.label_list is not set; the class names are needed to embed them")
    names = read_label_csv(cfg.data.label_list)
    model = build_model(cfg, names)
    load_weights(model, ckpt, source=source)
    return export_state(
        model=model,
        config=to_dict(cfg),
        class_names=names,
        source=source,
        epoch=ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    ckpt = load_checkpoint(args.original)
    out = convert_original(ckpt, args.original)
    if args.config:
        full = self_contained(ckpt, args.config, args.opts, out["source"])
        save_checkpoint(full, args.out)
        print(
            f"wrote {args.out}: {len(full['model'])} tensors ({out['source']}) with the resolved config of "
            f"{args.config} and {len(full['class_names'])} class names and embeddings: predict.py / test.py "
            f"--weights {args.out} need no other file"
        )
        return
    save_checkpoint(out, args.out)
    n = len(out["model"])
    print(
        f"wrote {args.out}: {n} tensors ({out['source']}), weights only: give predict.py / test.py --config CFG "
        f"with it, or convert with --config CFG to embed the config and the class names"
    )


if __name__ == "__main__":
    run_cli(main)
