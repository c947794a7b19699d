"""The class embeddings that replace the linear classifier: the (C, D) matrix the video embedding is compared with
(docs/model.md#class-embeddings-networkclassifier).

`text` (default): each class name is put into the prompt template(s), tokenised and encoded once by
the frozen CLIP text encoder (eval mode, no_grad, fp32). With one template the rows are the raw,
**un-normalised** text features (as the original); with several templates each template's
features are L2-normalised first and the rows are their mean (kept as is: the model normalises at
every use, so only the direction matters). Results are cached in a file whose name and content
carry a hash of (arch, weights id, templates, class list); a file whose stored key differs is
never reused.

IJCV variants: `random` (N(0, 1)), `orthogonal` (rows of a random orthogonal matrix), and a (C, D)
tensor loaded from a file (`lda`, `file`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError

DEFAULT_TEMPLATE = "a video of a person {}."

# The 28 Kinetics templates commented out in the original's modules/text_prompt.py (CLIP's
# Kinetics-700 prompt set: 4 prefixes x 7 forms), in the original's order: its list starts with
# 'a photo of a person {}.' and then 'a photo of {}.'; every other prefix starts with the bare form.
_PREFIXES = ("a photo of", "a video of", "a example of", "a demonstration of")
_FORMS = (
    "{p} {{}}.",
    "{p} a person {{}}.",
    "{p} a person using {{}}.",
    "{p} a person doing {{}}.",
    "{p} a person during {{}}.",
    "{p} a person performing {{}}.",
    "{p} a person practicing {{}}.",
)
_K28 = [f.format(p=p) for p in _PREFIXES for f in _FORMS]
_K28[0], _K28[1] = _K28[1], _K28[0]
KINETICS28: tuple[str, ...] = tuple(_K28)
NAMED_TEMPLATES: dict[str, tuple[str, ...]] = {"kinetics28": KINETICS28}


def resolve_templates(templates: str | Sequence[str] | None) -> list[str]:
    """`network.templates` -> list of templates: one string, a list, or a named set (`kinetics28`)."""
    if templates is None or templates == "":
        return [DEFAULT_TEMPLATE]
    if isinstance(templates, str):
        templates = list(NAMED_TEMPLATES.get(templates, (templates,)))
    out = [str(t) for t in templates]
    if not out:
        raise UserError("network.templates: the list of templates is empty")
    for t in out:
        if t.count("{}") != 1:
            raise UserError(
                f"network.templates: template {t!r} must contain exactly one '{{}}' "
                f"(or use a named set: {', '.join(NAMED_TEMPLATES)})"
            )
    return out


def make_cache_key(arch: str, weights_id: str, templates: Sequence[str], class_names: Sequence[str]) -> str:
    """Hex digest identifying text class embeddings: any change of its inputs changes the key."""
    payload = json.dumps(
        {"arch": arch, "weights": weights_id, "templates": list(templates), "classes": list(class_names)},
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, cache_key: str) -> Path:
    return Path(cache_dir) / f"text_feats_{cache_key[:16]}.pt"


def _read_cache(path: Path, cache_key: str, num_classes: int) -> torch.Tensor | None:
    try:
        blob = load_checkpoint(path, what="class-embedding cache")
    except UserError:  # unreadable or truncated: recompute and overwrite
        return None
    if not isinstance(blob, dict) or blob.get("key") != cache_key:
        return None
    emb = blob.get("embeddings")
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != num_classes:
        return None
    return emb.float()


def _is_causal(mask: torch.Tensor | None, length: int) -> bool:
    if mask is None or mask.shape[-2:] != (length, length):
        return False
    upper = torch.triu(torch.ones(length, length, dtype=torch.bool, device=mask.device), diagonal=1)
    return bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())


def encode_text(clip_model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`clip_model.encode_text(tokens)`, computed on the first L = (last EOT position + 1) tokens.

    CLIP's text transformer is causal and pools the EOT token, so the padding after it cannot
    change the result; prompts are ~15 of the 77 tokens, which makes encoding ~5x cheaper (the
    400 K400 classes on CPU). Falls back to `encode_text` for any other text tower.
    """
    m: Any = clip_model  # an open_clip CLIP (attributes checked below)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    if (
        getattr(m, "text_pool_type", None) != "argmax"
        or not all(hasattr(m, a) for a in needed)
        or not _is_causal(m.attn_mask, m.positional_embedding.shape[0])
    ):
        return m.encode_text(tokens)
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    cast = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens[:, :length]).to(cast) + m.positional_embedding[:length].to(cast)
    x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = getattr(m, "text_projection", None)
    if isinstance(proj, torch.nn.Linear):
        return proj(x)
    return x @ proj if proj is not None else x


