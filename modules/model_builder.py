"""Build the video model from a config: the one place that reads `cfg.network`.

`build_model(cfg, class_names)` creates CLIP (`clip.create_clip`), computes the class embeddings
once (text encoder, or the random / orthogonal / lda / file variants), builds the temporal head,
and keeps only the visual encoder: the text tower is dropped before the model is returned, so it
is neither trained nor saved. With `network.text_tower` (the contrastive baseline,
docs/training.md#contrastive-baseline-train_ncepy) the
tower is kept instead (`ContrastiveVideoCLIP`), frozen unless `network.fix_text` is False.
Given `class_embeddings` (rows of a checkpoint), it builds random CLIP weights that the caller
then overwrites, and loads no weights file at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import clip
from clip.pretrained import is_random
from modules import classifier as cls
from modules.heads import build_head
from modules.text_tower import TextTower, prompt_tokens
from modules.video_model import ContrastiveVideoCLIP, VideoCLIP
from utils.config import Config
from utils.config_schema import NetworkConfig
from utils.errors import UserError

RANDOM_WEIGHTS = "none"


def text_weights_are_random(net: NetworkConfig) -> bool:
    """True when the text tower holds random weights (`network.pretrained: none`, or `init: False`,
    which loads only the visual weights): its embeddings of class names carry no meaning."""
    return is_random(net.pretrained) or not net.init


def class_embeddings_for(
    net: NetworkConfig, clip_model: torch.nn.Module, class_names: Sequence[str], seed: int
) -> torch.Tensor:
    """(C, D) class embeddings as `network.classifier` says (CPU, fp32, un-normalised)."""
    d = clip.embed_dim(clip_model)
    c = len(class_names)
    kind = net.classifier
    if kind == "text":
        templates = cls.resolve_templates(net.templates)
        cache_dir = net.text_cache or None
        key = None
        # random text weights are seeded, but their values depend on the torch version, so a cache
        # could outlive them: such embeddings are recomputed every time
        if cache_dir and not text_weights_are_random(net):
            key = cls.make_cache_key(
                str(net.arch), clip.weights_id(net.arch, net.pretrained, init=net.init), templates, class_names
            )
        return cls.text_class_embeddings(
            clip_model, clip.get_tokenizer(net.arch), class_names, templates, cache_dir if key else None, key
        )
    if kind in ("random", "orthogonal"):
        n_emb = net.n_emb or d
        if n_emb != d:
            raise UserError(
                f"network.n_emb is {n_emb} but the video embedding width of {net.arch} is {d}; "
                f"the cosine logits need them equal (leave n_emb empty)"
            )
        make = cls.random_class_embeddings if kind == "random" else cls.orthogonal_class_embeddings
        return make(c, n_emb, seed=seed)
    if kind in ("lda", "file"):
        if not net.classifier_file:
            raise UserError(f"network.classifier '{kind}' needs network.classifier_file")
        return cls.load_class_embeddings(net.classifier_file, c, d)
    raise UserError(f"network.classifier: unknown value {kind!r}")


def check_input_size(visual: torch.nn.Module, input_size: int, arch: str) -> None:
    """CLIP's position embeddings (ViT) and attention pool (ResNet) fix the input resolution:
    another `data.input_size` would fail deep inside the first forward pass."""
    size = getattr(visual, "image_size", None)
    side = size[0] if isinstance(size, (tuple, list)) else size
    if side is not None and int(side) != input_size:
        raise UserError(
            f"data.input_size is {input_size} but network.arch '{arch}' takes {int(side)}x{int(side)} "
            f"frames (its position embedding is fixed): set data.input_size: {int(side)}"
        )


def build_model(
    cfg: Config,
    class_names: Sequence[str],
    device: str | torch.device = "cpu",
    *,
    class_embeddings: torch.Tensor | None = None,
    trusted_pickles: Sequence[str] = (),
) -> VideoCLIP:
    """VideoCLIP for `cfg` with one class-embedding row per name (row i = class i).

    `class_embeddings` (C, D): use these rows instead of computing them; CLIP is then built with
    random weights (no file is read), for a caller that loads every weight from a checkpoint.
    `trusted_pickles`: the user's --trust_pickle files (see `clip.pretrained`).
    """
    net = cfg.network
    if not class_names:
        raise UserError(f"{cfg.data.label_list or 'label list'}: no class names")
    if class_embeddings is not None and len(class_names) != class_embeddings.shape[0]:
        raise ValueError(f"{len(class_names)} class names for {class_embeddings.shape[0]} class embeddings")
    num_frames = int(cfg.data.num_segments)
    clip_model = clip.create_clip(
        net.arch,
        RANDOM_WEIGHTS if class_embeddings is not None else net.pretrained,
        init=net.init,
        num_frames=num_frames,
        tm=net.tm,
        joint_st=net.joint_st,
        training=clip.VisualTraining(net.drop_out, net.emb_dropout, net.grad_checkpointing),
        files=clip.WeightFiles(trusted_pickles=trusted_pickles),
    )
    check_input_size(clip_model.visual, int(cfg.data.input_size), str(net.arch))
    # on a GPU the text tower encodes the classes there (seconds instead of minutes on a CPU)
    clip_model = clip_model.to(device)
    if class_embeddings is None:
        class_embeddings = class_embeddings_for(net, clip_model, list(class_names), int(cfg.seed))
    d = clip.embed_dim(clip_model)
    head = build_head(net.sim_header, d, num_frames, heads=max(1, clip.text_width(clip_model) // 64))
    logit_scale = clip_model.logit_scale.detach().float().reshape(())
    model: VideoCLIP
    if net.text_tower:
        tokens = prompt_tokens(clip.get_tokenizer(net.arch), list(class_names), net.templates)
        model = ContrastiveVideoCLIP(
            clip_model.visual,
            head,
            TextTower(clip_model),
            tokens,
            class_embeddings,
            train_text=not net.fix_text,
            logit_scale=logit_scale,
            joint_st=net.joint_st,
        )
    else:
        model = VideoCLIP(
            clip_model.visual,
            head,
            class_embeddings,
            fix_text=net.fix_text,
            logit_scale=logit_scale,
            joint_st=net.joint_st,
        )
    del clip_model  # without text_tower the text tower goes with it: only `visual` is referenced
    if net.fix_video:
        model.visual.requires_grad_(False)
    if net.joint_st:
        # the head is bypassed but kept, so checkpoints keep the original's keys; frozen, so that
        # neither the optimiser nor DDP waits for gradients it will never get
        model.fusion_model.requires_grad_(False)
    return model.to(device)
