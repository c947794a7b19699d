"""Guards of training (issue 20): argument ranges refused before anything runs, a non-finite loss
or gradient that stops the run with one line (or is skipped within `solver.skip_nonfinite`),
resume rules, and the signals of the training loop (the ETA, the `--stop_after_epochs` line)."""

from __future__ import annotations

import copy
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import app.fit
import train
from datasets.transforms import normalize
from tests.test_train_recipe import Recorder, data, run_train, scripted_validation, write_config
from utils.errors import UserError
from utils.optim import build_scheduler
from utils.training import EpochLoop, EpochReport, NonFiniteError, StepRecipe, train_one_epoch

__all__ = ["data"]  # the generated dataset fixture of test_train_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_lda_shrinkage_2_is_refused_at_argument_parsing():
    proc = subprocess.run(
        [sys.executable, "-m", "app.lda", "--features", "missing.npz", "--out", "x.pt", "--shrinkage", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --shrinkage: '2' is not a number in [0, 1], 'auto' or 'none'" in proc.stderr


@pytest.mark.parametrize("value", ["-0.1", "1.01", "nan", "inf", "abc"])
def test_lda_shrinkage_out_of_range(value, capsys):
    from app.lda import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--features", "missing.npz", "--out", "x.pt", "--shrinkage", value])
    assert exit_info.value.code == 2
    assert f"argument --shrinkage: '{value}' is not a number in [0, 1]" in capsys.readouterr().err


def test_lda_shrinkage_values():
    from app.lda import shrinkage_arg

    assert shrinkage_arg("0") == 0.0 and shrinkage_arg("1") == 1.0 and shrinkage_arg("0.25") == 0.25
    assert shrinkage_arg("auto") == "auto" and shrinkage_arg("none") is None


# ----------------------------------------------------------------------------- non-finite steps
class Stub(nn.Module):
    """A linear classifier over the clips' mean colour: tiny, deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean(dim=(1, 3, 4)))


def batches(n: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 256, (2, 2, 3, 8, 8), dtype=torch.uint8, generator=g),
            torch.tensor([i % 4, (i + 1) % 4]),
            None,
        )
        for i in range(n)
    ]


def poisoned(at: set[int], value: float = math.nan, grad: bool = False):
    """Cross-entropy, except on the calls in `at`: a loss of `value`, or (grad) a finite loss whose
    gradient is infinite (d sqrt(u)/du at u = 0)."""
    calls = {"n": 0}

    def objective(model, x, y):
        call = calls["n"]
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(x), y)
        if call in at:
            if grad:
                w = model.lin.weight.sum()
                return loss + torch.sqrt(w - w.detach())
            return loss * value
        return loss

    return objective


def constant_lr(opt, iters: int):
    return build_scheduler(
        opt, kind="multistep", epochs=1, warmup_epochs=0, iters_per_epoch=iters, step_every=1, decay_step=[100]
    )


def run_epoch(model, loader, objective, scaler=None, **kw):
    """One epoch of the engine on the CPU; `kw` are EpochLoop's and EpochReport's fields, and `accumulation`."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loop = {k: kw.pop(k) for k in ("epoch", "epochs", "skip_nonfinite", "skipped_before", "prior_step_s") if k in kw}
    accumulation = kw.pop("accumulation", 1)
    return train_one_epoch(
        model,
        loader,
        opt,
        constant_lr(opt, len(loader)),
        scaler or torch.amp.GradScaler("cpu", enabled=False),
        StepRecipe(torch.device("cpu"), 2, normalize, objective=objective, accumulation=accumulation),
        EpochLoop(**loop),
        EpochReport(**kw),
    )


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_loss_stops_before_the_step_and_names_where_and_why(value):
    torch.manual_seed(0)
    model, data = Stub(), batches(4)
    reference = copy.deepcopy(model)
    run_epoch(reference, data[:2], poisoned(set()))  # the two good steps before the bad one
    with pytest.raises(NonFiniteError) as err:
        run_epoch(model, data, poisoned({2}, value))
    msg = str(err.value)
    assert f"non-finite training at epoch 0, iteration 2 of 4: loss {value}" in msg
    assert "likely cause: a learning rate too high (the LR is 0.5 here; lower solver.lr)" in msg
    assert "stopped (solver.skip_nonfinite is 0)" in msg and "\n" not in msg
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)  # the bad step changed nothing


def test_an_infinite_gradient_with_a_finite_loss_stops_too():
    torch.manual_seed(0)
    with pytest.raises(NonFiniteError, match=r"iteration 1 of 3: gradient norm inf; likely cause"):
        run_epoch(Stub(), batches(3), poisoned({1}, grad=True))


def test_skip_nonfinite_skips_logs_and_counts_up_to_its_budget():
    """With solver.skip_nonfinite 2, two bad steps are skipped (the weights end as if those batches
    were not there: SGD at a constant LR) and the third stops the run, counting earlier epochs'."""
    torch.manual_seed(0)
    model, data = Stub(), batches(5)
    reference = copy.deepcopy(model)
    run_epoch(reference, [data[0], data[2], data[4]], poisoned(set()))
    lines: list[str] = []
    stats = run_epoch(model, data, poisoned({1, 3}), skip_nonfinite=2, log=lines.append, print_freq=0)
    assert stats.nonfinite_skipped == 2 and stats.steps == 3
    assert stats.samples == 6 and stats.loss == pytest.approx(stats.loss_sum / 6)  # the skipped clips left out
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert lines == [
        "non-finite step skipped at epoch 0, iteration 1 of 5: loss nan (skip 1 of at most solver.skip_nonfinite=2)",
        "non-finite step skipped at epoch 0, iteration 3 of 5: loss nan (skip 2 of at most solver.skip_nonfinite=2)",
    ]
    with pytest.raises(NonFiniteError, match=r"epoch 1, iteration 3 of 5: loss nan.*more than solver.skip_nonfinite=2"):
        run_epoch(Stub(), data, poisoned({1, 3}), skip_nonfinite=2, skipped_before=1, epoch=1)


def test_a_bad_loss_inside_an_accumulation_window_skips_the_whole_window():
    torch.manual_seed(0)
    model, data = Stub(), batches(4)
    reference = copy.deepcopy(model)
    run_epoch(reference, data[2:], poisoned(set()), accumulation=2)
    stats = run_epoch(model, data, poisoned({0}), accumulation=2, skip_nonfinite=1)
    assert stats.nonfinite_skipped == 1 and stats.steps == 1
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_the_fp16_scaler_skips_overflows_itself_and_a_collapsed_scale_stops():
    """An enabled GradScaler skips a step whose gradient overflows (not counted against
    solver.skip_nonfinite: no double count); gradients that overflow at every scale stop the run."""
    torch.manual_seed(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    stats = run_epoch(Stub(), batches(3), poisoned({1}, grad=True), scaler=scaler)
    assert stats.nonfinite_skipped == 0 and stats.steps == 3 and scaler.get_scale() == 512.0
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**-13)
    with pytest.raises(NonFiniteError, match=r"iteration 1 of 3: fp16 loss scale 3.05e-05: the gradients overflow"):
        run_epoch(Stub(), batches(3), poisoned({0, 1, 2}, grad=True), scaler=scaler)


def test_non_finite_weights_are_named_as_the_cause():
    torch.manual_seed(0)
    model = Stub()
    with torch.no_grad():
        model.lin.weight[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="likely cause: the weights are non-finite"):
        run_epoch(model, batches(2), poisoned(set()))


# ----------------------------------------------------------------------------- the ETA
class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class SlowLoader:
    """Batches that take `first` seconds to arrive at the start of an epoch (the workers start) and
    `wait` seconds after that, on a fake clock."""

    def __init__(self, data: list, clock: FakeClock, first: float, wait: float) -> None:
        self.data, self.clock, self.first, self.wait = data, clock, first, wait

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        for i, batch in enumerate(self.data):
            self.clock.t += self.first if i == 0 else self.wait
            yield batch


def test_the_first_eta_is_the_steady_rate_times_the_iterations_left():
    """Start-up 30 s, then 2 s per iteration (0.5 s data + 1.5 s compute), 4 iterations x 3 epochs:
    after iteration 1 of epoch 0, 10 iterations x 2 s are left (the mean over both steps said
    0:02:47), iteration 0 says it is measuring, and epoch 1 starts from epoch 0's rate."""
    clock = FakeClock()

    def objective(model, x, y):
        clock.t += 1.5
        return nn.functional.cross_entropy(model(x), y)

    torch.manual_seed(0)
    model, lines = Stub(), []
    loader = SlowLoader(batches(4), clock, first=30.0, wait=0.5)
    stats = run_epoch(model, loader, objective, epochs=3, print_freq=1, log=lines.append, clock=clock)
    etas = [line.split("eta: ")[1].split("\t")[0] for line in lines]
    assert etas == ["measuring", "0:00:20", "0:00:18", "0:00:16"]
    assert stats.step_s == 2.0 and stats.first_step_s == 31.5 and stats.seconds == 37.5
    lines.clear()
    run_epoch(
        model, loader, objective, epochs=3, epoch=1, print_freq=2, log=lines.append, clock=clock, prior_step_s=2.0
    )
    assert [line.split("eta: ")[1].split("\t")[0] for line in lines] == ["0:00:14", "0:00:10"]


# ----------------------------------------------------------------------------- train.py: resume, stop, non-finite
def test_resume_of_a_complete_run_rewrites_nothing_and_fewer_epochs_are_refused(tmp_path, data, monkeypatch, capsys):
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {0: 10.0, 1: 20.0, 2: 30.0}, recorder)
    cfg, out = write_config(tmp_path, data, epochs=2), tmp_path / "run"
    run_train(cfg, out)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"config.yaml", "log.txt", "metrics.csv", "last_model.pt"} <= set(files)
    capsys.readouterr()

    result = run_train(cfg, out)  # the same command again (resume: auto): complete, exit 0
    assert result["complete"] and result["best"] == 20.0 and len(recorder.calls) == 2
    assert (
        "has trained all 2 epochs of solver.epochs: the run is complete; nothing was trained" in capsys.readouterr().out
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files

    with pytest.raises(UserError) as err:  # issue 20: `resume=auto solver.epochs=1` on a finished 2-epoch run
        run_train(cfg, out, "--opts", "solver.epochs=1")
    assert "has trained 2 epochs, more than solver.epochs=1; a resumed run cannot take epochs back" in str(err.value)
    assert (out / "config.yaml").read_bytes() == files["config.yaml"]
    assert torch.load(out / "last_model.pt", weights_only=True)["config"]["solver"]["epochs"] == 2

    run_train(cfg, out, "--opts", "solver.epochs=3")  # more epochs: trains epoch 2 only, recorded
    assert [c["epoch"] for c in recorder.calls] == [0, 1, 2]
    assert yaml.safe_load((out / "config.yaml").read_text())["solver"]["epochs"] == 3


def test_stop_after_epochs_line_counts_the_epochs_done(tmp_path, data, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {0: 10.0, 1: 20.0, 2: 30.0}, recorder)
    cfg, out = write_config(tmp_path, data, epochs=3), tmp_path / "run"
    run_train(cfg, out, "--stop_after_epochs", "1")
    assert [c["epoch"] for c in recorder.calls] == [0]
    assert torch.load(out / "last_model.pt", weights_only=True)["epoch"] == 0
    stop = [line for line in (out / "log.txt").read_text().splitlines() if "stopped after" in line]
    assert stop[-1].endswith(
        f"stopped after 1 of 3 epochs (1 in this run, --stop_after_epochs): continue with the same command and "
        f"--opts resume={out / 'last_model.pt'}"
    )
    run_train(cfg, out, "--stop_after_epochs", "1")
    stop = [line for line in (out / "log.txt").read_text().splitlines() if "stopped after" in line]
    assert "stopped after 2 of 3 epochs (1 in this run" in stop[-1] and len(stop) == 2


@pytest.mark.slow
def test_nan_stops_train_py_keeping_the_checkpoint_and_rows_and_a_resume_may_skip_it(tmp_path, data, monkeypatch):
    """The real engine on the tiny model: the loss of epoch 1's first step is NaN. The run stops with
    one line naming it, last_model.pt of epoch 0 and metrics.csv's row 0 kept; resumed with
    solver.skip_nonfinite=1 the step is skipped, logged and counted (metrics.csv, checkpoint)."""
    real = train.make_objective

    def make_objective(loss_type, text_tower):
        objective, calls = real(loss_type, text_tower=text_tower), {"n": 0}

        def poisoned_objective(model, x, y):
            calls["n"] += 1
            loss = objective(model, x, y)
            return loss * math.nan if calls["n"] == poison_at else loss

        return poisoned_objective

    monkeypatch.setattr(train, "make_objective", make_objective)
    cfg, out = write_config(tmp_path, data, epochs=2), tmp_path / "run"
    poison_at = 3  # 2 iterations per epoch: epoch 1, iteration 0
    with pytest.raises(NonFiniteError) as err:
        run_train(cfg, out, "--opts", "logging.print_freq=0")
    msg = str(err.value)
    assert "non-finite training at epoch 1, iteration 0 of 2: loss nan; likely cause: a learning rate too high" in msg
    assert f"kept: {out / 'last_model.pt'} (epoch 0) and every finished epoch's metrics.csv row" in msg
    assert torch.load(out / "last_model.pt", weights_only=True)["epoch"] == 0
    with open(out / "metrics.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0"]

    poison_at = 1  # the resumed run's first step is the same epoch 1, iteration 0
    result = run_train(cfg, out, "--opts", "logging.print_freq=0", "solver.skip_nonfinite=1")
    assert "best" in result
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["epoch"], r["nonfinite_skipped"]) for r in rows] == [("0", "0"), ("1", "1")]
    assert torch.load(out / "last_model.pt", weights_only=True)["nonfinite_skipped"] == 1
    log = (out / "log.txt").read_text()
    assert (
        "non-finite step skipped at epoch 1, iteration 0 of 2: loss nan (skip 1 of at most solver.skip_nonfinite=1)"
        in log
    )


