"""The benchmark scripts run end to end on tiny settings: every row is measured, the two evaluation
pipelines agree, and a bad argument gives one clear line (the numbers themselves are in the README)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.video_reader import available_decoders

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_data_bench_measures_every_pipeline(tmp_path):
    proc = _run("bench/data.py", "--videos", "1", "--reps", "1", "--data", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"pre-processing to mp4, .*: \d+\.\d+ s per clip per process; size", out)
    table = {
        line.split(" | ")[0].strip("| "): [float(x.rstrip("x")) for x in line.strip("| ").split(" | ")[1:]]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| pipeline")
    }
    expected = ["original (decord + PIL per frame), mp4 as is", "original (PIL per frame), frames", "ours, frames"]
    for kind in ("mp4 as is", "mp4 pre-processed", "shards of pre-processed mp4"):
        expected += [f"ours, {kind}, {d}" for d in available_decoders()]
    assert set(expected) <= set(table), sorted(table)
    base = table[expected[0]]
    assert base[1] == 1.0 and base[3] == 1.0
    for label, (train, train_x, test, test_x) in table.items():
        assert train > 0 and test > 0, label
        # the speed-ups are against the original pipeline (the table rounds both numbers)
        assert train_x == pytest.approx(train / base[0], rel=0.05, abs=0.051), label
        assert test_x == pytest.approx(test / base[2], rel=0.05, abs=0.051), label


def test_eval_bench_pipelines_agree(tmp_path):
    result = tmp_path / "eval.json"
    proc = _run(
        "bench/eval.py",
        *("--arch", "tiny", "--input-size", "112", "--size", "128", "--frames", "4", "--crops", "3"),
        *("--clips", "2", "--rounds", "1", "--data-videos", "2", "--workers", "0"),
        *("--data", str(tmp_path / "data"), "--json", str(result)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(result.read_text())
    assert res["min_cosine"] > 0.999 and res["same_top1"] == 1.0  # same frames, same model, same views
    assert all(res[k] > 0 for k in ("data_original", "data_ours", "e2e_original", "e2e_ours"))


def test_train_bench_runs_both_sides_and_names_bad_sizes(tmp_path):
    args = ("bench/train.py", "--arch", "tiny", "--frames", "2", "--steps", "1", "--rounds", "1", "--classes", "5")
    proc = _run(*args, "--size", "112")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"original-like\s+\d+\.\d+", proc.stdout) and re.search(r"speed-up\s+\d+\.\d+x", proc.stdout)
    bad = _run(*args, "--size", "96")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: data.input_size is 96 but network.arch 'tiny'")