@torch.no_grad()
def encode_class_names(
    clip_model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """(C, D) fp32 text features (see the module docstring for how several templates combine)."""
    was_training = clip_model.training
    clip_model.eval()
    try:
        per_template = []
        for template in templates:
            prompts = [template.format(name) for name in class_names]
            feats = []
            for i in range(0, len(prompts), batch_size):
                tokens = tokenizer(prompts[i : i + batch_size])
                device = next(clip_model.parameters()).device
                feats.append(encode_text(clip_model, tokens.to(device)).float().cpu())
            per_template.append(torch.cat(feats))
    finally:
        clip_model.train(was_training)
    if len(per_template) == 1:
        return per_template[0]
    return torch.stack([F.normalize(f, dim=-1) for f in per_template]).mean(0)


def text_class_embeddings(
    clip_model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    cache_key: str | None = None,
) -> torch.Tensor:
    """Text class embeddings (C, D), un-normalised, read from / written to the cache when both
    `cache_dir` and `cache_key` (see `make_cache_key`) are given."""
    if not class_names:
        raise UserError("no class names: the label CSV is empty")
    templates = resolve_templates(templates)
    path = cache_path(cache_dir, cache_key) if cache_dir and cache_key else None
    if path is not None and cache_key is not None and path.is_file():
        cached = _read_cache(path, cache_key, len(class_names))
        if cached is not None:
            return cached
    emb = encode_class_names(clip_model, tokenizer, class_names, templates)
    if path is not None:
        try:
            save_checkpoint(
                {"key": cache_key, "templates": list(templates), "classes": list(class_names), "embeddings": emb}, path
            )
        except OSError as err:  # a read-only or full disk costs a recomputation next time, nothing more
            warnings.warn(f"could not write the class-embedding cache {path}: {err}", stacklevel=2)
    return emb


def random_class_embeddings(num_classes: int, n_emb: int, seed: int = 0) -> torch.Tensor:
    """IJCV `random` classifier: (C, n_emb) with N(0, 1) entries, drawn from its own seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_classes, n_emb, generator=g)


def orthogonal_class_embeddings(num_classes: int, n_emb: int, seed: int = 0) -> torch.Tensor:
    """IJCV `orthogonal` classifier: the first C rows of Q from the QR decomposition of an
    n_emb x n_emb standard-normal matrix (orthonormal rows; needs C <= n_emb)."""
    if num_classes > n_emb:
        raise UserError(f"network.classifier 'orthogonal' needs at most n_emb={n_emb} classes, got {num_classes}")
    g = torch.Generator().manual_seed(int(seed))
    q, _ = torch.linalg.qr(torch.randn(n_emb, n_emb, generator=g, dtype=torch.float64))
    return q[:num_classes].float()


def load_class_embeddings(path: str | Path, num_classes: int, dim: int) -> torch.Tensor:
    """A (C, D) tensor saved with torch.save (a tensor, or a dict holding it under `embeddings`)."""
    obj = load_checkpoint(path, what="network.classifier_file")
    if isinstance(obj, dict):
        obj = obj.get("embeddings", obj.get("class_embeddings"))
    if not isinstance(obj, torch.Tensor):
        raise UserError(
            f"network.classifier_file: {path} holds no tensor (expected a (C, D) tensor or a "
            f"dict with key 'embeddings')"
        )
    if obj.ndim != 2 or obj.shape[0] != num_classes or obj.shape[1] != dim:
        raise UserError(
            f"network.classifier_file: {path} has shape {tuple(obj.shape)}; expected "
            f"({num_classes}, {dim}) = (classes in the label CSV, embedding width)"
        )
    return obj.float()
