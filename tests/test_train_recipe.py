"""train.py's recipe and the training engine's options, in process on a generated dataset.

What the end-to-end runs of test_train.py cannot see: the sampler's order per epoch, the solver
options reaching the optimiser and the engine (weight-decay groups, gradient clipping), and the
best value surviving a resume. The engine is replaced by a recorder and validation by a script of
accuracies where only train.py's own decisions are under test.
"""

from __future__ import annotations

import copy
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import app.fit
import clip
import train
from datasets.transforms import normalize
from modules.model_builder import build_model
from utils.config import load_config
from utils.optim import build_scheduler, param_groups
from utils.training import EpochStats, StepRecipe, train_one_epoch

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
TRAIN_VIDEOS = 8
SEED = 7


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from datasets.synthetic import generate

    d = tmp_path_factory.mktemp("syn")
    generate(
        d,
        classes=NUM_CLASSES,
        videos_per_class=TRAIN_VIDEOS // NUM_CLASSES,
        val_videos_per_class=1,
        frames=8,
        size=64,
        fmt="frames",
        seed=0,
    )
    return d


def write_config(tmp: Path, data: Path, network: dict[str, Any] | None = None, **solver: Any) -> Path:
    cfg = {
        "seed": SEED,
        "resume": "auto",  # the same command starts the run and continues it
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
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "text_cache": "", **(network or {})},
        "solver": {"epochs": 3, "lr": 1.0e-3, "clip_ratio": 0.5, "lr_warmup_step": 0, "weight_decay": 0.2, **solver},
        "logging": {"print_freq": 1, "eval_freq": 1},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Recorder:
    """Stands in for `utils.training.train_one_epoch`: records the epoch, the order of the
    loader's samples and the options train.py passes; trains nothing."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        model: nn.Module,
        loader: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        *options: Any,
    ) -> EpochStats:
        order = [int(i) for batch in loader for i in batch[2]]
        fields = {k: v for option in options for k, v in vars(option).items()}  # StepRecipe, EpochLoop, EpochReport
        self.calls.append({"order": order, "model": model, **fields})
        return EpochStats(
            loss_sum=1.0,
            samples=len(order),
            steps=len(loader),
            seconds=0.1,
            lrs=[g["lr"] for g in optimizer.param_groups],
        )


def scripted_validation(monkeypatch, top1_per_epoch: dict[int, float], recorder: Recorder) -> None:
    """Validation reports `top1_per_epoch[epoch]` for the epoch the recorder saw last."""

    def validate(self, model):
        value = top1_per_epoch[recorder.calls[-1]["epoch"]]
        return {"top1": value, "top5": 100.0}

    monkeypatch.setattr(train.Validation, "__call__", validate)


def run_train(cfg: Path, out: Path, *extra: str) -> dict:
    return train.main(["--config", str(cfg), "--output", str(out), "--device", "cpu", *extra])


def sampler_order(epoch: int) -> list[int]:
    """DistributedSampler(shuffle, seed) on one process: randperm with seed + epoch."""
    return torch.randperm(TRAIN_VIDEOS, generator=torch.Generator().manual_seed(SEED + epoch)).tolist()


def test_each_epoch_gets_its_own_order_and_solver_options_reach_the_engine(tmp_path, data, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {0: 10.0, 1: 20.0, 2: 30.0}, recorder)
    run_train(write_config(tmp_path, data, clip_grad_norm=0.5, grad_accumulation_steps=2), tmp_path / "run")
    assert [c["epoch"] for c in recorder.calls] == [0, 1, 2]
    orders = [c["order"] for c in recorder.calls]
    assert orders == [sampler_order(e) for e in range(3)]  # the sampler's set_epoch(e)
    assert len({tuple(o) for o in orders}) == 3
    assert all(c["clip_grad_norm"] == 0.5 and c["accumulation"] == 2 for c in recorder.calls)


def test_resume_keeps_the_best_checkpoint_of_an_earlier_invocation(tmp_path, data, monkeypatch):
    """Epoch 0 is the best (50 %); the run stops, is resumed, and epochs 1-2 are worse: model_best.pt
    must stay epoch 0's and the best value 50 %, as in an uninterrupted run."""
    cfg, out = write_config(tmp_path, data), tmp_path / "run"
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {0: 50.0, 1: 25.0, 2: 40.0}, recorder)
    first = run_train(cfg, out, "--stop_after_epochs", "1")
    assert first["best"] == 50.0 and [c["epoch"] for c in recorder.calls] == [0]
    result = run_train(cfg, out)  # the same command again: resume=auto continues at epoch 1
    assert [c["epoch"] for c in recorder.calls] == [0, 1, 2]
    assert recorder.calls[1]["order"] == sampler_order(1)  # the resumed epoch's own order
    best = torch.load(out / "model_best.pt", weights_only=True)
    last = torch.load(out / "last_model.pt", weights_only=True)
    assert best["epoch"] == 0 and best["best_top1"] == 50.0
    assert last["epoch"] == 2 and last["best_top1"] == 50.0
    assert result["best"] == 50.0
    with open(out / "metrics.csv", newline="") as fh:
        assert [r["best_top1"] for r in csv.DictReader(fh)] == ["50.000", "50.000", "50.000"]