DDP_WORKER = """
import math, sys
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from datasets.transforms import normalize
from utils import distributed as D
from utils.optim import build_scheduler
from utils.training import EpochLoop, NonFiniteError, StepRecipe, train_one_epoch

info = D.init_distributed(device="cpu")
torch.manual_seed(0)
model = DDP(nn.Linear(3, 4))
calls = {"n": 0}

def objective(m, x, y):
    calls["n"] += 1
    loss = nn.functional.cross_entropy(m(x.mean(dim=(1, 3, 4))), y)
    return loss * math.nan if info.rank == 1 and calls["n"] == 2 else loss   # rank 1 only, iteration 1

g = torch.Generator().manual_seed(info.rank)
data = [(torch.randint(0, 256, (2, 2, 3, 8, 8), dtype=torch.uint8, generator=g), torch.tensor([0, 1]), None)] * 3
opt = torch.optim.SGD(model.parameters(), lr=0.5)
sched = build_scheduler(opt, kind="multistep", epochs=1, warmup_epochs=0, iters_per_epoch=3, decay_step=[9])
try:
    recipe = StepRecipe(torch.device("cpu"), 2, normalize, objective=objective, world_size=2)
    stats = train_one_epoch(model, data, opt, sched, torch.amp.GradScaler("cpu", enabled=False), recipe,
                            EpochLoop(skip_nonfinite=int(sys.argv[1])))
    w = torch.cat([p.detach().flatten() for p in model.parameters()])[None]
    both = D.all_gather_tensor(w)
    result = f"skipped {stats.nonfinite_skipped}, steps {stats.steps}, same {torch.equal(both[0], both[1])}"
except NonFiniteError as err:
    result = f"stopped: {err}"
with open(f"{sys.argv[2]}/rank{info.rank}.txt", "w") as fh:
    fh.write(result)
D.cleanup()
"""


