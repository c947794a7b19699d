"""`create_clip`: an open_clip CLIP model from the original's `network.*` options."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import open_clip
import torch

from utils.choices import TEMPORAL_MODULES
from utils.errors import UserError

from .archs import arch_file, is_resnet, model_config, resolve_arch
from .pretrained import effective_pretrained, load_weights, resolve_pretrained
from .temporal import TokenT1D, patch_resnet_tsm, patch_vit

INIT_SEED = 0


def _check_options(
    arch: str, resnet: bool, num_frames: int, tm: str | bool, joint_st: bool, drop_out: float, emb_dropout: float
) -> None:
    if tm not in TEMPORAL_MODULES:
        raise UserError(f"network.tm: '{tm}' is not one of False, tsm, tokenshift, tokent1d")
    if num_frames < 1:
        raise UserError(f"data.num_segments must be >= 1, got {num_frames}")
    if not 0.0 <= drop_out < 1.0 or not 0.0 <= emb_dropout < 1.0:
        raise UserError("network.drop_out and network.emb_dropout must be in [0, 1)")
    if joint_st and tm:
        raise UserError(
            f"network.joint_st cannot be combined with network.tm '{tm}' "
            "(joint attention mixes the frames of a video into one sequence)"
        )
    if resnet:
        if tm not in (False, "tsm") or joint_st:
            raise UserError(
                f"network.arch '{arch}' is a ResNet: it supports network.tm 'tsm' only "
                "(tokenshift, tokent1d and joint_st need a ViT)"
            )
        if drop_out > 0 or emb_dropout > 0:
            raise UserError(f"network.drop_out / network.emb_dropout apply to ViT archs only, not '{arch}'")


@dataclass(frozen=True)
class VisualTraining:
    """Training options of the visual tower: dropout in a ViT's blocks (`drop_out`) and on its
    patch embeddings (`emb_dropout`), and activation checkpointing (memory for compute)."""

    drop_out: float = 0.0
    emb_dropout: float = 0.0
    grad_checkpointing: bool = False


@dataclass(frozen=True)
class WeightFiles:
    """Where pretrained weights are found: the download cache (None: the default caches), and the
    weights files the user allowed, on the command line, to be fully unpickled."""

    cache_dir: str | None = None
    trusted_pickles: Collection[str | os.PathLike] = ()


def create_clip(
    arch: str,
    pretrained: str | None = "openai",
    *,
    init: bool = True,
    num_frames: int = 8,
    tm: str | bool = False,
    joint_st: bool = False,
    training: VisualTraining = VisualTraining(),
    files: WeightFiles = WeightFiles(),
) -> open_clip.CLIP:
    """Build an fp32 open_clip CLIP (QuickGELU) for `arch` with the requested temporal options.

    arch: a name of `clip.arch_names()`, or a CLIP weights file (as the original's `clip.load`):
    its architecture is read from the tensor shapes and, unless `pretrained` is `none` or another
    file, its weights are loaded.
    pretrained: an open_clip tag (`openai`), a local weights file, or `none` (random weights, drawn
    from a fixed seed so that the same arch always gives the same random model). `init=False` loads
    only the visual weights, as the original's `network.init: False`. The returned model is in
    train mode; call `.eval()` for inference. `files.trusted_pickles`: weights files the user
    allowed, on the command line, to be fully unpickled (see `clip.pretrained.read_state_dict`).
    """
    drop_out, emb_dropout = training.drop_out, training.emb_dropout
    cache_dir, trusted_pickles = files.cache_dir, files.trusted_pickles
    if tm in (None, "none", "None", "false", "False", 0):
        tm = False
    pretrained = effective_pretrained(arch, pretrained)
    model_name = resolve_arch(arch, trusted_pickles)
    cfg = model_config(model_name)
    resnet = is_resnet(cfg)
    if tm is True:  # the original: any truthy tm on a ResNet meant TSM
        if not resnet:
            raise UserError("network.tm: True is ambiguous for a ViT; use tsm, tokenshift or tokent1d")
        tm = "tsm"
    _check_options(arch, resnet, num_frames, tm, joint_st, drop_out, emb_dropout)
    weights = resolve_pretrained(model_name, arch, pretrained, cache_dir)  # fails fast, before building

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = open_clip.CLIP(**cfg)
        if resnet:
            if tm == "tsm":
                patch_resnet_tsm(model.visual, num_frames=num_frames)
        else:
            patch_vit(
                model.visual,
                num_frames=num_frames,
                tm=tm,
                joint_st=joint_st,
                drop_out=drop_out,
                emb_dropout=emb_dropout,
            )
    model.float()

    if weights is not None:
        load_weights(
            model,
            weights,
            arch=arch,
            visual_only=not init,
            new_param_names=new_param_names(model),
            trusted_pickles=trusted_pickles,
        )
    if training.grad_checkpointing:
        model.visual.set_grad_checkpointing(True)
    return model


def new_param_names(model: torch.nn.Module) -> set[str]:
    """State-dict keys that exist only because of our temporal options (not in OpenAI weights)."""
    names = {name for name, _ in model.named_parameters() if name.endswith("time_embedding")}
    for prefix, module in model.named_modules():
        if isinstance(module, TokenT1D):
            names |= {f"{prefix}.{n}" for n, _ in module.named_parameters()}
    return names


class _StrictTokenizer:
    """open_clip's tokenizer, but a text longer than the context is an error (as the original's
    `clip.tokenize`) instead of being silently truncated."""

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: str | list[str]) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            n = len(self.tokenizer.encode(text)) + 2
            if n > self.context_length:
                raise UserError(
                    f"text '{text}' has {n} tokens, more than the context length "
                    f"{self.context_length}; shorten the class name or template"
                )
        return self.tokenizer(texts)


def get_tokenizer(arch: str) -> Callable[[list[str]], torch.LongTensor]:
    """Tokenizer for `arch`: list of strings -> LongTensor (N, 77), CLIP BPE with SOT/EOT."""
    # every arch uses the same BPE and 77-token context; a weights file need not be read for it
    model_name = resolve_arch("ViT-B/32" if arch_file(arch) else arch)
    tok = open_clip.get_tokenizer(model_name)
    return _StrictTokenizer(tok, int(getattr(tok, "context_length", 77)))


def embed_dim(model: open_clip.CLIP) -> int:
    """D, the joint embedding width (columns of `text_projection`)."""
    if getattr(model, "text_projection", None) is not None:
        return int(model.text_projection.shape[1])
    return int(model.visual.output_dim)


def text_width(model: open_clip.CLIP) -> int:
    """Width of the text transformer (the fusion head uses text_width / 64 heads)."""
    return int(model.ln_final.weight.shape[0])
