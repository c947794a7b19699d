"""Every entry point's --help documents --debug and shows the defaults, and answers without
importing torch or open_clip; --debug shows the traceback of a UserError that is otherwise one
line."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli_help import entry_points, heavy_imports, help_args
from utils.cli import DEBUG_HELP, wants_help
from utils.errors import explain

ROOT = Path(__file__).resolve().parents[1]

# entry point -> (an option, its default as --help must show it)
ENTRY_POINTS = {
    "train.py": ("--device", "auto"),
    "test.py": ("--test_crops", "1"),
    "test_zeroshot.py": ("--repeats", "10"),
    "predict.py": ("--topk", "5"),
    "datasets.make_list": ("--threads", "8"),
    "datasets.check": ("--workers", "8"),
    "datasets.synthetic": ("--frames", "16"),
    "modules.convert": None,
    "modules.hf_text_embed": ("--seed", "0"),
    "app.lda": ("--device", "auto"),
    "app.extract": ("--precision", "fp32"),
    "app.export": None,
    "app.results": None,
    "datasets.preprocess": ("--crf", "23"),
    "datasets.shards": ("--seed", "0"),
    "utils.config": None,
    "utils.summarize": None,
}


def entry_main(name: str):
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"text4vis_cli_{name[:-3]}", ROOT / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module.main
    return importlib.import_module(name).main


def squeeze(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_documents_debug_and_defaults(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        entry_main(name)(["--help"])
    assert exit_.value.code == 0
    text = squeeze(capsys.readouterr().out)
    assert f"--debug {DEBUG_HELP}" in text
    option = ENTRY_POINTS[name]
    if option is not None:
        flag, default = option
        after = text[text.index(f" {flag} ") :]
        assert f"(default: {default})" in after[:400], after[:400]
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text


@pytest.mark.parametrize(
    "name", ["train.py", "test.py", "test_zeroshot.py", "predict.py", "app.lda", "app.extract", "app.export"]
)
def test_every_model_loading_entry_point_offers_trust_pickle(name, capsys):
    """--trust_pickle is the only way a pickled CLIP weights file loads: every tool that builds a model
    from a config must take it (and pass it on: tests/test_failures.py)."""
    with pytest.raises(SystemExit):
        entry_main(name)(["--help"])
    assert "--trust_pickle FILE" in capsys.readouterr().out


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("TEXT4VIS_DEBUG", None)
    missing = str(tmp_path / "missing.json")
    cmd = [sys.executable, "-m", "utils.summarize", missing]
    plain = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1 and missing in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


@pytest.mark.parametrize(
    ("message", "pids", "how"),
    [
        ("DataLoader worker (pid 123) is killed by signal: Killed. ", "123", "is killed by signal: Killed"),
        ("DataLoader worker (pid(s) 16793) exited unexpectedly", "16793", "exited unexpectedly"),
        ("DataLoader worker (pid(s) 12, 13) exited unexpectedly", "12, 13", "exited unexpectedly"),
        ("DataLoader worker (pid 7) exited unexpectedly with exit code 1.", "7", "exited unexpectedly"),
    ],
)
def test_every_wording_of_a_dead_worker_is_explained(message, pids, how):
    """torch reports a killed DataLoader worker in several wordings depending on which thread sees it
    first; each must become the one-line explanation (a CI run once met '(pid(s) N)' as a traceback)."""
    line = explain(RuntimeError(message))
    assert line is not None and f"(pid {pids}: {how})" in line
    assert "memory" in line and "data.workers" in line


def test_other_runtime_errors_are_not_explained():
    assert explain(RuntimeError("CUDA out of memory")) is None


def test_every_entry_point_is_found():
    """bench/cli_help.py finds the commands by their `run_cli(main)` ending: the test below and
    the benchmark then cover a new tool without a list to update."""
    found = entry_points()
    assert {"train.py", "test.py", "test_zeroshot.py", "predict.py"} <= set(found)
    assert set(ENTRY_POINTS) <= set(found)
    assert "utils.cli" not in found and "app.load_weights" not in found


@pytest.mark.parametrize("entry", entry_points())
def test_help_answers_without_torch_or_open_clip(entry):
    """--help, started as a user starts it, prints the usage without importing torch or open_clip
    (python -X importtime lists every module imported); bench/cli_help.py times it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *help_args(entry)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: "), proc.stdout[:200]
    assert "import time:" in proc.stderr  # the report the check reads is there
    assert heavy_imports(proc.stderr) == [], entry


def test_heavy_imports_reads_an_importtime_report():
    report = "import time: self [us] | cumulative | imported package\nimport time:   120 |   4521 |   torch\n"
    assert heavy_imports(report) == ["torch"]
    assert heavy_imports(report.replace("torch", "torchvision")) == []


def test_wants_help_stops_at_double_dash():
    assert wants_help(["--config", "c.yaml", "-h"]) and wants_help(["--help"])
    assert not wants_help(["--", "--help"]) and not wants_help(["--opts", "a=-h"])


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_stop_after_epochs_below_one_is_refused_while_parsing(value, capsys):
    """--stop_after_epochs 0 would train nothing and say it stopped after epoch -1: refused by the
    parser, before the config (here a file that does not exist) is read."""
    with pytest.raises(SystemExit) as exit_:
        entry_main("train.py")(["--config", "missing.yaml", "--stop_after_epochs", value])
    assert exit_.value.code == 2
    assert f"--stop_after_epochs/--stop-after-epochs: '{value}' is not an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--config", "missing.yaml"], "error: config file not found: missing.yaml"),
        (
            ["--config", "configs/demo/demo_transf.yaml", "--opts", "data.batchsize=3"],
            "unknown config key 'data.batchsize'; did you mean 'data.batch_size'?",
        ),
    ],
)
def test_train_config_mistake_is_one_line_before_torch(args, line):
    """A config that cannot load stops train.py with its one line before torch or open_clip is
    imported (on every rank under torchrun); `--debug` takes the real path and shows the traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TEXT4VIS_DEBUG", None)
    cmd = [sys.executable, "-X", "importtime", "train.py", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    errors = [s for s in proc.stderr.splitlines() if not s.startswith("import time:")]
    assert proc.returncode == 1 and len(errors) == 1 and line in errors[0], proc.stderr[-2000:]
    assert heavy_imports(proc.stderr) == []
    debug = subprocess.run([*cmd, "--debug"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "torch" in heavy_imports(debug.stderr)
