"""The failure catalogue: every bad input a user can give, run through the real entry point,
gives a non-zero exit and one line naming the culprit (file, line, key or flag), no traceback,
and loses nothing; kills at the worst moments lose nothing either; crafted pickles never run.

Each case is a row of a table; the CLI cases run as subprocesses (what a user sees), the others
call the entry point's `main` and check the UserError that `run_cli` prints as that one line.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from utils.errors import UserError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run(*args: str, cwd: Path = ROOT, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line, and it names every needle."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


class Payload:
    """A crafted object: unpickling it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config):
    """Generated data, a config, and a run folder trained for one epoch by train.py."""
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("failures")
    data = base / "data"
    generate(data, classes=4, videos_per_class=2, val_videos_per_class=1, frames=6, size=64, fmt="frames", seed=0)
    cfg = tiny_config(
        data, seed=5, batch_size=4, solver={"epochs": 3, "lr": 1e-3, "lr_step_every": 1}, logging={"print_freq": 1}
    )
    cfg_path = base / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = base / "run"
    proc = run("train.py", "--config", str(cfg_path), "--output", str(run_dir), "--opts", "solver.epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "base": base,
        "data": data,
        "cfg": cfg,
        "cfg_path": str(cfg_path),
        "run": run_dir,
        "ckpt": str(run_dir / "last_model.pt"),
    }


