"""Optimiser groups and the LR schedule against the original's formulas
(docs/training.md#what-a-step-does-as-the-original)."""

import math

import pytest
import torch
from torch import nn

from utils.errors import UserError
from utils.optim import build_optimizer, build_scheduler, held_epoch, multistep_milestones, param_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.visual.control_point = nn.Conv1d(4, 4, 3, bias=False)
        self.fusion_model = nn.Linear(4, 4)
        self.fusion_model.frame_position_embeddings = nn.Embedding(77, 4)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))
        self.register_buffer("class_embeddings", torch.randn(3, 4))


FULL_LR = ["visual.control_point.weight"]  # as clip.full_lr_param_names names the TokenT1D convs


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_two_groups_as_original():
    m = Toy()
    opt = build_optimizer(m, lr=5e-5, clip_ratio=0.1, weight_decay=0.2, full_lr_names=FULL_LR)
    assert [g["name"] for g in opt.param_groups] == ["visual", "head"]
    g0, g1 = opt.param_groups
    assert _names(m, g0) == ["logit_scale", "visual.0.bias", "visual.0.weight", "visual.1.bias", "visual.1.weight"]
    assert _names(m, g1) == [
        "fusion_model.bias",
        "fusion_model.frame_position_embeddings.weight",
        "fusion_model.weight",
        "visual.control_point.weight",
    ]
    assert math.isclose(g0["lr"], 5e-6) and math.isclose(g1["lr"], 5e-5)
    assert g0["weight_decay"] == g1["weight_decay"] == 0.2
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8


def test_no_decay_split_and_frozen_excluded():
    m = Toy()
    m.visual[0].weight.requires_grad_(False)
    groups = param_groups(m, lr=1.0, clip_ratio=0.5, weight_decay=0.1, no_decay_norm_bias=True, full_lr_names=FULL_LR)
    by = {g["name"]: (_names(m, g), g["lr"], g["weight_decay"]) for g in groups}
    assert by["visual_no_decay"] == (["logit_scale", "visual.0.bias", "visual.1.bias", "visual.1.weight"], 0.5, 0.0)
    assert "visual" not in by  # its only decayed weight is frozen
    assert by["head"] == (["fusion_model.weight", "visual.control_point.weight"], 1.0, 0.1)
    assert by["head_no_decay"] == (["fusion_model.bias", "fusion_model.frame_position_embeddings.weight"], 1.0, 0.0)


def test_no_trainable_parameters_is_user_error():
    m = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UserError):
        param_groups(m, lr=1.0, clip_ratio=0.1, weight_decay=0.0)


def _original_cosine(e, epochs, warmup):
    if e < warmup:
        return e / warmup
    return 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))


def _lrs_by_iteration(sched, opt, n):
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_cosine_staircase_matches_original_stepping():
    """Replays the original's loop: scheduler.step(epoch + i/len) at i == 0 or (i+1) % 10 == 0."""
    m = Toy()
    lr, ratio, epochs, warm, n_iter = 1e-3, 0.1, 4, 1.5, 23
    opt = build_optimizer(m, lr=lr, clip_ratio=ratio, weight_decay=0.0)
    sched = build_scheduler(opt, kind="cosine", epochs=epochs, warmup_epochs=warm, iters_per_epoch=n_iter)
    got = _lrs_by_iteration(sched, opt, epochs * n_iter)
    current = None
    for epoch in range(epochs):
        for i in range(n_iter):
            if i == 0 or (i + 1) % 10 == 0:
                current = _original_cosine(epoch + i / n_iter, epochs, warm)
            g = got[epoch * n_iter + i]
            assert g[0] == pytest.approx(lr * ratio * current, rel=1e-12, abs=1e-15)
            assert g[1] == pytest.approx(lr * current, rel=1e-12, abs=1e-15)
    # the first 9 iterations of training run at LR 0; iteration 9 at 9/23 of the warm-up slope
    assert all(g == [0.0, 0.0] for g in got[:9])
    assert got[9][1] == pytest.approx(lr * (9 / 23) / 1.5)
    # epoch 1 restarts the staircase at its first iteration
    assert got[n_iter][1] == pytest.approx(lr * (1.0 / 1.5))
    assert got[n_iter + 8][1] == got[n_iter][1]


def test_per_iteration_schedule_and_end_value():
    m = Toy()
    opt = build_optimizer(m, lr=2.0, clip_ratio=0.5, weight_decay=0.0)
    sched = build_scheduler(opt, kind="cosine", epochs=3, warmup_epochs=1, iters_per_epoch=4, step_every=1)
    got = [g[1] for g in _lrs_by_iteration(sched, opt, 12)]
    expect = [2.0 * _original_cosine(k / 4, 3, 1) for k in range(12)]
    assert got == pytest.approx(expect, abs=1e-12)
    assert got[4] == pytest.approx(2.0)  # end of warm-up
    assert got[8] == pytest.approx(1.0)  # half-way through the cosine
    assert held_epoch(11, 4, 1) == 11 / 4


def test_multistep_with_warmup():
    assert multistep_milestones(2, 7) == [2.0, 4.0, 6.0]
    assert multistep_milestones([5, 3], 7) == [3.0, 5.0]
    m = Toy()
    opt = build_optimizer(m, lr=1.0, clip_ratio=0.1, weight_decay=0.0)
    sched = build_scheduler(
        opt,
        kind="multistep",
        epochs=6,
        warmup_epochs=1,
        iters_per_epoch=2,
        step_every=1,
        decay_step=[2, 4],
        decay_factor=0.1,
    )
    got = [g[1] for g in _lrs_by_iteration(sched, opt, 12)]
    assert got == pytest.approx([0.0, 0.5, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


def test_scheduler_state_roundtrip_continues_identically():
    m = Toy()
    opt = build_optimizer(m, lr=1.0, clip_ratio=0.1, weight_decay=0.0)
    kw = dict(kind="cosine", epochs=5, warmup_epochs=1, iters_per_epoch=7)
    sched = build_scheduler(opt, **kw)
    ref = _lrs_by_iteration(sched, opt, 35)
    opt2 = build_optimizer(Toy(), lr=1.0, clip_ratio=0.1, weight_decay=0.0)
    s2 = build_scheduler(opt2, **kw)
    _lrs_by_iteration(s2, opt2, 14)
    state = s2.state_dict()
    opt3 = build_optimizer(Toy(), lr=1.0, clip_ratio=0.1, weight_decay=0.0)
    s3 = build_scheduler(opt3, **kw)
    opt3.load_state_dict(opt2.state_dict())
    s3.load_state_dict(state)
    assert _lrs_by_iteration(s3, opt3, 21) == ref[14:]


def test_bad_schedule_values():
    opt = build_optimizer(Toy(), lr=1.0, clip_ratio=0.1, weight_decay=0.0)
    with pytest.raises(UserError):
        build_scheduler(opt, kind="cosine", epochs=2, warmup_epochs=0, iters_per_epoch=0)
    with pytest.raises(UserError):
        build_scheduler(opt, kind="cosine", epochs=2, warmup_epochs=0, iters_per_epoch=3, step_every=0)


def test_full_lr_names_leave_the_visual_group():
    m = Toy()
    groups = param_groups(m, lr=1.0, clip_ratio=0.1, weight_decay=0.0, full_lr_names=["module.visual.0.bias"])
    assert "visual.0.bias" in _names(m, groups[1]) and "visual.0.bias" not in _names(m, groups[0])
    assert "visual.control_point.weight" in _names(m, groups[0])  # names decide, not a keyword
