"""Temporal fusion heads (`network.sim_header`): per-frame embeddings (B, T, D) -> one (B, D).

`None`/`meanP` and `Transf` are Text4Vis's heads; `Conv_1D`, `LSTM` and `Transf_cls`
are the ActionCLIP heads kept for comparison (docs/model.md#temporal-heads-networksim_header).
Parameter names of `Transf` follow the original's `fusion_model.*` layout so that its released
checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.choices import SIM_HEADERS
from utils.errors import UserError

CONTEXT_LENGTH = 77  # rows of the Transf frame-position table (CLIP's text context length)


class MeanHead(nn.Module):
    """Temporal mean, no parameters (`None` and `meanP`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI CLIP and of the original head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + MHA(LN(x)), then x + MLP(LN(x)); batch-first (B, T, D)."""

    def __init__(self, width: int, heads: int, ln_eps: float = 1e-12):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """A stack of `layers` residual attention blocks, no final LayerNorm (as the original)."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class TransfHead(nn.Module):
    """Text4Vis `Transf`: mean_t(Transformer(x + pos) + x) (docs/model.md#temporal-heads-networksim_header).

    The residual adds the input *without* the position embedding. Init: Linear/Embedding weights
    N(0, 0.02), Linear biases 0, LayerNorm 1/0; the attention's packed `in_proj_weight` is left at
    PyTorch's default (Xavier-uniform, zero bias) because the original's init never visits it.
    """

    def __init__(self, embed_dim: int, heads: int, layers: int = 6, context_length: int = CONTEXT_LENGTH):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(context_length, embed_dim)
        self.transformer = TemporalTransformer(embed_dim, layers, heads)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.frame_position_embeddings.num_embeddings:
            raise ValueError(
                f"Transf head supports at most {self.frame_position_embeddings.num_embeddings} frames, got {t}"
            )
        pos = self.frame_position_embeddings.weight[:t].to(x.dtype)
        y = self.transformer(x + pos.unsqueeze(0))
        return (y.to(x.dtype) + x).mean(dim=1)


class Conv1DHead(nn.Module):
    """ActionCLIP `Conv_1D`: x + depth-wise temporal conv (k=3, no bias), then mean over time.

    Shift-like init with q = D // 4: channels [0, q) take frame t-1, [q, D-q) keep frame t,
    [D-q, D) take frame t+1 (zero at the clip ends). The original reshaped with `view` instead of a
    transpose; here the convolution really runs along time (documented difference).
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.shift = nn.Conv1d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim, bias=False)
        q = embed_dim // 4
        with torch.no_grad():
            w = torch.zeros_like(self.shift.weight)  # (D, 1, 3): taps at t-1, t, t+1
            w[:q, 0, 0] = 1.0
            w[q : embed_dim - q, 0, 1] = 1.0
            w[embed_dim - q :, 0, 2] = 1.0
            self.shift.weight.copy_(w)

    def temporal(self, x: torch.Tensor) -> torch.Tensor:
        """The per-frame output before the mean: x + conv(x), (B, T, D)."""
        return x + self.shift(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(x).mean(dim=1)


class LSTMHead(nn.Module):
    """ActionCLIP `LSTM`: x + LSTM(x) (1 layer, unidirectional, hidden D), then mean over time."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.lstm_visual = nn.LSTM(
            input_size=embed_dim, hidden_size=embed_dim, num_layers=1, batch_first=True, bidirectional=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm_visual(x)
        return (x + y.to(x.dtype)).mean(dim=1)


@torch.no_grad()
def fold_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """ActionCLIP's `trunc_normal_`: N(0, 1) folded into (-2, 2) by `fmod`, times `std` (in place).
    Not torch's `trunc_normal_`, whose bounds are absolute (±2 at std 0.02 truncates nothing)."""
    return tensor.normal_().fmod_(2.0).mul_(std)


class TransfClsHead(nn.Module):
    """ActionCLIP `Transf_cls`: a learnable CLS token and position embedding in front of a 6-layer
    `nn.TransformerEncoder` (8 heads, PyTorch's default post-LN layer: FFN 2048, ReLU, dropout 0.1)
    with a final LayerNorm; the output is the CLS token. Init as ActionCLIP: positions, CLS and Linear
    weights (incl. the attention's out_proj) from `fold_normal_` (std 0.02 folded at ±2σ: std ≈ 0.0173,
    |w| < 0.04), zero Linear biases, LayerNorm 1/0; the packed QKV keeps PyTorch's Xavier default.
    """

    def __init__(self, embed_dim: int, num_frames: int, layers: int = 6, heads: int = 8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=embed_dim, nhead=heads, batch_first=True)
        self.transformer_enc = nn.TransformerEncoder(
            layer, num_layers=layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, embed_dim))
        fold_normal_(self.pos_embed, std=0.02)  # ActionCLIP's order
        fold_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            fold_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"Transf_cls head was built for {self.pos_embed.shape[1] - 1} frames, got {x.shape[1]}")
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)
        return self.transformer_enc(x)[:, 0]


def build_head(sim_header: str | None, embed_dim: int, num_frames: int, heads: int) -> nn.Module:
    """The fusion head named by `network.sim_header`; `heads` = CLIP text width // 64 (for `Transf`)."""
    name = "None" if sim_header is None else str(sim_header)
    if name in ("None", "meanP"):
        return MeanHead()
    if name == "Transf":
        if num_frames > CONTEXT_LENGTH:
            raise UserError(
                f"network.sim_header 'Transf' has {CONTEXT_LENGTH} frame positions; data.num_segments is {num_frames}"
            )
        return TransfHead(embed_dim, heads)
    if name == "Conv_1D":
        return Conv1DHead(embed_dim)
    if name == "LSTM":
        return LSTMHead(embed_dim)
    if name == "Transf_cls":
        return TransfClsHead(embed_dim, num_frames)
    raise UserError(f"network.sim_header: unknown head {sim_header!r}; choose one of {', '.join(SIM_HEADERS)}")


def transf_param_count(embed_dim: int, layers: int = 6, context_length: int = CONTEXT_LENGTH) -> int:
    """Parameters of the `Transf` head: 77·D + layers·(12·D² + 13·D)."""
    d = embed_dim
    return context_length * d + layers * (12 * d * d + 13 * d)