@pytest.mark.slow
@pytest.mark.parametrize("budget", [0, 1])
def test_ddp_ranks_agree_on_a_non_finite_loss_of_one_rank(tmp_path, budget):
    """Only rank 1's loss is NaN: both ranks stop at the same step (no rank left waiting in an
    all-reduce), or with a budget both skip it and keep identical weights."""
    import os
    import socket

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TEXT4VIS_DIST_TIMEOUT": "60"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(script),
            str(budget),
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    if budget:
        assert lines == ["skipped 1, steps 2, same True"] * 2
    else:
        where = "stopped: non-finite training at epoch 0, iteration 1 of 3: "
        assert lines[0].startswith(where + "a non-finite loss on another rank")
        assert lines[1].startswith(where + "loss nan")


@pytest.mark.slow
def test_cli_non_finite_pretrained_weights_and_an_infinite_lr_each_give_one_line(tmp_path, data):
    """What a user sees: train.py with `pretrain:` weights holding a NaN stops at the first step with
    one line naming the cause, exit 1, no traceback; `solver.lr=.inf` is refused before anything runs."""
    import os

    from modules.model_builder import build_model
    from utils.config import load_config

    cfg = write_config(tmp_path, data, epochs=2)
    torch.manual_seed(0)
    state = build_model(load_config(cfg), [f"class {i}" for i in range(4)]).state_dict()
    name = next(k for k in state if k.startswith("visual.") and state[k].is_floating_point())
    state[name].view(-1)[0] = math.nan
    torch.save({"model": state}, tmp_path / "nan.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "run"
    base = [sys.executable, "train.py", "--config", str(cfg), "--output", str(out), "--device", "cpu", "--opts"]
    for opts, needle in (
        (["solver.lr=.inf"], "key 'solver.lr' has value inf; it must be a finite number >= 0 and <= 1"),
        (
            [f"pretrain={tmp_path / 'nan.pt'}", "resume=null"],
            "non-finite training at epoch 0, iteration 0 of 2: loss nan; likely cause: the weights are non-finite",
        ),
    ):
        proc = subprocess.run(base + opts, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]
    assert "kept: no checkpoint yet" in errors[0] and not (out / "last_model.pt").exists()


# ----------------------------------------------------------------------------- tests that bite (issue 20, item 7)
def saves_recorded(monkeypatch) -> list[tuple[int, str]]:
    """(epoch, file name) of every checkpoint train.py writes, in order (still written)."""
    saved: list[tuple[int, str]] = []
    real = app.fit.save_checkpoint

    def record(state, path):
        saved.append((state["epoch"], Path(path).name))
        return real(state, path)

    monkeypatch.setattr(app.fit, "save_checkpoint", record)
    return saved


def metrics_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_eval_freq_validates_every_n_epochs_and_after_the_last_and_saves_with_each(tmp_path, data, monkeypatch):
    """5 epochs, logging.eval_freq 2: validation (and the checkpoints) after epochs 1 and 3, and after
    the final epoch 4 although 5 is not a multiple of 2; metrics.csv has all five rows."""
    recorder, validated = Recorder(), []
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    top1 = {1: 10.0, 3: 30.0, 4: 20.0}

    def validate(self, model):
        validated.append(recorder.calls[-1]["epoch"])
        return {"top1": top1[validated[-1]], "top5": 100.0}

    monkeypatch.setattr(train.Validation, "__call__", validate)
    saved = saves_recorded(monkeypatch)
    cfg, out = write_config(tmp_path, data, epochs=5), tmp_path / "run"
    run_train(cfg, out, "--opts", "logging.eval_freq=2")
    assert validated == [1, 3, 4]
    assert saved == [
        (1, "model_best.pt"),
        (1, "last_model.pt"),
        (3, "model_best.pt"),
        (3, "last_model.pt"),
        (4, "last_model.pt"),  # the save after the final epoch
    ]
    rows = metrics_rows(out)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["val_top1"] for r in rows] == ["", "10.000", "", "30.000", "20.000"]
    assert [r["best_top1"] for r in rows] == ["", "10.000", "", "30.000", "30.000"]
    assert torch.load(out / "model_best.pt", weights_only=True)["epoch"] == 3


