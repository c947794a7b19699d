"""Temporal fusion heads: shapes, values against reference computations, Transf init/params."""

import math

import pytest
import torch
from torch import nn

from modules.heads import Conv1DHead, LSTMHead, MeanHead, TransfClsHead, TransfHead, build_head, transf_param_count
from utils.errors import UserError

B, T, D = 3, 8, 64


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, T, D, generator=g)


@pytest.mark.parametrize("name", ["None", None, "meanP"])
def test_mean_heads_equal_temporal_mean(name, x):
    head = build_head(name, D, T, heads=1)
    assert isinstance(head, MeanHead)
    assert sum(p.numel() for p in head.parameters()) == 0
    torch.testing.assert_close(head(x), x.mean(1), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["Transf", "Conv_1D", "LSTM", "Transf_cls"])
def test_every_head_maps_btd_to_bd_and_backprops(name, x):
    head = build_head(name, D, T, heads=D // 64 or 1)
    out = head(x.requires_grad_(True))
    assert out.shape == (B, D)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unknown_head_is_a_user_error():
    with pytest.raises(UserError, match="sim_header"):
        build_head("Transformer", D, T, 1)
    with pytest.raises(UserError, match="num_segments is 78"):
        build_head("Transf", D, 78, 1)


def test_transf_parameter_names_match_original_layout():
    head = build_head("Transf", 512, 8, heads=8)
    names = set(head.state_dict())
    expected = {"frame_position_embeddings.weight"}
    for i in range(6):
        p = f"transformer.resblocks.{i}."
        expected |= {
            p + s
            for s in (
                "attn.in_proj_weight",
                "attn.in_proj_bias",
                "attn.out_proj.weight",
                "attn.out_proj.bias",
                "ln_1.weight",
                "ln_1.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
            )
        }
    assert names == expected
    assert head.frame_position_embeddings.weight.shape == (77, 512)
    assert head.transformer.resblocks[0].attn.num_heads == 8
    assert head.transformer.resblocks[0].mlp.c_fc.weight.shape == (2048, 512)
    assert head.transformer.resblocks[0].ln_1.eps == 1e-12


@pytest.mark.parametrize("d", [512, 768, 1024])
def test_transf_parameter_count_matches_formula(d):
    head = TransfHead(d, heads=d // 64)
    n = sum(p.numel() for p in head.parameters())
    # 77 position rows; per block: qkv 3D²+3D, out D²+D, fc 4D²+4D, proj 4D²+D, two LNs 4D
    assert n == 77 * d + 6 * (12 * d * d + 13 * d) == transf_param_count(d)
    if d == 512:
        assert n == 18_953_728


def test_transf_init_statistics():
    torch.manual_seed(0)
    d = 512
    head = TransfHead(d, heads=8)
    std = lambda t: t.detach().float().std().item()  # noqa: E731
    assert abs(std(head.frame_position_embeddings.weight) - 0.02) < 1e-3
    for blk in head.transformer.resblocks:
        for lin in (blk.attn.out_proj, blk.mlp.c_fc, blk.mlp.c_proj):
            assert abs(std(lin.weight) - 0.02) < 1.5e-3
            assert abs(lin.weight.mean().item()) < 1e-3
            assert torch.count_nonzero(lin.bias) == 0
        # packed QKV keeps PyTorch's Xavier-uniform: U(-a, a), a = sqrt(6 / (D + 3D))
        a = math.sqrt(6.0 / (d + 3 * d))
        w = blk.attn.in_proj_weight
        assert w.abs().max().item() <= a + 1e-6
        assert abs(std(w) - a / math.sqrt(3)) < 1e-3  # ≈ 0.0313 for D = 512
        assert torch.count_nonzero(blk.attn.in_proj_bias) == 0
        for ln in (blk.ln_1, blk.ln_2):
            assert torch.equal(ln.weight, torch.ones(d)) and torch.count_nonzero(ln.bias) == 0


def test_transf_with_zeroed_blocks_is_the_temporal_mean(x):
    head = TransfHead(D, heads=2)
    with torch.no_grad():
        for blk in head.transformer.resblocks:
            blk.attn.out_proj.weight.zero_()
            blk.attn.out_proj.bias.zero_()
            blk.mlp.c_proj.weight.zero_()
            blk.mlp.c_proj.bias.zero_()
    # Transformer(x + pos) = x + pos, so out = mean(x + pos + x) = 2·mean(x) + mean(pos[:T])
    pos = head.frame_position_embeddings.weight[:T]
    torch.testing.assert_close(head(x), 2 * x.mean(1) + pos.mean(0), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        head.frame_position_embeddings.weight.zero_()
        for blk in head.transformer.resblocks:  # the residual must add x, not x + pos
            blk.attn.out_proj.bias.fill_(0.0)
    torch.testing.assert_close(head(x), 2 * x.mean(1), rtol=1e-5, atol=1e-6)


def _reference_transf(head: TransfHead, x: torch.Tensor) -> torch.Tensor:
    """Independent sequence-first computation of docs/model.md#temporal-heads-networksim_header from
    the head's parameters."""
    h = (x + head.frame_position_embeddings.weight[: x.shape[1]]).transpose(0, 1)  # (T, B, D)
    for blk in head.transformer.resblocks:
        y = nn.functional.layer_norm(h, (D,), blk.ln_1.weight, blk.ln_1.bias, 1e-12)
        a, _ = nn.functional.multi_head_attention_forward(
            y,
            y,
            y,
            D,
            blk.attn.num_heads,
            blk.attn.in_proj_weight,
            blk.attn.in_proj_bias,
            None,
            None,
            False,
            0.0,
            blk.attn.out_proj.weight,
            blk.attn.out_proj.bias,
            training=False,
            need_weights=False,
        )
        h = h + a
        y = nn.functional.layer_norm(h, (D,), blk.ln_2.weight, blk.ln_2.bias, 1e-12)
        y = nn.functional.linear(y, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)
        y = y * torch.sigmoid(1.702 * y)
        h = h + nn.functional.linear(y, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)
    return (h.transpose(0, 1) + x).mean(1)


def test_transf_matches_reference_computation(x):
    torch.manual_seed(1)
    head = TransfHead(D, heads=4).eval()
    with torch.no_grad():  # make the blocks matter
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.testing.assert_close(head(x), _reference_transf(head, x), rtol=1e-4, atol=1e-5)


def test_transf_is_order_sensitive_through_positions(x):
    head = TransfHead(D, heads=2).eval()
    with torch.no_grad():
        head.frame_position_embeddings.weight.normal_(0, 1.0)
    assert not torch.allclose(head(x), head(x.flip(1)), atol=1e-4)


def test_conv1d_init_moves_each_channel_quarter():
    d, t = 8, 4
    head = Conv1DHead(d)
    # value = 10·frame + channel, so the source frame of every output is readable
    x = (10 * torch.arange(1, t + 1).view(1, t, 1) + torch.arange(d).view(1, 1, d)).float()
    conv = head.temporal(x) - x  # the convolution alone
    expected = torch.zeros(1, t, d)
    for f in range(t):
        for c in range(d):
            if c < 2:  # first quarter: frame t-1 (zero before the first frame)
                expected[0, f, c] = x[0, f - 1, c] if f > 0 else 0.0
            elif c < 6:  # middle half: identity
                expected[0, f, c] = x[0, f, c]
            else:  # last quarter: frame t+1 (zero after the last frame)
                expected[0, f, c] = x[0, f + 1, c] if f < t - 1 else 0.0
    torch.testing.assert_close(conv, expected, rtol=0, atol=0)
    torch.testing.assert_close(head(x), (x + expected).mean(1), rtol=0, atol=1e-5)
    assert head.shift.bias is None and head.shift.groups == d


def test_lstm_head_is_residual_mean_of_lstm(x):
    head = LSTMHead(D)
    y, _ = head.lstm_visual(x)
    torch.testing.assert_close(head(x), (x + y).mean(1))
    assert head.lstm_visual.hidden_size == D and head.lstm_visual.num_layers == 1
    assert not head.lstm_visual.bidirectional


def test_transf_cls_outputs_the_cls_token(x):
    torch.manual_seed(0)
    head = TransfClsHead(D, T).eval()
    assert len(head.transformer_enc.layers) == 6
    assert head.transformer_enc.layers[0].self_attn.num_heads == 8
    assert abs(head.pos_embed.std().item() - 0.02) < 5e-3
    seq = torch.cat([head.cls_token.expand(B, -1, -1), x], 1) + head.pos_embed
    torch.testing.assert_close(head(x), head.transformer_enc(seq)[:, 0])
    # the CLS output attends to every frame
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(head(x), head(x2))


def test_transf_cls_init_is_actionclips_folded_normal():
    """ActionCLIP's `trunc_normal_` is normal_().fmod_(2).mul_(0.02): std 0.02 · 0.866 = 0.0173, every
    |w| < 0.04 — not torch's trunc_normal_ (its bounds ±2 are absolute: nothing cut, std 0.02)."""
    torch.manual_seed(0)
    d = 512
    head = TransfClsHead(d, 8)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 * 3  # out_proj, linear1, linear2 per layer
    w = torch.cat([m.weight.detach().flatten() for m in linears])
    assert abs(w.std().item() - 0.0173) < 3e-4 and w.abs().max().item() < 0.04
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    for p in (head.pos_embed, head.cls_token):
        assert p.abs().max().item() < 0.04
    assert abs(head.pos_embed.std().item() - 0.0173) < 4e-3
    qkv = head.transformer_enc.layers[0].self_attn.in_proj_weight  # PyTorch's Xavier default
    assert abs(qkv.std().item() - math.sqrt(6.0 / (4 * d)) / math.sqrt(3)) < 1e-3
