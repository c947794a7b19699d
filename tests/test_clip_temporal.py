"""clip/temporal.py: exact channel moves of tsm / tokenshift / tokent1d, joint_st, drop path,
and parameter names that stay those of open_clip."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet

import clip
from clip.archs import model_config
from clip.temporal import (
    DropPath,
    PatchShift,
    TemporalShiftConv2d,
    TokenShift,
    TokenT1D,
    patch_resnet_tsm,
    shift_channels,
)
from utils.errors import UserError

B, T, L, C = 2, 4, 5, 16


def _tokens() -> torch.Tensor:
    """x[b*T+t, l, c] = 10000*b + 1000*(t+1) + 10*l + c: every entry says where it came from."""
    b = torch.arange(B).view(B, 1, 1, 1)
    t = torch.arange(T).view(1, T, 1, 1)
    l_ = torch.arange(L).view(1, 1, L, 1)
    c = torch.arange(C).view(1, 1, 1, C)
    return (10000 * b + 1000 * (t + 1) + 10 * l_ + c).float().view(B * T, L, C)


def _reference_shift(x: torch.Tensor, fold: int, tokens: slice) -> torch.Tensor:
    """Loop version of docs/clip.md#in-backbone-temporal-options: channels [0,fold) from t+1,
    [fold,2fold) from t-1, zero padded."""
    v = x.view(B, T, L, C)
    out = v.clone()
    for b in range(B):
        for t in range(T):
            for l_ in range(L)[tokens]:
                out[b, t, l_, :fold] = v[b, t + 1, l_, :fold] if t + 1 < T else 0
                out[b, t, l_, fold : 2 * fold] = v[b, t - 1, l_, fold : 2 * fold] if t >= 1 else 0
    return out.view(B * T, L, C)


def test_tokenshift_moves_a_quarter_of_cls_channels_each_way():
    x = _tokens()
    out = TokenShift(T)(x)
    assert torch.equal(out, _reference_shift(x, C // 4, slice(0, 1)))
    assert torch.equal(out[:, 1:], x[:, 1:])  # patch tokens untouched
    v = out.view(B, T, L, C)
    assert torch.equal(v[0, 1, 0, :4], x.view(B, T, L, C)[0, 2, 0, :4])  # from t+1
    assert torch.equal(v[0, 1, 0, 4:8], x.view(B, T, L, C)[0, 0, 0, 4:8])  # from t-1
    assert torch.equal(v[0, T - 1, 0, :4], torch.zeros(4))  # zero padded at the end
    assert torch.equal(v[0, 0, 0, 4:8], torch.zeros(4))  # and at the start
    assert torch.equal(v[:, :, 0, 8:], x.view(B, T, L, C)[:, :, 0, 8:])  # half unchanged


def test_tsm_vit_moves_an_eighth_of_patch_channels_each_way():
    x = _tokens()
    out = PatchShift(T)(x)
    assert torch.equal(out, _reference_shift(x, C // 8, slice(1, None)))
    assert torch.equal(out[:, 0], x[:, 0])  # class token untouched
    v, xv = out.view(B, T, L, C), x.view(B, T, L, C)
    assert torch.equal(v[1, 2, 3, :2], xv[1, 3, 3, :2]) and torch.equal(v[1, 2, 3, 2:4], xv[1, 1, 3, 2:4])
    assert torch.equal(v[..., 4:], xv[..., 4:])


def test_shift_never_mixes_videos():
    x = _tokens()
    out = TokenShift(T)(x).view(B, T, L, C)
    video1 = out[1][out[1] != 0]
    assert (video1 >= 10000).all()  # only values of video b=1


def test_tokent1d_starts_as_tokenshift_and_is_trainable():
    x = _tokens()
    t1d = TokenT1D(C, T)
    assert torch.equal(t1d(x), TokenShift(T)(x))
    w = t1d.conv.weight
    assert w.shape == (C, 1, 3) and w.requires_grad and t1d.conv.bias is None
    t1d(x.requires_grad_()).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_resnet_tsm_shift_on_conv_input():
    x = torch.arange(B * T * 16 * 2 * 2, dtype=torch.float32).view(B * T, 16, 2, 2)
    out = shift_channels(x, T, 2, channel_dim=1).view(B, T, 16, 2, 2)
    xv = x.view(B, T, 16, 2, 2)
    assert torch.equal(out[:, :-1, :2], xv[:, 1:, :2]) and torch.equal(out[:, -1, :2], torch.zeros(B, 2, 2, 2))
    assert torch.equal(out[:, 1:, 2:4], xv[:, :-1, 2:4]) and torch.equal(out[:, 0, 2:4], torch.zeros(B, 2, 2, 2))
    assert torch.equal(out[:, :, 4:], xv[:, :, 4:])


def test_resnet_tsm_placement_every_block_or_every_other_for_deep_layer3():
    rn = clip.create_clip("tiny-rn", "none", tm="tsm", num_frames=T)
    for layer in (rn.visual.layer1, rn.visual.layer2, rn.visual.layer3, rn.visual.layer4):
        assert all(type(b.conv1) is TemporalShiftConv2d and b.conv1.n_div == 8 for b in layer)
        assert all(type(b.conv2) is torch.nn.Conv2d for b in layer)
    deep = ModifiedResNet(layers=[1, 2, 23, 1], output_dim=8, heads=1, image_size=32, width=8)
    patch_resnet_tsm(deep, num_frames=T)
    kinds = [type(b.conv1) is TemporalShiftConv2d for b in deep.layer3]
    assert kinds == [i % 2 == 0 for i in range(23)]
    assert [type(b.conv1) is TemporalShiftConv2d for b in deep.layer2] == [True, False]


def test_resnet_tsm_mixes_frames_and_keeps_keys():
    plain = clip.create_clip("tiny-rn", "none").eval()
    tsm = clip.create_clip("tiny-rn", "none", tm="tsm", num_frames=2).eval()
    assert list(plain.state_dict()) == list(tsm.state_dict())
    for m in (plain, tsm):  # open_clip zero-initialises bn3, which would silence every residual branch
        for name, p in m.visual.named_parameters():
            if name.endswith("bn3.weight"):
                p.data.fill_(1.0)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[1] += 1.0  # change frame 1 only
    with torch.no_grad():
        assert torch.equal(plain.visual(x)[0], plain.visual(y)[0])
        assert not torch.allclose(tsm.visual(x)[0], tsm.visual(y)[0])


def _zero_branches(model):
    """Zero attention and MLP outputs: each block then reduces to its temporal hooks."""
    with torch.no_grad():
        for blk in model.visual.transformer.resblocks:
            for p in (blk.attn.out_proj.weight, blk.attn.out_proj.bias, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias):
                p.zero_()


def test_control_point_runs_before_attention_and_before_mlp():
    model = clip.create_clip("tiny", "none", tm="tokenshift", num_frames=T)
    _zero_branches(model)
    blk = model.visual.transformer.resblocks[0]
    x = torch.randn(B * T, 50, 256)
    shift = TokenShift(T)
    assert torch.equal(blk(x), shift(shift(x)))
    tsm = clip.create_clip("tiny", "none", tm="tsm", num_frames=T)
    _zero_branches(tsm)
    assert torch.equal(tsm.visual.transformer.resblocks[0](x), PatchShift(T)(x))


def test_options_off_equal_plain_open_clip():
    plain = open_clip.CLIP(**model_config("tiny")).eval()
    ours = clip.create_clip("tiny", "none").eval()
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(B * T, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(plain.visual(x), ours.visual(x), atol=1e-6)


@pytest.mark.parametrize(
    "tm,new",
    [
        (False, set()),
        ("tsm", set()),
        ("tokenshift", set()),
        ("tokent1d", {f"transformer.resblocks.{i}.control_point.conv.weight" for i in range(4)}),
    ],
)
def test_visual_keys_are_open_clip_keys_plus_new_params(tm, new):
    plain = set(open_clip.CLIP(**model_config("tiny")).visual.state_dict())
    ours = clip.create_clip("tiny", "none", tm=tm, num_frames=T, training=clip.VisualTraining(0.2, 0.1))
    assert set(ours.visual.state_dict()) == plain | new
    assert set(ours.state_dict()) - {f"visual.{k}" for k in new} == set(
        open_clip.CLIP(**model_config("tiny")).state_dict()
    )
    assert {
        "conv1.weight",
        "class_embedding",
        "positional_embedding",
        "ln_pre.weight",
        "ln_post.weight",
        "proj",
        "transformer.resblocks.3.attn.in_proj_weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
    } <= plain


def test_full_lr_params_are_the_tokent1d_convs_only():
    t1d = clip.create_clip("tiny", "none", tm="tokent1d", num_frames=T)
    assert clip.full_lr_param_names(t1d) == [
        f"visual.transformer.resblocks.{i}.control_point.conv.weight" for i in range(4)
    ]
    assert clip.full_lr_param_names(t1d.visual)[0] == "transformer.resblocks.0.control_point.conv.weight"
    assert clip.full_lr_param_names(clip.create_clip("tiny", "none", joint_st=True, num_frames=T)) == []


def test_joint_st_gives_one_embedding_per_video():
    model = clip.create_clip("tiny", "none", joint_st=True, num_frames=T).eval()
    te = model.visual.time_embedding
    assert te.shape == (T, 256) and te.requires_grad
    assert set(model.visual.state_dict()) - set(clip.create_clip("tiny", "none").visual.state_dict()) == {
        "time_embedding"
    }
    x = torch.randn(B * T, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.visual(x)
        assert out.shape == (B, 256)
        y = x.clone()
        y[T:] += 1.0  # change video 1 only
        out2 = model.visual(y)
        assert torch.allclose(out[0], out2[0], atol=1e-5) and not torch.allclose(out[1], out2[1])
        swapped = x.view(B, T, 3, 112, 112).flip(1).reshape(B * T, 3, 112, 112)
        assert not torch.allclose(model.visual(swapped), out, atol=1e-4)  # frame order matters
        # one joint sequence of 1 + N*T tokens
        assert model.visual._embeds(x).shape == (B, 1 + 49 * T, 256)


def test_joint_st_time_embedding_init_scale():
    model = clip.create_clip("tiny", "none", joint_st=True, num_frames=64)
    std = model.visual.time_embedding.std().item()
    assert abs(std - 256**-0.5) < 0.1 * 256**-0.5


def test_drop_out_rates_linear_over_depth():
    model = clip.create_clip("tiny", "none", training=clip.VisualTraining(drop_out=0.3))
    blocks = model.visual.transformer.resblocks
    expected = [0.0, 0.1, 0.2, 0.3]
    assert [b.attn.dropout for b in blocks] == pytest.approx(expected)
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)
    assert [b.drop_path.rate for b in blocks[1:]] == pytest.approx(expected[1:])
    assert clip.drop_rates(4, 0.3) == pytest.approx(expected)
    assert clip.drop_rates(3, 0.0) == [0.0, 0.0, 0.0]


def test_drop_path_and_emb_dropout_act_in_training_only():
    base = clip.create_clip("tiny", "none").eval()
    model = clip.create_clip("tiny", "none", training=clip.VisualTraining(0.5, 0.5))
    x = torch.randn(B, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model.eval()
        assert torch.allclose(model.visual(x), base.visual(x), atol=1e-6)
        model.train()
        torch.manual_seed(0)
        assert not torch.allclose(model.visual(x), base.visual(x), atol=1e-3)
    model.visual.emb_dropout.train()
    assert isinstance(model.visual.emb_dropout, torch.nn.Dropout) and model.visual.emb_dropout.p == 0.5


def _drop_path_output(rate: float, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, L, C, generator=torch.Generator().manual_seed(0)) + 0.5  # no zero entries
    dp = DropPath(rate).train()
    torch.manual_seed(0)
    return x, dp(x)


def test_drop_path_rescales_kept_branches_by_one_over_keep():
    """A kept branch is x / (1 - rate), so the expected output equals x (the original's drop_path)."""
    x, out = _drop_path_output(0.25)
    kept = (out != 0).flatten(1).all(1)
    torch.testing.assert_close(out[kept], x[kept] / 0.75, rtol=1e-6, atol=0)
    assert 0.72 < kept.float().mean().item() < 0.78  # keep probability 0.75
    assert torch.equal(DropPath(0.25).eval()(x), x)


def test_drop_path_drops_whole_samples():
    """One draw per sample (row of the batch): every entry of a sample is kept or every one dropped."""
    x, out = _drop_path_output(0.5)
    kept = (out != 0).flatten(1)
    assert bool((kept.all(1) | ~kept.any(1)).all())  # never partly dropped
    assert 0 < int(kept.all(1).sum()) < x.shape[0]  # both outcomes occur


def test_invalid_combinations_are_user_errors():
    with pytest.raises(UserError, match="ResNet"):
        clip.create_clip("tiny-rn", "none", tm="tokenshift")
    with pytest.raises(UserError, match="joint_st"):
        clip.create_clip("tiny", "none", tm="tsm", joint_st=True)
    with pytest.raises(UserError, match="network.tm"):
        clip.create_clip("tiny", "none", tm="shift")


def test_batch_must_be_whole_videos():
    model = clip.create_clip("tiny", "none", tm="tokenshift", num_frames=T)
    with pytest.raises(ValueError, match="num_frames"):
        model.visual(torch.randn(T + 1, 3, 112, 112))


def test_tm_true_means_tsm_on_resnet_only():
    rn = clip.create_clip("tiny-rn", "none", tm=True, num_frames=2)
    assert type(rn.visual.layer1[0].conv1) is TemporalShiftConv2d
    with pytest.raises(UserError, match="ambiguous"):
        clip.create_clip("tiny", "none", tm=True)