def test_stopping_at_an_epoch_without_validation_still_saves_it(tmp_path, data, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {1: 10.0, 2: 20.0}, recorder)
    saved = saves_recorded(monkeypatch)
    cfg, out = write_config(tmp_path, data, epochs=3), tmp_path / "run"
    run_train(cfg, out, "--stop_after_epochs", "1", "--opts", "logging.eval_freq=2")
    assert saved == [(0, "last_model.pt")] and not (out / "model_best.pt").exists()
    run_train(cfg, out, "--opts", "logging.eval_freq=2")  # resumed: epoch 1 validated, epoch 2 the last
    assert saved[1:] == [(1, "model_best.pt"), (1, "last_model.pt"), (2, "model_best.pt"), (2, "last_model.pt")]


@pytest.mark.parametrize(
    "top1, best_epoch", [({0: 50.0, 1: 50.0, 2: 50.0}, 0), ({0: 40.0, 1: 50.0, 2: 50.0}, 1), ({0: 1, 1: 2, 2: 3}, 2)]
)
def test_a_tie_keeps_the_earlier_best_epoch(tmp_path, data, monkeypatch, top1, best_epoch):
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, top1, recorder)
    saved = saves_recorded(monkeypatch)
    cfg, out = write_config(tmp_path, data, epochs=3), tmp_path / "run"
    result = run_train(cfg, out)
    best = torch.load(out / "model_best.pt", weights_only=True)
    assert best["epoch"] == best_epoch and result["best"] == max(top1.values())
    assert [e for e, name in saved if name == "model_best.pt"][-1] == best_epoch
    assert [r["best_top1"] for r in metrics_rows(out)][-1] == f"{max(top1.values()):.3f}"


