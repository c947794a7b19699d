"""Checkpoint contents, RNG round trip, resume lookup and atomic writes under SIGKILL."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from utils.checkpoint import (
    RunPosition,
    find_resume,
    load_checkpoint,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from utils.errors import UserError
from utils.optim import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Linear(3, 4)
        self.fusion_model = nn.Linear(4, 4)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))


def _step(model, opt, sched):
    loss = model.fusion_model(model.visual(torch.ones(2, 3))).pow(2).sum() * model.logit_scale
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_rng_roundtrip_exact():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = rng_state()
    ref = (torch.rand(5), np.random.rand(5), np.random.randn(), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(state)
    got = (torch.rand(5), np.random.rand(5), np.random.randn(), random.random())
    assert torch.equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])
    assert ref[2] == got[2] and ref[3] == got[3]


def test_training_state_weights_only_and_exact_continuation(tmp_path):
    torch.manual_seed(0)
    kw = dict(kind="cosine", epochs=3, warmup_epochs=1, iters_per_epoch=4, step_every=1)
    model = Toy()
    opt = build_optimizer(model, lr=0.1, clip_ratio=0.1, weight_decay=0.2)
    sched = build_scheduler(opt, **kw)
    for _ in range(5):
        _step(model, opt, sched)
    path = save_checkpoint(
        training_state(
            model=model,
            optimizer=opt,
            scheduler=sched,
            scaler=torch.amp.GradScaler("cpu", enabled=False),
            at=RunPosition(epoch=1, iteration=5, best_top1=42.5),
            rng=[rng_state()],
            config={"solver": {"lr": 0.1}},
        ),
        tmp_path / "last_model.pt",
    )
    ckpt = torch.load(path, weights_only=True)  # plain contents only
    assert set(ckpt) >= {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "iteration",
        "best_top1",
        "rng",
        "config",
    }
    assert "logit_scale" in ckpt["model"] and ckpt["config"]["solver"]["lr"] == 0.1
    for _ in range(4):
        _step(model, opt, sched)
    after_ref = torch.rand(3)

    torch.manual_seed(123)
    model2 = Toy()
    opt2 = build_optimizer(model2, lr=0.1, clip_ratio=0.1, weight_decay=0.2)
    sched2 = build_scheduler(opt2, **kw)
    meta = restore_training_state(load_checkpoint(path), model=model2, optimizer=opt2, scheduler=sched2, scaler=None)
    assert meta == {"epoch": 1, "iteration": 5, "best_top1": 42.5}
    for _ in range(4):
        _step(model2, opt2, sched2)
    for (n, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert torch.equal(torch.rand(3), after_ref)


def test_each_rank_restores_its_own_rng_state():
    """Rank r of a resumed DDP run continues rank r's random streams, not rank 0's."""
    states, draws = [], []
    for rank in range(2):
        torch.manual_seed(100 + rank)  # train.py seeds every rank with seed + rank
        np.random.seed(100 + rank)
        random.seed(100 + rank)
        states.append(rng_state())
        draws.append((torch.rand(4), np.random.rand(4), random.random()))
    model = Toy()
    ckpt = training_state(
        model=model,
        optimizer=None,
        scheduler=None,
        scaler=None,
        at=RunPosition(epoch=0, iteration=1, best_top1=0.0),
        rng=states,
        config=None,
    )
    for rank in (1, 0):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        restore_training_state(ckpt, model=model, optimizer=None, scheduler=None, scaler=None, rank=rank)
        got = (torch.rand(4), np.random.rand(4), random.random())
        assert torch.equal(got[0], draws[rank][0]), rank
        assert np.array_equal(got[1], draws[rank][1]) and got[2] == draws[rank][2], rank
    # a third rank (the world grew): no state of its own, so its own seeding stands
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    restore_training_state(ckpt, model=model, optimizer=None, scheduler=None, scaler=None, rank=2)
    assert torch.equal(torch.rand(4), expected)


def test_restore_rejects_wrong_layout(tmp_path):
    p = save_checkpoint({"model_state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="pretrain"):
        restore_training_state(load_checkpoint(p), model=Toy(), optimizer=None, scheduler=None, scaler=None)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_find_resume(tmp_path):
    assert find_resume(None, tmp_path) is None
    assert find_resume("auto", tmp_path / "run", tmp_path) is None
    old = save_checkpoint({"a": 1}, tmp_path / "r1" / "last_model.pt")
    new = save_checkpoint({"a": 2}, tmp_path / "r2" / "last_model.pt")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert find_resume("auto", tmp_path / "fresh", tmp_path) == new
    assert find_resume("auto", tmp_path / "r1", tmp_path) == old
    assert find_resume(str(tmp_path / "r1"), None) == old
    with pytest.raises(UserError):
        find_resume(str(tmp_path / "nope.pt"), None)


@pytest.mark.slow
def test_checkpoint_killed_while_writing_is_old_or_new(tmp_path):
    """SIGKILL a process that keeps rewriting a ~24 MB checkpoint: the file always loads whole."""
    target = tmp_path / "last_model.pt"
    script = textwrap.dedent(f"""
        import sys, torch
        from utils.checkpoint import save_checkpoint
        big = torch.zeros(6_000_000)
        i = 0
        while True:
            i += 1
            big.fill_(float(i))
            save_checkpoint({{"gen": i, "big": big}}, {str(target)!r})
            print(i, flush=True)
    """)
    for delay in (0.35, 0.6, 0.9):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        # wait until at least one generation is on disk, then kill at an arbitrary moment
        proc.stdout.readline()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(target, weights_only=True)
        assert ckpt["big"].shape == (6_000_000,)
        assert bool((ckpt["big"] == float(ckpt["gen"])).all())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last_model.pt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # only orphaned temporaries, never the target
