"""In-backbone temporal options for open_clip's vision towers (docs/clip.md#in-backbone-temporal-options).

Frames of one video are consecutive rows of the batch: the vision tower sees (B*T, ...) and the
helpers below view it as (B, T, ...). open_clip 3.3's transformers are batch-first, so token
tensors are (B*T, L, C) with the class token at index 0.

Everything here is applied to an already built open_clip model by swapping the class of existing
modules (`ResidualAttentionBlock` -> `TemporalResidualAttentionBlock`, ...). That keeps every
existing parameter name exactly as open_clip/OpenAI spell it, so released checkpoints load; only
genuinely new parameters get new names (`control_point.conv.weight` of `tokent1d` and
`time_embedding` of `joint_st`, spelled as in the original Text4Vis).
"""

from __future__ import annotations

import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn


def _frames_view(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, ...) -> (B, T, ...); a clear error if the batch is not whole videos."""
    if x.shape[0] % num_frames:
        raise ValueError(f"batch of {x.shape[0]} frames is not a multiple of num_frames={num_frames}")
    return x.view(x.shape[0] // num_frames, num_frames, *x.shape[1:])


def shift_channels(x: torch.Tensor, num_frames: int, fold: int, channel_dim: int) -> torch.Tensor:
    """Temporal shift of a (B*T, ...) tensor along `channel_dim` (counted on the (B*T, ...) shape).

    Channels [0, fold) take the value of the next frame (t+1), channels [fold, 2*fold) the value of
    the previous frame (t-1), the rest are unchanged; frames past either end of the clip are zeros.
    """
    if channel_dim < 0:
        channel_dim += x.dim()
    v = _frames_view(x, num_frames)
    cd = channel_dim + 1
    channels = v.shape[cd]
    fwd = v.narrow(cd, 0, fold)
    bwd = v.narrow(cd, fold, fold)
    rest = v.narrow(cd, 2 * fold, channels - 2 * fold)
    fwd = torch.cat([fwd[:, 1:], torch.zeros_like(fwd[:, :1])], dim=1)
    bwd = torch.cat([torch.zeros_like(bwd[:, :1]), bwd[:, :-1]], dim=1)
    return torch.cat([fwd, bwd, rest], dim=cd).view_as(x)


class PatchShift(nn.Module):
    """`tm: tsm` on a ViT: before each block, shift the patch tokens (class token excluded),
    1/8 of the channels from t+1 and 1/8 from t-1."""

    def __init__(self, num_frames: int, n_div: int = 8):
        super().__init__()
        self.num_frames, self.n_div = num_frames, n_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = shift_channels(x[:, 1:], self.num_frames, x.shape[-1] // self.n_div, channel_dim=-1)
        return torch.cat([x[:, :1], patches], dim=1)

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, n_div={self.n_div}"


class TokenShift(nn.Module):
    """`tm: tokenshift` control point: shift only the class token, 1/4 of the channels from the
    next frame and 1/4 from the previous one; patch tokens untouched."""

    def __init__(self, num_frames: int, n_div: int = 4):
        super().__init__()
        self.num_frames, self.n_div = num_frames, n_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = shift_channels(x[:, :1], self.num_frames, x.shape[-1] // self.n_div, channel_dim=-1)
        return torch.cat([cls, x[:, 1:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, n_div={self.n_div}"


class TokenT1D(nn.Module):
    """`tm: tokent1d` control point: a depth-wise temporal Conv1d (kernel 3, no bias) on the class
    token only, initialised to the TokenShift pattern (so it starts as `tokenshift`) and trained."""

    def __init__(self, width: int, num_frames: int, n_div: int = 4):
        super().__init__()
        self.num_frames, self.n_div = num_frames, n_div
        self.conv = nn.Conv1d(width, width, kernel_size=3, padding=1, groups=width, bias=False)
        fold = width // n_div
        with torch.no_grad():
            w = torch.zeros_like(self.conv.weight)  # (C, 1, 3): taps at t-1, t, t+1
            w[:fold, 0, 2] = 1.0
            w[fold : 2 * fold, 0, 0] = 1.0
            w[2 * fold :, 0, 1] = 1.0
            self.conv.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = _frames_view(x[:, 0], self.num_frames)  # (B, T, C)
        cls = self.conv(cls.transpose(1, 2)).transpose(1, 2)  # conv over T per channel
        return torch.cat([cls.reshape(x.shape[0], 1, x.shape[-1]), x[:, 1:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, n_div={self.n_div}"


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `rate`."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class TemporalResidualAttentionBlock(ResidualAttentionBlock):
    """open_clip's residual block with the original's hooks: an optional shift before the block
    (`temporal_shift`), a `control_point` before the attention and before the MLP branch, and
    DropPath on both branches. Parameters and their names are those of the parent class."""

    temporal_shift: nn.Module
    control_point: nn.Module
    drop_path: nn.Module

    def forward(
        self,
        q_x: torch.Tensor,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise ValueError("temporal blocks support self-attention only")
        x = self.temporal_shift(q_x)
        x = self.control_point(x)
        x = x + self.drop_path(self.ls_1(self.attention(q_x=self.ln_1(x), attn_mask=attn_mask)))
        x = self.control_point(x)
        x = x + self.drop_path(self.ls_2(self.mlp(self.ln_2(x))))
        return x


class TemporalVisionTransformer(VisionTransformer):
    """open_clip's VisionTransformer plus embedding dropout and joint space-time attention.

    With `joint`, the (B*T, 3, S, S) input becomes one sequence per video: one class token and the
    N*T patch tokens, each patch plus a learned per-frame `time_embedding`; the output is (B, D).
    """

    num_frames: int
    joint: bool
    emb_dropout: nn.Module

    def _embeds(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (BT, N, C)
        cls = self.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.patch_dropout(x)
        if self.joint:
            x = self._joint_tokens(x)
        x = self.emb_dropout(x)
        return self.ln_pre(x)

    def _joint_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = _frames_view(x, self.num_frames)  # (B, T, 1+N, C)
        cls = v[:, 0, :1]  # (B, 1, C), same for every frame
        patches = v[:, :, 1:] + self.time_embedding.to(x.dtype)[None, :, None, :]
        b, t, n, c = patches.shape
        patches = patches.permute(0, 2, 1, 3).reshape(b, n * t, c)  # patch-major, frame-minor
        return torch.cat([cls, patches], dim=1)


class TemporalShiftConv2d(nn.Conv2d):
    """`tm: tsm` on a ResNet bottleneck: shift 1/8 of the input channels in time before conv1."""

    num_frames: int
    n_div: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(shift_channels(x, self.num_frames, x.shape[1] // self.n_div, channel_dim=1))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shift: num_frames={self.num_frames}, n_div={self.n_div}"


def drop_rates(depth: int, max_rate: float) -> list[float]:
    """Per-block stochastic-depth / attention-dropout rates, linear from 0 to `max_rate`."""
    if max_rate <= 0 or depth == 0:
        return [0.0] * depth
    return [float(r) for r in torch.linspace(0, max_rate, depth)]


def patch_vit(
    visual: VisionTransformer,
    *,
    num_frames: int,
    tm: str | bool = False,
    joint_st: bool = False,
    drop_out: float = 0.0,
    emb_dropout: float = 0.0,
) -> VisionTransformer:
    """Turn open_clip's VisionTransformer into the temporal one in place (and return it)."""
    width = visual.conv1.out_channels
    visual.__class__ = TemporalVisionTransformer
    visual.num_frames = num_frames
    visual.joint = bool(joint_st)
    visual.emb_dropout = nn.Dropout(emb_dropout) if emb_dropout > 0 else nn.Identity()
    if joint_st:
        visual.time_embedding = nn.Parameter(width**-0.5 * torch.randn(num_frames, width))
    rates = drop_rates(len(visual.transformer.resblocks), drop_out)
    for block, rate in zip(visual.transformer.resblocks, rates, strict=True):
        if type(block) is not ResidualAttentionBlock:
            raise TypeError(f"unsupported open_clip block type {type(block).__name__}")
        block.__class__ = TemporalResidualAttentionBlock
        block.temporal_shift = PatchShift(num_frames) if tm == "tsm" else nn.Identity()
        if tm == "tokenshift":
            block.control_point = TokenShift(num_frames)
        elif tm == "tokent1d":
            block.control_point = TokenT1D(width, num_frames)
        else:
            block.control_point = nn.Identity()
        block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
        block.attn.dropout = rate
    return visual


def patch_resnet_tsm(visual: ModifiedResNet, *, num_frames: int, n_div: int = 8) -> ModifiedResNet:
    """TSM on conv1 of every bottleneck (every other one when layer3 has >= 23 blocks), in place."""
    step = 2 if len(visual.layer3) >= 23 else 1
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for i, block in enumerate(layer):
            if i % step == 0:
                block.conv1.__class__ = TemporalShiftConv2d
                block.conv1.num_frames = num_frames
                block.conv1.n_div = n_div
    return visual


def full_lr_param_names(model: nn.Module) -> list[str]:
    """Names (relative to `model`) of parameters that train at the full LR, not the backbone's
    clip_ratio LR: the TokenT1D convolutions (docs/training.md#what-a-step-does-as-the-original).
    `joint_st`'s time_embedding belongs to the visual encoder and trains at the backbone LR, as in
    the original."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, TokenT1D):
            names += [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
    return names