@pytest.mark.slow
def test_metrics_lr_columns_hold_the_last_iterations_rate_of_each_group(tmp_path, data, monkeypatch):
    """The real engine, cosine over 2 epochs of 2 iterations, LR held for 1 iteration, no warm-up: the
    last iteration of epoch k runs at lr * (1 + cos(pi (k + 1/2) / 2)) / 2, the visual group at
    clip_ratio (0.5) times that."""
    monkeypatch.setattr(train.Validation, "__call__", lambda self, model: {"top1": 1.0, "top5": 2.0})
    cfg, out = write_config(tmp_path, data, epochs=2), tmp_path / "run"
    run_train(cfg, out, "--opts", "solver.lr_step_every=1", "logging.print_freq=0")
    rows = metrics_rows(out)
    for row, e in zip(rows, (0.5, 1.5), strict=True):
        head = 1e-3 * 0.5 * (1 + math.cos(math.pi * e / 2))
        assert row["lr"] == f"{head:.6e}" and row["lr_visual"] == f"{0.5 * head:.6e}", row
    assert rows[0]["lr"] == "8.535534e-04" and rows[1]["lr"] == "1.464466e-04"


def test_the_frame_count_guard_of_a_list(tmp_path, data):
    """data.min_frames drops from training and validation the videos a frames list gives fewer
    frames (exactly min_frames is kept), test keeps all; a negative count is refused with its line;
    a list whose every video is too short is refused."""
    from datasets import build_dataset
    from utils.config import load_config, replace

    lines = (data / "train.txt").read_text().splitlines()
    fields = [line.split() for line in lines]
    fields[0][1], fields[1][1] = "7", "8"
    listed = tmp_path / "short.txt"
    listed.write_text("\n".join(" ".join(f) for f in fields) + "\n")
    cfg = load_config(
        write_config(tmp_path, data), ["data.min_frames=8", f"data.train_list={listed}", f"data.val_list={listed}"]
    )
    for split, dropped in (("train", {fields[0][0]}), ("val", {fields[0][0]}), ("test", set())):
        kept = {r.path for r in build_dataset(cfg, split).records}
        assert kept == {f[0] for f in fields} - dropped, split
    fields[2][1] = "-1"
    listed.write_text("\n".join(" ".join(f) for f in fields) + "\n")
    with pytest.raises(UserError, match=r"short\.txt:3: frame count -1 is negative"):
        build_dataset(cfg, "train")
    cfg = replace(cfg, **{"data.min_frames": 9})
    fields[2][1] = "8"
    listed.write_text("\n".join(" ".join(f) for f in fields) + "\n")
    with pytest.raises(UserError, match=r"short\.txt: every video has fewer than data.min_frames=9 frames"):
        build_dataset(cfg, "train")


