"""Build the video model from a config: the one place that reads `cfg.network`.

`build_model(cfg, class_names)` creates CLIP (`clip.create_clip`), computes the class embeddings
once (text encoder, or the random / orthogonal / lda / file variants), builds the temporal head,
and keeps only the visual encoder: the text tower is dropped before the model is returned, so it
is neither trained nor saved. `build_model_from_checkpoint` rebuilds a model saved by our
training from the config stored in the checkpoint.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence

import torch

import clip
from clip.weights import is_random
from modules import classifier as cls
from modules.heads import build_head
from modules.video_model import VideoCLIP
from utils.errors import UserError

log = logging.getLogger(__name__)

RANDOM_TEXT_WEIGHTS = "none"


def _text_weights_random(net) -> bool:
    """True when the text tower holds random weights. They are seeded, but their values depend on
    the torch version, so a cache could outlive them: such embeddings are recomputed every time."""
    return is_random(net.pretrained) or not net.init


def class_embeddings_for(net, clip_model: torch.nn.Module, class_names: Sequence[str], seed: int) -> torch.Tensor:
    """(C, D) class embeddings as `network.classifier` says (CPU, fp32, un-normalised)."""
    d = clip.embed_dim(clip_model)
    c = len(class_names)
    kind = net.classifier
    if kind == "text":
        templates = cls.resolve_templates(net.templates)
        cache_dir = net.text_cache or None
        key = None
        if cache_dir and not _text_weights_random(net):
            key = cls.make_cache_key(str(net.arch), clip.weights_id(net.arch, net.pretrained, init=net.init), templates, class_names)
        return cls.text_class_embeddings(clip_model, clip.get_tokenizer(net.arch), class_names, templates,
                                         cache_dir if key else None, key)
    if kind in ("random", "orthogonal"):
        n_emb = net.n_emb or d
        if n_emb != d:
            raise UserError(f"network.n_emb is {n_emb} but the video embedding width of {net.arch} is {d}; "
                            f"the cosine logits need them equal (leave n_emb empty)")
        make = cls.random_class_embeddings if kind == "random" else cls.orthogonal_class_embeddings
        return make(c, n_emb, seed=seed)
    if kind in ("lda", "file"):
        if not net.classifier_file:
            raise UserError(f"network.classifier '{kind}' needs network.classifier_file")
        return cls.load_class_embeddings(net.classifier_file, c, d)
    raise UserError(f"network.classifier: unknown value {kind!r}")


def build_model(cfg, class_names: Sequence[str], device: str | torch.device = "cpu") -> VideoCLIP:
    """VideoCLIP for `cfg` with one class-embedding row per name (row i = class i)."""
    net = cfg.network
    if not class_names:
        raise UserError(f"{cfg.data.label_list or 'label list'}: no class names")
    num_frames = int(cfg.data.num_segments)
    clip_model = clip.create_clip(
        net.arch, net.pretrained, init=net.init, num_frames=num_frames, tm=net.tm, joint_st=net.joint_st,
        drop_out=net.drop_out, emb_dropout=net.emb_dropout, grad_checkpointing=net.grad_checkpointing)
    # on a GPU the text tower encodes the classes there (seconds instead of minutes on a CPU)
    clip_model = clip_model.to(device)
    emb = class_embeddings_for(net, clip_model, list(class_names), int(cfg.seed))
    d = clip.embed_dim(clip_model)
    head = build_head(net.sim_header, d, num_frames, heads=max(1, clip.text_width(clip_model) // 64))
    model = VideoCLIP(clip_model.visual, head, emb, fix_text=net.fix_text,
                      logit_scale=clip_model.logit_scale.detach().float().reshape(()),
                      joint_st=net.joint_st)
    del clip_model  # the text tower goes with it: only `visual` is referenced by the model
    if net.fix_video:
        model.visual.requires_grad_(False)
    if net.joint_st:
        # the head is bypassed but kept, so checkpoints keep the original's keys; frozen, so that
        # neither the optimiser nor DDP waits for gradients it will never get
        model.fusion_model.requires_grad_(False)
    return model.to(device)


def build_model_from_checkpoint(path: str | Path, class_names: Sequence[str] | None = None,
                                device: str | torch.device = "cpu", opts: Sequence[str] | None = None,
                                cfg=None) -> tuple[VideoCLIP, object]:
    """Rebuild a model saved by our training: (model, cfg). The config stored in the checkpoint is
    used unless `cfg` is given; `opts` override it. With `class_names=None` the checkpoint's own
    class embeddings are used (no text encoder needed); with names, they are computed afresh
    (this needs the CLIP text weights named by `network.pretrained`)."""
    from modules.convert import load_weights, read_checkpoint
    from utils.config import resolve, to_dotmap

    path = Path(path)
    ckpt = read_checkpoint(path)
    if cfg is None:
        stored = ckpt.get("config") if isinstance(ckpt, dict) else None
        if not stored:
            raise UserError(f"{path}: holds no config (an original-layout or converted checkpoint); "
                            f"pass --config with the matching network settings")
        cfg = to_dotmap(resolve(stored, f"{path} (stored config)", opts))
    cfg = copy.deepcopy(cfg)
    if class_names is None:
        state = ckpt.get("model", {}) if isinstance(ckpt, dict) else {}
        stored_emb = state.get("class_embeddings") if isinstance(state, dict) else None
        if not isinstance(stored_emb, torch.Tensor):
            raise UserError(f"{path}: holds no class embeddings; give the class names (label CSV)")
        cfg.network.classifier = "random"  # placeholder of the right shape, overwritten below
        cfg.network.classifier_file = None
        cfg.network.n_emb = None
        cfg.network.pretrained = RANDOM_TEXT_WEIGHTS  # all weights come from the checkpoint
        model = build_model(cfg, [str(i) for i in range(stored_emb.shape[0])], device="cpu")
        load_weights(model, ckpt, strict=True, class_embeddings=True, source=str(path))
    else:
        model = build_model(cfg, class_names, device="cpu")
        load_weights(model, ckpt, strict=True, source=str(path))
    return model.to(device), cfg
