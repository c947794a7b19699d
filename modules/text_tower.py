"""CLIP's text tower as a module of its own, for the video models that keep it
(docs/training.md#contrastive-baseline-train_ncepy).

The parts are taken from an open_clip CLIP (token and position embeddings, the causal transformer,
`ln_final`, `text_projection`), so inside a video model their state-dict keys are the CLIP keys
under `text.` (`text.transformer.resblocks.0.attn.in_proj_weight`, ...), and the original's whole
CLIP checkpoints map onto them by a prefix (modules/convert.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from modules.classifier import encode_text, resolve_templates

CHUNK = 256  # prompts per text-tower call when encoding every class


class TextTower(nn.Module):
    """tokens (N, 77) -> text embeddings (N, D), exactly `open_clip.CLIP.encode_text`."""

    def __init__(self, clip_model: Any):
        super().__init__()
        if getattr(clip_model, "text_pool_type", "argmax") != "argmax":
            raise ValueError(
                f"text tower pooling {clip_model.text_pool_type!r}: only CLIP's EOT (argmax) pooling is supported"
            )
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.text_pool_type = "argmax"

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The full 77-token computation of open_clip (see `forward` for the fast one)."""
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast) + self.positional_embedding.to(cast)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # the EOT token
        proj = self.text_projection
        if isinstance(proj, nn.Linear):
            return proj(x)
        return x @ proj if proj is not None else x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings computed on the tokens up to the last EOT (the causal mask makes the
        padding irrelevant; `modules.classifier.encode_text`)."""
        return encode_text(self, tokens)


def prompt_tokens(
    tokenizer: Callable[[list[str]], torch.Tensor], class_names: Sequence[str], templates: str | Sequence[str] | None
) -> torch.Tensor:
    """(C, K, 77) tokens of every class name in each of the K templates (`network.templates`)."""
    per_template = [tokenizer([t.format(n) for n in class_names]) for t in resolve_templates(templates)]
    return torch.stack(per_template, dim=1)
