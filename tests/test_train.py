"""Training end to end on a generated dataset with the tiny model (CPU).

Fast, in-process: the loss goes down; accumulating 2 batches of b equals one batch of 2b.
Slow (subprocesses of train.py / torchrun, still run in CI): 2-process DDP equals one process
with the same global batch; 1 epoch + resume + 1 epoch is bit-identical to 2 epochs, also when the
run is SIGKILLed during the second epoch; a rank that raises ends the whole job with its error.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from datasets.transforms import normalize
from utils.training import EpochReport, StepRecipe, train_one_epoch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from datasets.synthetic import generate

    d = tmp_path_factory.mktemp("syn")
    generate(d, classes=4, videos_per_class=2, val_videos_per_class=1, frames=8, size=64, fmt="frames", seed=0)
    lines = (d / "train.txt").read_text().splitlines()
    (d / "train4.txt").write_text("\n".join(lines[::2]) + "\n")  # one video per class
    return d


def make_config(tmp: Path, data: Path, name: str = "cfg.yaml", **solver) -> Path:
    cfg = {
        "seed": 7,
        "data": {
            "dataset": "synthetic",
            "num_segments": 2,
            "batch_size": 4,
            "workers": 0,
            "train_root": str(data / "frames"),
            "val_root": str(data / "frames"),
            "train_list": str(data / "train.txt"),
            "val_list": str(data / "val.txt"),
            "label_list": str(data / "labels.csv"),
            "input_size": 112,
            "min_frames": 1,
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "text_cache": ""},
        "solver": {
            "epochs": 2,
            "lr": 1.0e-3,
            "clip_ratio": 0.5,
            "lr_warmup_step": 0.5,
            "lr_step_every": 1,
            "weight_decay": 0.2,
            **solver,
        },
        "logging": {"print_freq": 1, "eval_freq": 1},
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def load_cfg(path: Path, *opts: str):
    from utils.config import load_config

    return load_config(path, list(opts))


def fixed_batches(cfg, n: int) -> list:
    from datasets import build_dataset

    ds = build_dataset(cfg, "train")
    ds.set_epoch(0)
    items = [ds[i] for i in range(len(ds))]
    clips = torch.stack([c for c, _, _ in items])
    labels = torch.tensor([lab for _, lab, _ in items])
    return [(clips[:n], labels[:n], None), (clips[n : 2 * n], labels[n : 2 * n], None)]


def tiny_model(cfg):
    from modules.model_builder import build_model

    torch.manual_seed(0)
    return build_model(cfg, [f"class {i}" for i in range(4)])


def constant_scheduler(opt, iters: int):
    from utils.optim import build_scheduler

    return build_scheduler(
        opt, kind="multistep", epochs=1, warmup_epochs=0, iters_per_epoch=iters, step_every=1, decay_step=[100]
    )


@pytest.mark.slow
def test_loss_decreases(tmp_path, data):
    from utils.optim import build_optimizer

    cfg = load_cfg(make_config(tmp_path, data))
    model = tiny_model(cfg)
    batch = fixed_batches(cfg, 4)[0]
    opt = build_optimizer(model, lr=1e-3, clip_ratio=1.0, weight_decay=0.0)
    losses: list[float] = []
    loader = [batch] * 6
    train_one_epoch(
        model,
        loader,
        opt,
        constant_scheduler(opt, 6),
        torch.amp.GradScaler("cpu", enabled=False),
        StepRecipe(device=torch.device("cpu"), num_frames=2, normalize=normalize),
        report=EpochReport(on_iteration=lambda step, loss, lrs: losses.append(loss)),
    )
    assert len(losses) == 6
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_accumulation_equals_larger_batch(tmp_path, data):
    """SGD (lr 1) makes the weight change equal to the gradient: 2 x b accumulated == 1 x 2b."""
    cfg = load_cfg(make_config(tmp_path, data))
    b1, b2 = fixed_batches(cfg, 2)
    big = (torch.cat([b1[0], b2[0]]), torch.cat([b1[1], b2[1]]), None)
    base = tiny_model(cfg)
    results = []
    for loader, accum in (([big], 1), ([b1, b2], 2), ([b1, b2, big], 2)):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        stats = train_one_epoch(
            model,
            loader,
            opt,
            constant_scheduler(opt, len(loader)),
            torch.amp.GradScaler("cpu", enabled=False),
            StepRecipe(device=torch.device("cpu"), num_frames=2, normalize=normalize, accumulation=accum),
        )
        results.append((model, stats))
    (m_big, s_big), (m_acc, s_acc), (m_tail, s_tail) = results
    assert s_big.steps == 1 and s_acc.steps == 1
    assert s_tail.steps == 2  # the shorter last window is stepped: nothing carries into the next epoch
    assert 0 < s_tail.first_step_s < s_tail.seconds  # the first of three steps, timed apart (solver.compile)
    changed = 0.0
    for (name, p0), p1, p2 in zip(base.named_parameters(), m_big.parameters(), m_acc.parameters(), strict=True):
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-6, msg=name)
        changed = max(changed, float((p1 - p0).detach().abs().max()))
    assert changed > 1e-3
    for p in m_tail.parameters():
        assert p.grad is None  # zeroed after the final (partial) window


# ----------------------------------------------------------------------------- subprocess runs
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(cfg: Path, out: Path, *opts: str, extra: tuple[str, ...] = (), nproc: int = 0) -> list[str]:
    cmd = [sys.executable]
    if nproc:
        cmd += [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
        ]
    cmd += [str(ROOT / "train.py"), "--config", str(cfg), "--output", str(out), *extra]
    if opts:
        cmd += ["--opts", *opts]
    return cmd


def run_train(
    cfg: Path, out: Path, *opts: str, extra: tuple[str, ...] = (), nproc: int = 0, timeout: float = 240
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(cfg, out, *opts, extra=extra, nproc=nproc),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path, data):
    """One optimiser step on a global batch of 4: 1 process x 4 clips == 2 gloo processes x 2 clips.
    eps = 1 makes AdamW's first step proportional to the gradient, so a wrong reduction shows."""
    common = (
        "data.train_list=" + str(data / "train4.txt"),
        "solver.epochs=1",
        "solver.eps=1.0",
        "solver.lr=0.1",
        "solver.lr_warmup_step=0",
    )
    cfg = make_config(tmp_path, data)
    run_train(cfg, tmp_path / "one", *common, "data.batch_size=4")
    proc = run_train(cfg, tmp_path / "two", *common, "data.batch_size=2", nproc=2)
    assert "world size 2 (DDP)" in proc.stdout
    a, b = weights(tmp_path / "one" / "last_model.pt"), weights(tmp_path / "two" / "last_model.pt")
    assert a["iteration"] == b["iteration"] == 1
    init = tiny_model(load_cfg(cfg))  # same seed as rank 0 -> the initial weights
    moved = 0.0
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6, msg=key)
        if key in init.state_dict() and key != "class_embeddings":
            moved = max(moved, float((value - init.state_dict()[key]).abs().max()))
    assert moved > 1e-4
    assert len(b["rng"]) == 2  # each rank's RNG state is kept


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["iteration"] == b["iteration"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][pid][k]), (pid, k)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