def write_cfg(setup, name: str, **sections) -> str:
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in setup["cfg"].items()}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    path = setup["base"] / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# ----------------------------------------------------------------------------- configs and options
CONFIG_CASES = {
    "missing config": ("", ["--config", "{base}/nope.yaml"], ["config file not found", "nope.yaml"]),
    "empty config": ("", ["--config", "{base}/empty.yaml"], ["empty.yaml", "the config file is empty"]),
    "misplaced key": ("lr: 0.1\n", ["--config", "{base}/bad.yaml"], ["bad.yaml", "'lr'", "solver.lr"]),
    "wrong type": ("", ["--config", "{cfg}", "--opts", "data.batch_size=abc"], ["data.batch_size", "'abc'"]),
    "negative epochs": ("", ["--config", "{cfg}", "--opts", "solver.epochs=-1"], ["solver.epochs", ">= 1"]),
    "zero batch": ("", ["--config", "{cfg}", "--opts", "data.batch_size=0"], ["data.batch_size", ">= 1"]),
    "opts without =": ("", ["--config", "{cfg}", "--opts", "solver.epochs"], ["--opts", "key=value"]),
    "input size": ("", ["--config", "{cfg}", "--opts", "data.input_size=32"], ["data.input_size is 32", "112"]),
    "label CSV missing": (
        "",
        ["--config", "{cfg}", "--opts", "data.label_list={base}/none.csv"],
        ["label CSV not found", "none.csv"],
    ),
    "train list missing": ("", ["--config", "{cfg}", "--opts", "data.train_list={base}/none.txt"], ["none.txt"]),
    "train root not a folder": (
        "",
        ["--config", "{cfg}", "--opts", "data.train_root={base}/cfg.yaml"],
        ["data.train_root", "not a folder"],
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_train_config_and_data_errors(setup, case):
    content, args, needles = CONFIG_CASES[case]
    fmt = {"base": setup["base"], "cfg": setup["cfg_path"]}
    if content or case == "empty config":
        target = "empty.yaml" if case == "empty config" else "bad.yaml"
        (setup["base"] / target).write_text(content)
    out = setup["base"] / f"out_{case.replace(' ', '_')}"
    proc = run("train.py", *[a.format(**fmt) for a in args], "--output", str(out))
    assert_one_clear_line(proc, *[n.format(**fmt) for n in needles])


def test_data_file_errors_name_file_and_line(setup, tmp_path):
    data = setup["data"]
    labels = tmp_path / "dup.csv"
    labels.write_text("id,name\n0,a\n1,b\n2,a\n3,c\n")
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text((data / "train.txt").read_text().splitlines()[0] + "\nclass_x/vid 8\n")
    out_of_range = tmp_path / "range.txt"
    out_of_range.write_text("class_x/vid 8 7\n")
    cases = [
        (f"data.label_list={labels}", [f"{labels}:4", "'a' repeats line 2"]),
        (f"data.train_list={bad_list}", [f"{bad_list}:2", "the line has 2 fields"]),
        (f"data.train_list={out_of_range}", [f"{out_of_range}:1", "label 7 is outside the 4 classes"]),
    ]
    for opt, needles in cases:
        proc = run("train.py", "--config", setup["cfg_path"], "--output", str(tmp_path / "o"), "--opts", opt)
        assert_one_clear_line(proc, *needles)


def test_broken_frame_names_the_file(setup, tmp_path):
    import shutil

    frames = tmp_path / "frames"
    shutil.copytree(setup["data"] / "frames", frames)
    victim = sorted(frames.glob("*/*/img_00001.jpg"))[0]
    victim.write_bytes(b"\xff\xd8 not a jpeg")
    proc = run(
        "test.py",
        "--weights",
        setup["ckpt"],
        "--output",
        str(tmp_path / "o"),
        "--opts",
        f"data.val_root={frames}",
        f"data.val_list={setup['data'] / 'train.txt'}",
    )
    assert_one_clear_line(proc, victim.parent.name)


# ----------------------------------------------------------------------------- weights files
def test_weights_file_errors(setup, tmp_path):
    (tmp_path / "cfg_as_weights.yaml").write_text(yaml.safe_dump(setup["cfg"]))
    (tmp_path / "list.txt").write_text("a 1 0\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    good = Path(setup["ckpt"]).read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "norun").mkdir()
    cases = {
        "missing.pt": ["weights file not found", "missing.pt"],
        "cfg_as_weights.yaml": ["cfg_as_weights.yaml", "not a PyTorch checkpoint", "YAML"],
        "list.txt": ["list.txt", "not a PyTorch checkpoint", "text file"],
        "empty.pt": ["empty.pt", "the file is empty"],
        "truncated.pt": ["truncated.pt"],
        "norun": ["norun", "folder without model_best.pt or last_model.pt"],
    }
    for name, needles in cases.items():
        proc = run(
            "test.py", "--weights", str(tmp_path / name), "--config", setup["cfg_path"], "--output", str(tmp_path / "o")
        )
        assert_one_clear_line(proc, *needles)


def test_architecture_mismatch_lists_keys(setup, tmp_path):
    cfg = write_cfg(setup, "transf.yaml", network={"sim_header": "Transf"})
    proc = run("test.py", "--config", cfg, "--weights", setup["ckpt"], "--output", str(tmp_path / "o"))
    assert_one_clear_line(proc, "does not match the model", "fusion_model.")


def test_relabelling_by_row_refused(setup, tmp_path):
    labels = tmp_path / "animals.csv"
    labels.write_text("id,name\n0,cat\n1,dog\n2,fish\n")
    video = str(next((setup["data"] / "frames").glob("*/*")))
    proc = run("predict.py", "--weights", setup["ckpt"], "--labels", str(labels), video)
    assert_one_clear_line(proc, "cannot score the class names given (cat, dog, fish)", "orthogonal")


def test_pickle_payloads_never_run(setup, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    video = str(next((setup["data"] / "frames").glob("*/*")))
    # as --weights of every evaluation entry point
    for script in ("test.py", "test_zeroshot.py"):
        assert_one_clear_line(
            run(script, "--weights", str(evil), "--config", setup["cfg_path"], "--output", str(tmp_path / "o")),
            "evil.pt",
            "Python objects",
        )
    assert_one_clear_line(
        run("predict.py", "--weights", str(evil), "--config", setup["cfg_path"], video), "evil.pt", "Python objects"
    )
    # as network.pretrained of train.py (and named in a config): refused, naming the flag
    assert_one_clear_line(
        run(
            "train.py",
            "--config",
            setup["cfg_path"],
            "--output",
            str(tmp_path / "t"),
            "--opts",
            f"network.pretrained={evil}",
        ),
        "evil.pt",
        "--trust_pickle",
    )
    # a clean checkpoint whose stored config names the payload: evaluating it reads no other file
    ckpt = torch.load(setup["ckpt"], weights_only=True)
    ckpt["config"]["network"]["pretrained"] = str(evil)
    torch.save(ckpt, tmp_path / "clean_but_pointing.pt")
    proc = run("predict.py", "--weights", str(tmp_path / "clean_but_pointing.pt"), video)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    # the explicit flag is the only way in, and it is honoured for that file only
    proc = run(
        "train.py",
        "--config",
        setup["cfg_path"],
        "--output",
        str(tmp_path / "t2"),
        "--trust_pickle",
        str(tmp_path / "other.pt"),
        "--opts",
        f"network.pretrained={evil}",
    )
    assert_one_clear_line(proc, "--trust_pickle")
    assert not marker.exists()


def test_extract_and_export_refuse_pickles_unless_the_flag_names_the_file(setup, tmp_path):
    # a checkpoint without class embeddings (as the original's) is built from the config, whose
    # network.pretrained is a pickled file: refused, unless --trust_pickle names it
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    ckpt = torch.load(setup["ckpt"], weights_only=True)
    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in ckpt["model"].items() if k != "class_embeddings"}, bare)
    video = str(next((setup["data"] / "frames").glob("*/*")))
    tools = {
        "app.extract": ["--out", str(tmp_path / "e.npz"), "--device", "cpu", video],
        "app.export": ["--out", str(tmp_path / "m.pt")],
    }
    for tool, args in tools.items():
        common = ["-m", tool, "--weights", str(bare), "--config", setup["cfg_path"], *args]
        opts = ["--opts", f"network.pretrained={evil}"]
        assert_one_clear_line(run(*common, *opts), "evil.pt", "--trust_pickle")
        assert not marker.exists(), tool
        # the flag reaches the model builder of each tool: the file is then unpickled (the payload runs)
        run(*common, "--trust_pickle", str(evil), *opts)
        assert marker.exists(), tool
        marker.unlink()


# ----------------------------------------------------------------------------- run folders and resume
def test_output_under_a_regular_file(setup, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run("train.py", "--config", setup["cfg_path"], "--output", str(tmp_path / "afile" / "run"))
    assert_one_clear_line(proc, "--output", "afile", "cannot create the folder")


def test_disk_full_during_save_keeps_the_old_checkpoint(setup, tmp_path, monkeypatch):
    from utils import fileio
    from utils.checkpoint import save_checkpoint

    target = tmp_path / "last_model.pt"
    save_checkpoint({"v": torch.ones(2)}, target)

    def full(fh, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(UserError, match="cannot write .*last_model.pt: No space left on device .*unchanged"):
        save_checkpoint({"v": torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last_model.pt"]  # no temporary left behind


def test_resume_refuses_changed_settings_and_keeps_config(setup, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(setup["run"], run_dir)
    before = (run_dir / "config.yaml").read_text()
    proc = run(
        "train.py", "--config", setup["cfg_path"], "--output", str(run_dir), "--opts", "resume=auto", "solver.lr=0.05"
    )
    assert_one_clear_line(proc, "solver.lr: 0.001 -> 0.05", "pretrain=")
    assert (run_dir / "config.yaml").read_text() == before
    # more epochs is allowed, logged, and recorded
    proc = run(
        "train.py", "--config", setup["cfg_path"], "--output", str(run_dir), "--opts", "resume=auto", "solver.epochs=2"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resume: solver.epochs: 1 -> 2" in (run_dir / "log.txt").read_text()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["solver"]["epochs"] == 2
    assert torch.load(run_dir / "last_model.pt", weights_only=True)["config"]["solver"]["epochs"] == 2


def test_checkpoints_get_the_usual_permissions(setup):
    for name in ("last_model.pt", "model_best.pt", "metrics.csv", "config.yaml"):
        mode = (setup["run"] / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- kills
KILL_AT = textwrap.dedent("""
    import os, signal, sys
    import utils.fileio as fio
    target, nth = sys.argv[1], int(sys.argv[2])
    real, seen = fio._atomic_write, []
    def dying(path, write, *rest):
        if path.name == target:
            seen.append(path)
            if len(seen) == nth:  # die with the temporary file half written
                def half(fh):
                    fh.write(b"PK half a checkpoint"); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)
                return real(path, half, *rest)
        return real(path, write, *rest)
    fio._atomic_write = dying
    sys.argv = ["train.py"] + sys.argv[3:]
    import train
    from utils.errors import run_cli
    run_cli(train.main)
""")

DETERMINISTIC = ("epoch", "iteration", "train_loss", "lr", "lr_visual", "val_top1", "val_top5", "best_top1")


def _rows(path: Path) -> list[tuple]:
    with open(path, newline="") as fh:
        return [tuple(r[k] for k in DETERMINISTIC) for r in csv.DictReader(fh)]


def _same_checkpoint(a: Path, b: Path) -> None:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert (x["epoch"], x["best_top1"]) == (y["epoch"], y["best_top1"])
    for key, value in x["model"].items():
        assert torch.equal(value, y["model"][key]), key


@pytest.mark.parametrize("victim", ["model_best.pt", "last_model.pt"])
def test_kill_during_checkpoint_write_then_resume_loses_nothing(setup, tmp_path, victim):
    args = ["--config", setup["cfg_path"], "--opts", "solver.epochs=3"]
    ref = tmp_path / "ref"
    assert run("train.py", *args[:2], "--output", str(ref), *args[2:]).returncode == 0
    log = (ref / "log.txt").read_text()
    best_saves = log.count("model_best.pt (best)")
    assert best_saves >= 1, log
    nth = best_saves if victim == "model_best.pt" else 3  # the last write of each file
    out = tmp_path / "killed"
    proc = run("-c", KILL_AT, victim, str(nth), *args[:2], "--output", str(out), *args[2:])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    proc = run("train.py", *args[:2], "--output", str(out), *args[2:], "resume=auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _same_checkpoint(ref / "model_best.pt", out / "model_best.pt")
    _same_checkpoint(ref / "last_model.pt", out / "last_model.pt")
    assert _rows(ref / "metrics.csv") == _rows(out / "metrics.csv")
    assert not list(out.glob(".*.tmp"))


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        kids += [int(k) for k in text.split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _long_training(setup, tmp_path, workers: int) -> list[str]:
    lines = (setup["data"] / "train.txt").read_text()
    (tmp_path / "long.txt").write_text(lines * 200)
    return [
        "--config",
        setup["cfg_path"],
        "--output",
        str(tmp_path / "long"),
        "--opts",
        f"data.train_list={tmp_path / 'long.txt'}",
        f"data.workers={workers}",
        "data.batch_size=1",
        "solver.epochs=50",
    ]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc (Linux)")
def test_killed_dataloader_worker_names_the_likely_cause(setup, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "train.py", *_long_training(setup, tmp_path, 1)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until training iterates (so the children are the DataLoader's workers, not a
        # short-lived helper process of the start-up), then for a worker to be listed.
        deadline = time.time() + 120
        log = tmp_path / "long" / "log.txt"
        while time.time() < deadline and not (log.is_file() and "Epoch: [0]" in log.read_text()):
            time.sleep(0.2)
        while time.time() < deadline and not _children(proc.pid):
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert workers, "no DataLoader worker appeared"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_one_clear_line(
        subprocess.CompletedProcess(proc.args, proc.returncode, "", err), "DataLoader worker", "memory", "data.workers"
    )


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc (Linux)")
def test_ranks_stop_when_the_torchrun_agent_is_killed(setup, tmp_path):
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "train.py",
            *_long_training(setup, tmp_path, 0),
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ranks: list[int] = []
    try:
        deadline = time.time() + 120
        log = tmp_path / "long" / "log.txt"
        while time.time() < deadline and not (log.is_file() and "Epoch: [0]" in log.read_text()):
            time.sleep(0.2)
        ranks = _children(agent.pid)
        assert len(ranks) == 2, ranks
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(r) for r in ranks):
            time.sleep(0.1)
        assert not any(_alive(r) for r in ranks), "ranks kept training after their launcher died"
    finally:
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if agent.poll() is None:
            agent.kill()


def test_a_worker_death_raised_inside_a_log_call_stops_the_run(tmp_path, capsys):
    """torch's SIGCHLD handler raises where the main process happens to be; inside a log call,
    logging would print a traceback and carry on. It must propagate (run_cli's one line), while
    other errors of a handler keep logging's behaviour."""
    import logging

    from utils.errors import explain
    from utils.logger import setup_logger

    class Raising(logging.Formatter):
        def __init__(self, err: Exception) -> None:
            super().__init__()
            self.err = err

        def format(self, record: logging.LogRecord) -> str:
            raise self.err

    log = setup_logger(tmp_path)
    death = RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. ")
    assert explain(death) is not None
    for handler in log.handlers:
        handler.setFormatter(Raising(death))
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        log.info("Epoch: [0][4/1600]")
    for handler in log.handlers:
        handler.setFormatter(Raising(ValueError("a formatter bug")))
    log.info("still running")  # printed as logging's own report, not raised
    assert "--- Logging error ---" in capsys.readouterr().err
