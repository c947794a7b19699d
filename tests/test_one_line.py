"""One clear line on every path users run: an error raised in a DataLoader worker, in any rank
under torchrun (the shell scripts, through `utils.launch`) or in one process reaches the user as
the same `error: ...` line, with a non-zero exit, no traceback, no torchrun failure block, and the
line is the last line of the run's log.txt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure
from torch.utils.data import DataLoader, Dataset

from bench.cli_help import heavy_imports
from datasets.decoding import BadSampleError
from utils.errors import UserError, append_line, run_cli, user_message, write_launcher_record
from utils.launch import failure_report

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- DataLoader workers
class NeedsTwoArgs(UserError):
    """A UserError torch cannot rebuild from one message: it re-raises it as a RuntimeError."""

    def __init__(self, what: str, where: str) -> None:
        super().__init__(f"{what} in {where}")


class Failing(Dataset):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 1:
            raise self.error
        return torch.zeros(1)


def _raised_through_worker(error: Exception) -> BaseException:
    loader = DataLoader(Failing(error), batch_size=1, num_workers=1)
    with pytest.raises(Exception) as caught:  # noqa: B017 (the type is what the test looks at)
        list(loader)
    return caught.value


@pytest.mark.parametrize(
    ("error", "line", "kind"),
    [
        (
            BadSampleError("cannot decode frame a/b.jpg (list l.txt, line 3)"),
            "cannot decode frame a/b.jpg (list l.txt, line 3)",
            BadSampleError,
        ),
        (NeedsTwoArgs("bad key 'x'", "c.yaml"), "bad key 'x' in c.yaml", RuntimeError),
    ],
)
def test_a_worker_user_error_gives_back_its_line(error, line, kind):
    err = _raised_through_worker(error)
    assert type(err) is kind
    assert "Original Traceback" in str(err)  # torch's wrapping: what the user saw before
    assert user_message(err) == line


def test_a_worker_bug_is_not_a_user_error():
    err = _raised_through_worker(ValueError("index out of range"))
    assert user_message(err) is None
    assert user_message(RuntimeError("CUDA out of memory")) is None
    assert user_message(UserError("list x.txt not found")) == "list x.txt not found"


# ----------------------------------------------------------------------------- the launcher's choice
def _failure(tmp_path: Path, rank: int, exitcode: int, record: tuple[str, bool, str] | None) -> ProcessFailure:
    """torchrun's own ProcessFailure, reading the error file `run_cli` writes in rank `rank`."""
    path = tmp_path / f"error_{rank}.json"
    if record is not None:
        message, user, trace = record
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RANK", str(rank))
            write_launcher_record(str(path), message, user=user, trace=trace)
    return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(path))


def test_launcher_prints_the_users_line_over_later_failures(tmp_path):
    bug = ("RuntimeError: Connection closed by peer", False, "Traceback ...\nRuntimeError: closed\n")
    failures = {1: _failure(tmp_path, 1, 1, ("bad frame x.jpg", True, "")), 0: _failure(tmp_path, 0, 1, bug)}
    failures[0].error_file_data["text4vis"]["time"] -= 1  # rank 0's collective error came first
    assert failure_report(failures)[:3] == ("", "error (rank 1): bad frame x.jpg", 1)
    # every rank stopped by the same input: rank 0's line, as a single process prints it
    same = {
        1: _failure(tmp_path, 1, 1, ("bad key 'x'", True, "")),
        0: _failure(tmp_path, 0, 1, ("bad key 'x'", True, "")),
    }
    same[0].error_file_data["text4vis"]["time"] += 1
    assert failure_report(same)[1] == "error: bad key 'x'"


def test_launcher_shows_a_bugs_traceback_and_names_signals(tmp_path):
    bug = ("ValueError: boom", False, "Traceback (most recent call last):\nValueError: boom\n")
    trace, line, code, _ = failure_report({0: _failure(tmp_path, 0, 1, bug)})
    assert trace.startswith("Traceback") and line == "error: ValueError: boom (rank 0 failed; traceback above)"
    assert code == 1
    trace, line, code, _ = failure_report({1: _failure(tmp_path, 1, -9, None)})
    assert trace == "" and code == 137
    assert line.startswith("error: rank 1 (pid 101) was killed by SIGKILL") and "memory" in line
    _, line, code, _ = failure_report({2: _failure(tmp_path, 2, 3, None)})
    assert code == 3 and line == "error: rank 2 (pid 102) exited with status 3 (its output above says why)"