def test_the_skip_budget_counts_over_epochs_and_across_a_resume(tmp_path, data, monkeypatch):
    """Each epoch's engine gets the steps skipped before it (earlier epochs, earlier invocations via
    the checkpoint), so solver.skip_nonfinite bounds the whole run."""
    recorder = Recorder()

    def one_skip_per_epoch(*args, **kw):
        stats = recorder(*args, **kw)
        stats.nonfinite_skipped = 1
        return stats

    monkeypatch.setattr(app.fit, "train_one_epoch", one_skip_per_epoch)
    scripted_validation(monkeypatch, {0: 1.0, 1: 2.0, 2: 3.0}, recorder)
    cfg, out = write_config(tmp_path, data, epochs=3, skip_nonfinite=5), tmp_path / "run"
    run_train(cfg, out, "--stop_after_epochs", "2")
    assert torch.load(out / "last_model.pt", weights_only=True)["nonfinite_skipped"] == 2
    run_train(cfg, out)
    assert [(c["epoch"], c["skipped_before"], c["skip_nonfinite"]) for c in recorder.calls] == [
        (0, 0, 5),
        (1, 1, 5),
        (2, 2, 5),
    ]
    assert [r["nonfinite_skipped"] for r in metrics_rows(out)] == ["1", "1", "1"]


