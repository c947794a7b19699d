"""The benchmark scripts run end to end on tiny settings: every row is measured, the two evaluation
pipelines agree, and a bad argument gives one clear line (the numbers themselves are in the README)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasets.video_reader import DECODERS, available_decoders, decoder_problem
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_data_bench_measures_every_pipeline(tmp_path):
    proc = _run("bench/data.py", "--videos", "1", "--reps", "1", "--block", "0", "--data", str(tmp_path))
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
    loader = "DataLoader, 1 worker, batches of 8: "
    first = available_decoders()[0]
    assert {loader + expected[0], loader + f"ours, mp4 pre-processed, {first}"} <= set(table)
    for d in set(DECODERS) - set(available_decoders()):  # e.g. torchcodec without FFmpeg: one line, no rows
        assert f"left out decoder {d}: {decoder_problem(d)}" in out.splitlines()
        assert not [label for label in table if d in label]
    for label, (train, train_x, test, test_x) in table.items():
        assert train > 0 and test > 0, label
        # the speed-ups are against the original pipeline measured the same way (the table rounds both)
        base = table[loader + expected[0]] if label.startswith(loader) else table[expected[0]]
        assert base[1] == 1.0 and base[3] == 1.0
        for value, ratio, ref in ((train, train_x, base[0]), (test, test_x, base[2])):
            # each printed number is rounded to 0.1: the ratio lies within what those roundings allow
            low, high = (value - 0.05) / (ref + 0.05), (value + 0.05) / max(ref - 0.05, 1e-9)
            assert low - 0.051 <= ratio <= high + 0.051, (label, value, ratio, ref)


def test_decoder_choice_leaves_out_what_cannot_run_here(monkeypatch, capsys) -> None:
    import bench.k400_like as k4

    problems = {"torchcodec": "torchcodec cannot run on this machine: no FFmpeg", "decord": None, "pyav": None}
    monkeypatch.setattr(k4, "decoder_problem", lambda name: problems[name])
    monkeypatch.setattr(k4, "resolve_decoder", lambda name: "decord" if name == "auto" else name)
    assert k4.runnable_decoders("all") == ["decord", "pyav"]
    assert capsys.readouterr().out == "left out decoder torchcodec: torchcodec cannot run on this machine: no FFmpeg\n"
    assert k4.runnable_decoders("pyav, auto,decord") == ["pyav", "decord"]
    assert k4.runnable_decoders("torchcodec,pyav") == ["pyav"]
    with pytest.raises(UserError, match="none of these decoders can run on this machine"):
        k4.runnable_decoders("torchcodec")
    with pytest.raises(UserError, match="--decoder 'ffmpeg': use all, auto or a comma-separated list of torchcodec"):
        k4.runnable_decoders("ffmpeg")


def test_block_rate_warms_up_then_times_whole_passes_for_the_block() -> None:
    from bench.data import block_rate

    calls: list[int | None] = []

    def run(limit: int | None) -> int:
        calls.append(limit)
        time.sleep(0.01)
        return limit or 8

    rate = block_rate(run, 0.05)
    assert calls[0] == 1 and calls[1:] == [None] * (len(calls) - 1) and len(calls) >= 6
    assert rate == pytest.approx(8 / 0.01, rel=0.3)  # clips per second of the timed passes


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


def test_eval_bench_reads_videos_with_the_decoder_asked_for(tmp_path):
    result = tmp_path / "eval.json"
    proc = _run(
        "bench/eval.py",
        *("--arch", "tiny", "--input-size", "112", "--size", "128", "--frames", "4", "--crops", "1"),
        *("--clips", "1", "--rounds", "1", "--data-videos", "2", "--workers", "0", "--input", "video"),
        *("--decoder", "torchcodec,pyav", "--data", str(tmp_path / "data"), "--json", str(result)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = "torchcodec" if "torchcodec" in available_decoders() else "pyav"
    if used == "pyav":  # torchcodec cannot run here: left out with the reason, the run goes on
        assert f"left out decoder torchcodec: {decoder_problem('torchcodec')}" in proc.stdout.splitlines()
    assert f"mp4s, ours decoded with {used}" in proc.stdout
    res = json.loads(result.read_text())
    assert res["args"]["input"] == "video"
    assert res["min_cosine"] > 0.999 and res["same_top1"] == 1.0  # both sides decode the same mp4 frames


def test_train_bench_runs_both_sides_and_names_bad_sizes(tmp_path):
    args = ("bench/train.py", "--arch", "tiny,tiny", "--frames", "2", "--steps", "1", "--rounds", "1", "--classes", "5")
    proc = _run(*args, "--size", "112")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"^  original-like\s+\d+\.\d+", proc.stdout, re.M)) == 2
    speedups = re.findall(r"speed-up\s+(\d+\.\d+)x", proc.stdout)
    rows = re.findall(r"^\| tiny \| [\d.]+ \| [\d.]+ \| ([\d.]+)x \|", proc.stdout, re.M)
    assert len(speedups) == 2 and rows == speedups  # one summary row per architecture, the same numbers
    misspelt = _run("bench/train.py", "--arch", "tiny,bogus", "--steps", "1", "--rounds", "1", "--size", "112")
    assert misspelt.returncode == 1 and "round 1" not in misspelt.stdout  # checked before any measurement
    assert misspelt.stderr.strip().splitlines()[-1].startswith("error: network.arch: unknown architecture 'bogus'")
    bad = _run(*args, "--size", "96")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: data.input_size is 96 but network.arch 'tiny'")


def test_train_bench_reads_clips_through_the_loader_and_reports_data_wait_and_mfu(tmp_path):
    proc = _run(
        *("bench/train.py", "--arch", "tiny", "--size", "112", "--frames", "2", "--batch", "1", "--steps", "2"),
        *("--rounds", "1", "--classes", "5", "--data", str(tmp_path), "--videos", "2", "--workers", "1"),
        *("--peak-tflops", "0.5"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "video.txt").read_text().count("\n") == 2  # the generated clips were read
    assert not (tmp_path / "frames_q95").exists() and not (tmp_path / "shards").exists()  # only what it reads
    tflops = float(re.search(r"ours\s+[\d.]+\s+visual-encoder model TFLOP/s ([\d.e+-]+)", proc.stdout).group(1))
    mfu = float(re.search(r"ours\s+.*MFU ([\d.]+) % of 0.5", proc.stdout).group(1))
    assert mfu == pytest.approx(100 * tflops / 0.5, rel=0.02, abs=0.06)  # both printed rounded
    assert re.search(r"data wait \(ours, 1 workers, K400-like clips in .*\): median [\d.]+ % of the step", proc.stdout)
    short = _run(
        *("bench/train.py", "--arch", "tiny", "--size", "112", "--frames", "2", "--batch", "1", "--steps", "3"),
        *("--data", str(tmp_path), "--videos", "2"),
    )
    assert short.returncode == 1 and "Traceback" not in short.stderr
    last = short.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --videos 2 gives 2 batches of 1: fewer than --steps")