@pytest.mark.parametrize("no_decay", [False, True])
def test_build_optimisation_passes_every_solver_option(tmp_path, data, no_decay):
    cfg = load_config(
        write_config(
            tmp_path,
            data,
            no_decay_norm_bias=no_decay,
            betas=[0.8, 0.95],
            eps=1e-6,
            lr=2e-3,
            clip_ratio=0.1,
            weight_decay=0.3,
        )
    )
    torch.manual_seed(0)
    model = build_model(cfg, [f"class {i}" for i in range(NUM_CLASSES)])
    optimizer, scheduler, scaler = train.build_optimisation(cfg, model, 5, "fp32", torch.device("cpu"))
    expected = param_groups(
        model,
        lr=2e-3,
        clip_ratio=0.1,
        weight_decay=0.3,
        no_decay_norm_bias=no_decay,
        full_lr_names=clip.full_lr_param_names(model),
    )
    assert [g["name"] for g in optimizer.param_groups] == [g["name"] for g in expected]
    assert [g["name"] for g in expected] == (
        ["visual", "visual_no_decay", "head", "head_no_decay"] if no_decay else ["visual", "head"]
    )
    for got, want in zip(optimizer.param_groups, expected, strict=True):
        assert [id(p) for p in got["params"]] == [id(p) for p in want["params"]], want["name"]
        assert (got["lr"], got["weight_decay"]) == pytest.approx((want["lr"], want["weight_decay"])), want["name"]
    assert optimizer.defaults["betas"] == (0.8, 0.95) and optimizer.defaults["eps"] == 1e-6
    assert not scaler.is_enabled()