@pytest.mark.slow
def test_resume_is_bit_identical_also_after_sigkill(tmp_path, data):
    cfg = make_config(tmp_path, data)
    run_train(cfg, tmp_path / "ref")
    ref = weights(tmp_path / "ref" / "last_model.pt")
    assert ref["epoch"] == 1 and ref["iteration"] == 4

    # 1 epoch, stop, then resume: auto
    run_train(cfg, tmp_path / "split", extra=("--stop_after_epochs", "1"))
    assert weights(tmp_path / "split" / "last_model.pt")["epoch"] == 0
    run_train(cfg, tmp_path / "split", "resume=auto")
    _assert_same_state(ref, weights(tmp_path / "split" / "last_model.pt"))
    log = (tmp_path / "split" / "log.txt").read_text()
    assert "resumed from" in log
    rows = (tmp_path / "split" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch
    assert (tmp_path / "split" / "curves.png").stat().st_size > 0

    # killed with SIGKILL during the second epoch, then resumed: nothing else lost
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        train_cmd(cfg, out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            log_path = out / "log.txt"
            if log_path.is_file() and "Epoch: [1][0/" in log_path.read_text():
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("epoch 1 never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert weights(out / "last_model.pt")["epoch"] == 0
    run_train(cfg, out, "resume=auto")
    _assert_same_state(ref, weights(out / "last_model.pt"))


@pytest.mark.slow
def test_failing_rank_ends_the_job(tmp_path, data):
    """Rank 1's first clip does not exist: rank 1 raises while rank 0 waits in the gradient
    all-reduce; the job must end promptly with rank 1's error instead of hanging."""
    lines = (data / "train.txt").read_text().splitlines()
    n = len(lines)
    g = torch.Generator()
    g.manual_seed(7)  # DistributedSampler(seed=cfg.seed) at epoch 0
    perm = torch.randperm(n, generator=g).tolist()
    broken = perm[1]  # rank 1's first sample with world size 2
    lines[broken] = "no_such_class/no_such_video 8 0"
    (tmp_path / "broken.txt").write_text("\n".join(lines) + "\n")
    cfg = make_config(tmp_path, data)
    start = time.time()
    proc = subprocess.run(
        train_cmd(cfg, tmp_path / "fail", f"data.train_list={tmp_path / 'broken.txt'}", "data.batch_size=2", nproc=2),
        cwd=ROOT,
        env={**ENV, "TEXT4VIS_DIST_TIMEOUT": "60"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.time() - start
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "no_such_video" in text, text[-3000:]
    assert elapsed < 120


@pytest.mark.slow
def test_contrastive_run_resumes_bit_identically_and_saves_its_towers_class_embeddings(tmp_path, data):
    """solver.loss_type NCE with a trained text tower (the original's train_nce.py) through the same
    train.py: 1 epoch + resume + 1 epoch equals 2 epochs, and the saved class embeddings are the
    saved text tower's embeddings of the class prompts (what validation used)."""
    from app.load_weights import load_model

    cfg = make_config(tmp_path, data, loss_type="NCE")
    opts = ("network.fix_text=false",)
    proc = run_train(cfg, tmp_path / "ref", *opts)
    assert "objective: NCE, text tower trained" in proc.stdout
    ref = weights(tmp_path / "ref" / "last_model.pt")
    assert any(k.startswith("text.transformer.") for k in ref["model"])
    run_train(cfg, tmp_path / "split", *opts, extra=("--stop_after_epochs", "1"))
    run_train(cfg, tmp_path / "split", *opts, "resume=auto")
    _assert_same_state(ref, weights(tmp_path / "split" / "last_model.pt"))
    loaded = load_model(tmp_path / "ref" / "last_model.pt")
    stored = loaded.model.class_embeddings.clone()
    loaded.model.refresh_class_embeddings()
    torch.testing.assert_close(loaded.model.class_embeddings, stored, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_contrastive_ddp_two_processes_step_like_one_process(tmp_path, data):
    """NCE over 2 gloo processes x 2 clips against 1 process x 4 clips: each rank's loss is over the
    gathered batch with gradient through its own rows (docs/training.md#contrastive-baseline-train_ncepy), so DDP's
    average is the one-process gradient / 2; AdamW's first step (eps tiny, no decay) depends on the gradient's
    sign only, so both runs make the same update."""
    common = (
        "data.train_list=" + str(data / "train4.txt"),
        "solver.epochs=1",
        "solver.eps=1.0e-20",
        "solver.lr=0.01",
        "solver.lr_warmup_step=0",
        "solver.weight_decay=0.0",
        "network.fix_text=false",
    )
    cfg = make_config(tmp_path, data, loss_type="NCE")
    run_train(cfg, tmp_path / "one", *common, "data.batch_size=4")
    proc = run_train(cfg, tmp_path / "two", *common, "data.batch_size=2", nproc=2)
    assert "world size 2 (DDP)" in proc.stdout
    a, b = weights(tmp_path / "one" / "last_model.pt"), weights(tmp_path / "two" / "last_model.pt")
    assert a["iteration"] == b["iteration"] == 1
    same = total = 0
    for key, value in a["model"].items():
        if key == "class_embeddings" or not value.is_floating_point():
            continue
        same += int(((value - b["model"][key]).abs() < 1e-6).sum())
        total += value.numel()
    assert total > 1_000_000 and same / total > 0.999, same / total
    moments = [st["exp_avg"] for st in a["optimizer"]["state"].values()]
    assert len(moments) > 50 and all(float(m.abs().sum()) > 0 for m in moments[:5])  # a real step was taken