# ----------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_config):
    """Generated frame folders, a config, a list whose line 2 is a sample with corrupt frames, and
    a corrupt checkpoint."""
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("one_line")
    root = base / "data"
    generate(root, classes=4, videos_per_class=2, val_videos_per_class=1, frames=6, size=48, fmt="frames", seed=0)
    broken = root / "frames" / "broken"
    broken.mkdir()
    for src in sorted((root / "frames").glob("*/train_000"))[0].iterdir():
        (broken / src.name).write_bytes(b"not a jpeg")
    lines = (root / "train.txt").read_text().splitlines()
    (base / "bad_train.txt").write_text("\n".join([lines[0], "broken 6 1", *lines[1:]]) + "\n")
    (base / "bad.pt").write_bytes(os.urandom(4096))
    cfg = tiny_config(root, solver={"epochs": 1})
    (base / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return base


# case -> (--opts, words the line must name, whether a run folder (log.txt) is left)
CASES = {
    "misspelt key": (["data.batch_sise=2"], ["data.batch_sise", "data.batch_size"], False),
    "missing list": (["data.train_list={base}/none.txt"], ["none.txt"], True),
    "bad sample": (
        ["data.train_list={base}/bad_train.txt", "data.workers=2", "data.on_bad_sample=error"],
        ["broken", "bad_train.txt, line 2", "data.on_bad_sample"],
        True,
    ),
    "corrupt resume": (["resume={base}/bad.pt"], ["bad.pt"], True),
}


def assert_one_line(proc: subprocess.CompletedProcess, needles: list[str]) -> str:
    """Non-zero exit; stderr ends with the only `error` line, which names every needle; no
    traceback and no torchrun failure block anywhere."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for bad in ("Traceback", "ChildFailedError", "FAILED", "Root Cause", "exitcode"):
        assert bad not in out, (bad, out[-3000:])
    errors = [line for line in out.splitlines() if line.startswith("error")]
    assert len(errors) == 1, out[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def assert_log_ends_with(run: Path, line: str, left: bool) -> None:
    if not left:
        assert not (run / "log.txt").exists()
        return
    last = (run / "log.txt").read_text().strip().splitlines()[-1]
    message = line.split(": ", 1)[1]
    assert last.endswith(message), (last, line)


@pytest.mark.slow
@pytest.mark.parametrize("gpus", ["1", "2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_run_train_sh_says_one_line(data, tmp_path, case, gpus, child_env):
    opts, needles, left = CASES[case]
    run = tmp_path / "run"
    proc = subprocess.run(
        ["sh", str(ROOT / "scripts" / "run_train.sh"), str(data / "cfg.yaml"), "--output", str(run), "--opts"]
        + [o.format(base=data) for o in opts],
        cwd=tmp_path,
        env=child_env(GPUS=gpus),
        capture_output=True,
        text=True,
        timeout=400,
    )
    line = assert_one_line(proc, needles)
    assert_log_ends_with(run, line, left)


@pytest.mark.slow
def test_a_worker_error_in_one_process_is_one_line_and_ends_the_log(data, tmp_path, child_env):
    opts, needles, _ = CASES["bad sample"]
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(data / "cfg.yaml"), "--output", str(run)]
    cmd += ["--opts", *[o.format(base=data) for o in opts]]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=400)
    line = assert_one_line(proc, needles)
    assert line.startswith("error: cannot decode frame")
    assert_log_ends_with(run, line, True)
    debug = subprocess.run(
        cmd, cwd=tmp_path, env=child_env(TEXT4VIS_DEBUG="1"), capture_output=True, text=True, timeout=400
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line


@pytest.mark.slow
def test_run_test_sh_says_one_line_and_debug_shows_the_traceback(data, tmp_path, child_env):
    script = str(ROOT / "scripts" / "run_test.sh")
    args = [script, str(data / "cfg.yaml"), str(data / "bad.pt"), "--output", str(tmp_path / "out")]
    proc = subprocess.run(
        ["sh", *args], cwd=tmp_path, env=child_env(NPROC="2"), capture_output=True, text=True, timeout=400
    )
    line = assert_one_line(proc, ["bad.pt"])
    assert line.startswith("error: ")  # both ranks failed alike: rank 0's line, as one process says it
    debug = subprocess.run(
        ["sh", *args, "--debug"], cwd=tmp_path, env=child_env(NPROC="2"), capture_output=True, text=True, timeout=400
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line


def test_launcher_says_one_line_when_torchrun_cannot_start(tmp_path, child_env):
    proc = subprocess.run(
        [sys.executable, "-m", "utils.launch", "--nproc_per_node=abc", str(ROOT / "train.py")],
        cwd=tmp_path,
        env={**child_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: torchrun could not start the processes: ValueError: Unsupported nproc_per_node value: abc"
    ]


def test_launcher_help_is_its_own_and_needs_no_torch(tmp_path, child_env):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "utils.launch", "--help"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m utils.launch [torchrun options] SCRIPT")
    assert "python -m torch.distributed.run --help" in proc.stdout
    assert heavy_imports(proc.stderr) == []


def _fail(message: str):
    def main() -> None:
        raise UserError(message)

    return main


@pytest.mark.parametrize("rank", [0, 1])
def test_the_line_ends_log_txt_on_every_rank(tmp_path, monkeypatch, capsys, rank):
    """rank 0 writes log.txt; another rank adds only its errors, so a rank that fails alone (a bad
    video in its shard) still leaves its line at the end of the run's log."""
    from utils.logger import setup_logger

    for key in ("TEXT4VIS_DEBUG", "TEXT4VIS_LAUNCHER", "RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    (tmp_path / "log.txt").write_text("[12/03 07:00:00 Text4Vis]: epoch 0 done\n")
    logger = setup_logger(tmp_path, rank)
    logger.info("an info line (rank 0 only)")
    logger.warning("a warning (console only on other ranks)")
    try:
        with pytest.raises(SystemExit) as exit_:
            run_cli(_fail("list l.txt, line 3: bad label"))
    finally:
        setup_logger(None)  # close log.txt
    assert exit_.value.code == 1
    line = "error: list l.txt, line 3: bad label" if rank == 0 else "error (rank 1): list l.txt, line 3: bad label"
    assert capsys.readouterr().err == line + "\n"
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[-1].endswith("Text4Vis]: " + line)
    assert ("an info line (rank 0 only)" in "\n".join(lines)) == (rank == 0)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_leaves_the_one_line(tmp_path, monkeypatch, capsys):
    import logging

    from utils.logger import setup_logger

    monkeypatch.delenv("TEXT4VIS_DEBUG", raising=False)
    monkeypatch.delenv("TEXT4VIS_LAUNCHER", raising=False)
    logger = setup_logger(None)
    logger.addHandler(logging.FileHandler("/dev/full"))  # every write: no space left on device
    try:
        with pytest.raises(SystemExit):
            run_cli(_fail("disk full"))
    finally:
        setup_logger(None)
    assert capsys.readouterr().err == "error: disk full\n"


def test_append_line_ends_a_log_once(tmp_path):
    log = tmp_path / "log.txt"
    append_line(str(log), "[t]: error: bad")  # a new file
    append_line(str(log), "[t]: error: bad")  # already its last line: not again
    assert log.read_text() == "[t]: error: bad\n"
    log.write_text("[t]: error: bad\n[t]: Epoch: [0][1/3] (rank 0 logged after the failure)\n")
    append_line(str(log), "[t]: error: bad")
    assert log.read_text().splitlines()[-1] == "[t]: error: bad"
    assert log.read_text().count("error: bad") == 2
    log.write_text("[t]: xerror: bad\n")  # a longer line that ends with the text is another line
    append_line(str(log), "[t]: error: bad")
    assert log.read_text().splitlines()[-1] == "[t]: error: bad"
    append_line(str(tmp_path / "gone" / "log.txt"), "[t]: error: bad")  # never raises


def test_the_report_names_the_logs_the_failing_rank_wrote(tmp_path):
    path = tmp_path / "error_1.json"
    logs = [(str(tmp_path / "log.txt"), "[12/03 08:00:00 Text4Vis]: error (rank 1): bad frame")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANK", "1")
        write_launcher_record(str(path), "bad frame", user=True, logs=logs)
    failure = ProcessFailure(local_rank=1, pid=101, exitcode=1, error_file=str(path))
    assert failure_report({1: failure, 0: _failure(tmp_path, 0, -15, None)}).logs == [list(logs[0])]


def test_a_bug_keeps_its_traceback_and_ends_log_txt_too(tmp_path, monkeypatch):
    from utils.logger import setup_logger

    for key in ("TEXT4VIS_DEBUG", "TEXT4VIS_LAUNCHER", "RANK"):
        monkeypatch.delenv(key, raising=False)
    setup_logger(tmp_path, 0).info("started")

    def main() -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    try:
        with pytest.raises(ZeroDivisionError):  # not the user's: Python prints its traceback
            run_cli(main)
    finally:
        setup_logger(None)
    assert (tmp_path / "log.txt").read_text().splitlines()[-1].endswith("error: ZeroDivisionError: division by zero")