def test_engine_clips_the_gradient_norm():
    """SGD with lr 1: the weight change is minus the (clipped) gradient, so its norm is the bound."""

    class Stub(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.mean(dim=(1, 3, 4)))

    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (4, 2, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    base = Stub()
    reference = copy.deepcopy(base)
    nn.functional.cross_entropy(reference(normalize(clips)), labels).backward()
    grad = torch.cat([p.grad.flatten() for p in reference.parameters()])
    bound = 0.25 * float(grad.norm())

    def step(clip_grad_norm: float | None) -> torch.Tensor:
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = build_scheduler(
            opt, kind="multistep", epochs=1, warmup_epochs=0, iters_per_epoch=1, step_every=1, decay_step=[100]
        )
        train_one_epoch(
            model,
            [(clips, labels, None)],
            opt,
            sched,
            torch.amp.GradScaler("cpu", enabled=False),
            StepRecipe(device=torch.device("cpu"), num_frames=2, normalize=normalize, clip_grad_norm=clip_grad_norm),
        )
        return torch.cat(
            [(p1 - p0).detach().flatten() for p0, p1 in zip(base.parameters(), model.parameters(), strict=True)]
        )

    torch.testing.assert_close(step(None), -grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(step(bound), -grad * (bound / float(grad.norm())), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(step(10 * float(grad.norm())), -grad, rtol=1e-5, atol=1e-7)  # under the bound


def torchrun_train(cfg: Path, out: Path, *extra: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(ROOT / "train.py"),
        "--config",
        str(cfg),
        "--output",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_resume_continues_each_ranks_random_stream(tmp_path, data):
    """2 processes with stochastic depth and attention dropout, whose masks each rank draws from its
    own stream (seeded seed + rank): 1 epoch, stop, resume, 1 epoch equals 2 epochs in one go, in
    the weights and in every rank's RNG state."""
    cfg = write_config(tmp_path, data, network={"drop_out": 0.5}, epochs=2, lr=1e-2)
    torchrun_train(cfg, tmp_path / "ref")
    torchrun_train(cfg, tmp_path / "split", "--stop_after_epochs", "1")
    torchrun_train(cfg, tmp_path / "split")
    ref = torch.load(tmp_path / "ref" / "last_model.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "last_model.pt", weights_only=True)
    assert ref["config"]["network"]["drop_out"] == 0.5 and ref["epoch"] == split["epoch"] == 1
    assert len(ref["rng"]) == len(split["rng"]) == 2
    assert not torch.equal(ref["rng"][0]["torch"], ref["rng"][1]["torch"])  # two streams
    for rank in range(2):
        assert torch.equal(split["rng"][rank]["torch"], ref["rng"][rank]["torch"]), rank
    for key, value in ref["model"].items():
        assert torch.equal(split["model"][key], value), key


@pytest.mark.slow
def test_data_wait_is_measured_logged_and_alarmed(tmp_path, data):
    """A long epoch read without workers: log lines carry the data wait, metrics.csv its columns,
    and with a tiny `logging.data_wait_alarm` the warning names a remedy."""
    lines = (data / "train.txt").read_text()
    (tmp_path / "long.txt").write_text(lines * 3)  # 24 iterations of 1 clip: past the meter's warm-up
    cfg = write_config(tmp_path, data, epochs=1)
    out = tmp_path / "run"
    train.main(
        [
            "--config",
            str(cfg),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--opts",
            f"data.train_list={tmp_path / 'long.txt'}",
            "data.batch_size=1",
            "logging.print_freq=5",
            "logging.data_wait_alarm=0.000001",
        ]
    )
    log = (out / "log.txt").read_text()
    assert "data wait " in log and "per step" in log
    assert "data-bound: waiting for data takes" in log and "remedy: raise data.workers" in log
    with open(out / "metrics.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert 0 < float(row["data_wait_frac"]) < 1 and float(row["step_s"]) > float(row["data_wait_s"]) > 0


@pytest.mark.slow
def test_deferred_transform_trains_the_same_model(tmp_path, data):
    """`data.transform_device: cuda` defers the clip transform to the training device (here the CPU
    stands in): the weights after an epoch equal those of the usual CPU-side transform."""
    cfg = write_config(tmp_path, data, epochs=1)
    common = ["--config", str(cfg), "--device", "cpu", "--opts", "data.batch_size=2", "resume=null"]
    train.main([*common[:4], "--output", str(tmp_path / "cpu"), *common[4:]])
    train.main([*common[:4], "--output", str(tmp_path / "dev"), *common[4:], "data.transform_device=cuda"])
    a = torch.load(tmp_path / "cpu" / "last_model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "dev" / "last_model.pt", weights_only=True)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=1e-6, msg=key)


def test_solver_compile_compiles_before_training(tmp_path, data, monkeypatch):
    seen: list[Any] = []
    recorder = Recorder()
    monkeypatch.setattr(train, "compile_model", lambda model: seen.append((model, len(recorder.calls))) or model)
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    cfg = write_config(tmp_path, data, epochs=1)
    train.main(
        [
            "--config",
            str(cfg),
            "--output",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--opts",
            "solver.compile=true",
            "resume=null",
        ]
    )
    assert len(seen) == 1 and recorder.calls
    assert seen[0][1] == 0 and recorder.calls[0]["model"] is seen[0][0]  # compiled before training, and trained
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "solver.compile: the visual encoder and head are compiled" in log
    assert "solver.compile: first step 0.0 s (compilation included), then " in log  # the recorder's stats


@pytest.mark.slow
def test_validation_writes_per_class_numbers_that_add_up_to_top1(tmp_path, data):
    """Train-time validation writes val_per_class.csv (latest) and best_val_per_class.csv (best):
    one row per class whose correct counts sum to the epoch's top-1 in metrics.csv."""
    cfg = write_config(tmp_path, data, epochs=2)
    out = tmp_path / "run"
    train.main(["--config", str(cfg), "--output", str(out), "--device", "cpu"])
    with open(out / "metrics.csv", newline="") as fh:
        last = list(csv.DictReader(fh))[-1]
    with open(out / "val_per_class.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = [line.split(",", 1)[1] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    assert [r["name"] for r in rows] == names and {r["epoch"] for r in rows} == {"1"}
    correct, support = sum(int(r["top1_correct"]) for r in rows), sum(int(r["support"]) for r in rows)
    assert support == NUM_CLASSES  # one validation video per class
    assert 100.0 * correct / support == pytest.approx(float(last["val_top1"]), abs=1e-3)
    assert (out / "best_val_per_class.csv").is_file()
    with open(out / "metrics.csv", newline="") as fh:
        epochs = list(csv.DictReader(fh))
    best = max(epochs, key=lambda r: (float(r["val_top1"]), -int(r["epoch"])))  # the first epoch of the best top-1
    with open(out / "best_val_per_class.csv", newline="") as fh:
        best_rows = list(csv.DictReader(fh))
    assert {r["epoch"] for r in best_rows} == {best["epoch"]}
    correct = sum(int(r["top1_correct"]) for r in best_rows)
    assert 100.0 * correct / NUM_CLASSES == pytest.approx(float(best["val_top1"]), abs=1e-3)
    assert "per class: mean " in (out / "log.txt").read_text()
