"""The launch scripts under scripts/ as users start them: `sh scripts/X.sh` (dash on Debian and
Ubuntu), `bash scripts/X.sh` and `scripts/X.sh`, from any folder, with relative config, weights
and output paths."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASH = shutil.which("dash")
LAUNCHERS = ("run_train.sh", "run_test.sh", "run_test_zeroshot.sh", "run_train_multinodes.sh")


def _starts(script: str) -> list[list[str]]:
    path = str(ROOT / "scripts" / script)
    ways = [["bash", path], [path]]
    if DASH:
        ways.insert(0, [DASH, path])
    return ways


@pytest.mark.parametrize("script", LAUNCHERS)
def test_usage_under_every_shell(script, tmp_path, child_env):
    for start in _starts(script):
        proc = subprocess.run(start, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (start, proc.stderr)
        assert "usage:" in proc.stderr, (start, proc.stderr)
        for bad in ("Illegal option", "Bad substitution", "Syntax error", "not found"):
            assert bad not in proc.stderr, (start, proc.stderr)


def test_demo_rejects_unknown_head_under_dash(tmp_path, child_env):
    for start in _starts("run_demo.sh"):
        proc = subprocess.run(
            [*start, "nohead"], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, (start, proc.stderr)
        assert proc.stderr.strip().splitlines() == ["error: unknown run 'nohead' (transf, meanp, both or compare)"]


@pytest.mark.slow
@pytest.mark.skipif(DASH is None, reason="dash is not installed")
def test_train_test_zeroshot_with_sh_and_relative_paths(tmp_path, child_env):
    """The user's three commands under dash, started from a folder that is not the repository,
    with every path relative to that folder."""
    from datasets.synthetic import generate

    work = tmp_path / "work"
    generate(
        work / "data", classes=3, videos_per_class=1, val_videos_per_class=1, frames=4, size=48, fmt="frames", seed=0
    )
    cfg = {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 2,
            "batch_size": 3,
            "workers": 0,
            "input_size": 112,
            "min_frames": 1,
            "train_root": "data/frames",
            "val_root": "data/frames",
            "train_list": "data/train.txt",
            "val_list": "data/val.txt",
            "label_list": "data/labels.csv",
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "meanP", "text_cache": ""},
        "solver": {"epochs": 1, "lr_warmup_step": 0},
    }
    (work / "cfgs").mkdir()
    (work / "cfgs" / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = child_env(GPUS="1", NPROC="1")

    def sh(script: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [DASH, str(ROOT / "scripts" / script), *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    sh("run_train.sh", "cfgs/tiny.yaml", "--output", "runs/a")
    assert (work / "runs" / "a" / "model_best.pt").is_file()
    assert not (ROOT / "runs" / "a").exists()
    sh("run_test.sh", "cfgs/tiny.yaml", "runs/a/model_best.pt", "--output", "tests_out")
    result = json.loads((work / "tests_out" / "results.json").read_text())
    assert result["num_videos"] == 3
    sh("run_test_zeroshot.sh", "cfgs/tiny.yaml", "runs/a/model_best.pt", "--output", "zs_out")
    zs = json.loads((work / "zs_out" / "results.json").read_text())
    assert zs["full_classes"]["num_videos"] == 3


# script -> words its --help must name (its options and environment)
HELP_NAMES = {
    "run_train.sh": ["CONFIG", "GPUS", "MASTER_PORT", "PYTHON", "--output", "train.py --help"],
    "run_test.sh": ["CONFIG WEIGHTS", "NPROC", "GPUS", "PYTHON", "test.py --help"],
    "run_test_zeroshot.sh": ["CONFIG WEIGHTS", "NPROC", "test_zeroshot.py --help", "--protocol"],
    "run_train_multinodes.sh": ["CONFIG NODE_RANK", "MASTER_ADDR", "NNODES", "MASTER_PORT", "GPUS"],
    "run_demo.sh": ["transf|meanp|both|compare", "DEMO_DATA", "DEMO_OUT", "DEMO_OPTS", "PYTHON"],
    "run_tests.sh": ["pytest", "--fast", "not slow"],
}


@pytest.mark.slow
def test_run_tests_fast_leaves_out_the_slow_tests(tmp_path, child_env):
    """`--fast` runs pytest with -m "not slow" (test_demo_script.py is slow throughout: all of its
    tests are left out); without it every test of the file is collected."""
    cmd = ["bash", str(ROOT / "scripts" / "run_tests.sh")]
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_demo_script.py"]
    env = child_env(TEST_WORKERS="0")  # one process: --collect-only then prints pytest's own count line
    fast = subprocess.run([*cmd, "--fast", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    full = subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stdout + full.stderr
    count = int(full.stdout.strip().splitlines()[-1].split()[0])  # "N tests collected in ..."
    assert count >= 2
    assert fast.returncode == 5 and f"no tests collected ({count} deselected)" in fast.stdout, fast.stdout + fast.stderr


@pytest.mark.parametrize("script", sorted(HELP_NAMES))
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_script_answers_help_with_its_own_name(script, flag, tmp_path, child_env):
    """`-h`/`--help` prints the script's own usage (its name, arguments and environment) and exits 0,
    before anything is set up or started."""
    for start in _starts(script):
        proc = subprocess.run([*start, flag], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (start, proc.stderr)
        assert proc.stderr == "", (start, proc.stderr)
        first = proc.stdout.splitlines()[0]
        assert script in first and "usage" in first.lower(), (start, first)
        for name in HELP_NAMES[script]:
            assert name in proc.stdout, (start, name, proc.stdout)
        others = [s for s in HELP_NAMES if s != script and s in proc.stdout]
        assert others == [], (start, others)
    assert list(tmp_path.iterdir()) == []  # nothing generated, no run folder


@pytest.mark.parametrize(
    ("script", "args", "env", "line"),
    [
        ("run_train.sh", ["cfg.yaml"], {"GPUS": "abc"}, "error: GPUS must be a number of processes >= 1, got 'abc'"),
        (
            "run_test.sh",
            ["cfg.yaml", "cfg.yaml"],
            {"NPROC": "0"},
            "error: NPROC (or GPUS) must be a number of processes >= 1, got '0'",
        ),
        (
            "run_train_multinodes.sh",
            ["cfg.yaml", "2"],
            {"MASTER_ADDR": "node0", "NNODES": "2", "GPUS": "1"},
            "error: NODE_RANK must be 0..NNODES-1, got '2' with NNODES=2",
        ),
        (
            "run_train_multinodes.sh",
            ["cfg.yaml", "0"],
            {"MASTER_ADDR": "node0", "NNODES": "two", "GPUS": "1"},
            "error: NNODES must be a number of machines >= 1, got 'two'",
        ),
        (
            "run_train_multinodes.sh",
            ["cfg.yaml", "0"],
            {"NNODES": "2"},
            "error: set MASTER_ADDR to the address of node 0",
        ),
    ],
)
def test_scripts_refuse_bad_process_counts_in_one_line(script, args, env, line, tmp_path, child_env):
    (tmp_path / "cfg.yaml").write_text("seed: 0\n")
    proc = subprocess.run(
        ["sh", str(ROOT / "scripts" / script), *args],
        cwd=tmp_path,
        env={**child_env(), **env},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line], proc.stderr