def test_an_enabled_loss_scalers_state_is_saved_and_restored():
    """With fp16 `amp` the GradScaler's scale and growth tracker belong to the run's state: a resume
    that lost them would restart at 65536 and skip steps the uninterrupted run did not."""
    from utils.checkpoint import RunPosition, restore_training_state, training_state

    torch.manual_seed(0)
    model = Stub()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    run_epoch(model, batches(3), poisoned({1}, grad=True), scaler=scaler)  # one overflow: 512, tracker 1
    state = training_state(
        model=model,
        optimizer=None,
        scheduler=None,
        scaler=scaler,
        at=RunPosition(epoch=0, iteration=3, best_top1=0.0),
        rng=None,
        config=None,
    )
    fresh = torch.amp.GradScaler("cpu", growth_interval=3)
    restore_training_state({**state, "optimizer": {}}, model=Stub(), optimizer=None, scheduler=None, scaler=fresh)
    assert fresh.get_scale() == scaler.get_scale() == 512.0
    assert fresh.state_dict()["_growth_tracker"] == scaler.state_dict()["_growth_tracker"] == 1


def test_a_list_giving_zero_frames_is_a_bad_sample_when_the_count_comes_from_the_list(tmp_path):
    from datasets.decoding import BadSampleError, FrameFolderReader

    reader = FrameFolderReader("img_{:05d}.jpg", 1, "list")
    assert reader.num_frames(tmp_path, 7) == 7
    with pytest.raises(BadSampleError, match="the list gives 0 frames"):
        reader.num_frames(tmp_path / "video", 0)


def test_frames_of_different_sizes_in_one_folder_are_a_bad_sample(tmp_path):
    from PIL import Image

    from datasets.decoding import BadSampleError, FrameFolderReader

    for i, size in enumerate([(8, 8), (8, 6), (8, 6)], start=1):
        Image.new("RGB", size, (i * 40, 0, 0)).save(tmp_path / f"img_{i:05d}.jpg")
    with pytest.raises(BadSampleError, match=r"frames of .* differ in size: \[\(6, 8, 3\), \(8, 8, 3\)\]"):
        FrameFolderReader().read(tmp_path, [0, 1, 2])


def test_validating_a_runs_checkpoint_leaves_its_config_yaml(tmp_path, data, monkeypatch):
    """`resume=auto solver.evaluate=true` on a run folder validates its checkpoint; config.yaml stays
    the config that trained it (log.txt records the evaluation's config)."""
    recorder = Recorder()
    monkeypatch.setattr(app.fit, "train_one_epoch", recorder)
    scripted_validation(monkeypatch, {0: 10.0, 1: 20.0}, recorder)
    cfg, out = write_config(tmp_path, data, epochs=2), tmp_path / "run"
    run_train(cfg, out)
    before = (out / "config.yaml").read_bytes()
    result = run_train(cfg, out, "--opts", "solver.evaluate=true")
    assert result["top1"] == 20.0 and len(recorder.calls) == 2  # validated, nothing trained
    assert (out / "config.yaml").read_bytes() == before
    assert yaml.safe_load(before)["solver"]["evaluate"] is False
