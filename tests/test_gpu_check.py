"""bench/gpu_check.sh: its dry run on the CPU writes the report the GPU run will write (every step
recorded, the numbers consistent between the JSON and the Markdown, files the device tool can return),
a step past its limit is killed with its children, a spent budget skips the rest, and the parsers read
what the project's own printers print."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

from bench import gpu_check as gc

ROOT = Path(__file__).resolve().parents[1]
CUDA_PARAMS = 6  # the cuda parameters of tests/test_cuda.py, each skipped here with the reason


def _sh(*args: str, env: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", "bench/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def dry(tmp_path_factory) -> tuple[Path, dict, str]:
    base = tmp_path_factory.mktemp("gpu_check")
    out = base / "out"
    proc = _sh("--dry-run", "--out", str(out), "--work", str(base / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_dry_run_records_every_step(dry):
    out, rep, md = dry
    keys = list(rep["steps"])
    assert keys == ["env", "tests", "throughput tiny", "demo", "eval", "bench_train", "nvdec"]
    status = {k: v["status"] for k, v in rep["steps"].items()}
    assert status == {**{k: "ok" for k in keys}, "nvdec": "skipped"}, {k: rep["steps"][k]["note"] for k in keys}
    assert rep["steps"]["nvdec"]["note"] == "NVDEC needs a CUDA device"
    for k in keys:
        assert re.search(rf"^\| {re.escape(k)} \| {status[k]} \| [\d.]+ \|", md, re.M), k
    env = rep["steps"]["env"]["result"]
    assert env["torch"] and env["matmul_tflops"] > 0 and env["packages"]["torch"]


@pytest.mark.slow
def test_dry_run_cuda_tests_are_skipped_with_the_reason(dry):
    tests = dry[1]["steps"]["tests"]["result"]
    assert tests["counts"] == {"passed": 0, "failed": 0, "skipped": CUDA_PARAMS}
    assert all(name.startswith("tests.test_cuda::") for name in tests["cases"])
    assert all("no CUDA device here" in why for why in tests["reasons"].values())
    assert f"## CUDA tests: 0 passed, 0 failed, {CUDA_PARAMS} skipped" in dry[2]


@pytest.mark.slow
def test_dry_run_throughput_rows_are_consistent_and_in_the_table(dry):
    out, rep, md = dry
    res = rep["steps"]["throughput tiny"]["result"]
    assert [t["batch"] for t in res["probe"]] == [1, 2] and all(t["fits"] for t in res["probe"])
    eager, compiled = res["rows"]
    assert (eager["compile"], compiled["compile"]) == (False, True) and compiled["compile_backend"] == "eager"
    assert "compile_s" in compiled and "compile_s" not in eager
    for r in (eager, compiled):
        assert r["batch"] == 2 and r["clips_s"] > 0
        # model FLOPs x clips/s, each printed to 4 significant digits (the GFLOP/clip to 0.01)
        assert r["model_tflops"] == pytest.approx(r["train_gflop_per_clip"] * r["clips_s"] / 1e3, rel=0.01)
        assert r["mfu_pct"] is None  # no known peak for a CPU
        row = f"| tiny | {'yes' if r['compile'] else 'no'} | 2 | {r['train_gflop_per_clip']} | {r['clips_s']} |"
        assert row in md
    assert res["top_ops"] and abs(sum(o["share"] for o in res["top_ops"]) - 1) < 1  # shares of the whole
    assert "aten::" in (out / gc.PROFILE_TABLE).read_text()
    trace = json.loads(gzip.decompress((out / gc.PROFILE_TRACE).read_bytes()))
    assert trace["traceEvents"]


@pytest.mark.slow
def test_dry_run_demo_eval_and_train_bench_results(dry):
    steps = dry[1]["steps"]
    demo = steps["demo"]["result"]
    assert demo["epochs"] == 1 and 0 <= demo["best_val_top1"] <= 100 and 0 <= demo["test_top1"] <= 100
    assert demo["train_s"] > 0 and demo["test_s"] > 0
    ev = steps["eval"]["result"]
    assert ev["min_cosine"] > 0.999 and ev["same_top1"] == 1.0 and ev["e2e_ours"] > 0
    rows = steps["bench_train"]["result"]["rows"]
    assert [r["arch"] for r in rows] == ["tiny", "tiny"]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["ours_clips_s"] / r["original_clips_s"], abs=0.01)
    assert f"| tiny | {rows[0]['original_clips_s']} | {rows[0]['ours_clips_s']} | {rows[0]['speedup']}x |" in dry[2]


@pytest.mark.slow
def test_dry_run_files_are_what_the_device_tool_returns(dry):
    out = dry[0]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["gpu_check.json", "gpu_check.md", "gpu_check.log", gc.PROFILE_TABLE, gc.PROFILE_TRACE])
    assert len(names) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {k} (limit" in log for k in dry[1]["steps"])


def _ns(tmp_path: Path, **kw) -> Namespace:
    base = dict(device="cpu", out=str(tmp_path / "out"), work=str(tmp_path / "work"), dry_run=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    return Namespace(**{**base, **kw})


def _alive(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                pids.append(int(d.name))
    return pids


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path):
    a = _ns(tmp_path)
    log = tmp_path / "out" / "gpu_check.log"
    t0 = time.perf_counter()
    rec = gc.run_child("tests", "tests", "", a, 3.0, None, log)  # pytest alone takes longer to start
    assert rec.status == "timeout" and rec.note == "stopped at its limit of 3 s"
    assert time.perf_counter() - t0 < 30
    time.sleep(0.5)
    assert not _alive(str(tmp_path / "work")), "a process of the step outlived its limit"
    assert "===== tests (limit 3 s)" in log.read_text()


def test_a_spent_budget_skips_the_remaining_steps(tmp_path):
    out = tmp_path / "out"
    assert gc.main(["--dry-run", "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "w"),
                    "--only", "env,nvdec", "--budget", "16"]) == 0  # fmt: skip
    rep = json.loads((out / "gpu_check.json").read_text())
    assert list(rep["steps"]) == ["env", "nvdec"]
    nvdec = rep["steps"]["nvdec"]
    # env took the budget (ran to its end or was stopped at the 16 s left), so nvdec never started
    assert rep["steps"]["env"]["status"] in ("ok", "timeout")
    assert nvdec["status"] == "skipped" and nvdec["note"].startswith("out of budget (") and nvdec["seconds"] == 0


def test_bad_arguments_are_one_clear_line(tmp_path):
    def py(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "bench/gpu_check.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    bad = py("--out", str(tmp_path), "--only", "env,bogus")
    assert bad.returncode == 2 and "--only: unknown step(s) bogus (steps: env, tests, throughput" in bad.stderr
    cpu = py("--out", str(tmp_path), "--device", "cpu")
    assert cpu.returncode == 2 and "use it with --dry-run" in cpu.stderr
    budget = py("--out", str(tmp_path), "--budget", "0")
    assert budget.returncode == 2 and "--budget must be positive, got 0" in budget.stderr
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "no --out DIR and no $OUT" in proc.stderr


def test_probe_batch_doubles_then_tries_halfway():
    fits_up_to = 40
    calls: list[int] = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= fits_up_to

    best, tried = gc.probe_batch(fits, 16, 1024, 30.0)
    assert calls == [16, 32, 64, 48] and best == 32  # 48 did not fit either
    assert [t["fits"] for t in tried] == [True, True, False, False]
    fits_up_to = 50
    calls.clear()
    assert gc.probe_batch(fits, 16, 1024, 30.0)[0] == 48
    assert gc.probe_batch(fits, 16, 32, 30.0)[0] == 32  # capped, nothing past the largest asked
    with pytest.raises(RuntimeError, match="not even a batch of 64 fits"):
        gc.probe_batch(fits, 64, 1024, 30.0)


def test_out_of_memory_messages_count_as_not_fitting():
    assert gc.OOM.search("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert gc.OOM.search("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert not gc.OOM.search("mat1 and mat2 shapes cannot be multiplied (4x3 and 2x2)")  # a real error is raised


def test_train_summary_parser_reads_bench_train_rows(capsys):
    from bench.train import ArchResult, summary

    results = [
        ArchResult(
            "ViT-B/16",
            {"original-like": 101.234, "ours": 203.5},
            {"original-like": 80.0, "ours": 171.55},
            {"original-like": 8.1, "ours": 17.3},
            {"original-like": 40.0, "ours": 61.25},
            0.0421,
            989.0,
        ),
        ArchResult("tiny", {"original-like": 1.5, "ours": 3.0}, {"ours": 0.001}, {"ours": None}, {}, 0.5, None),
    ]
    summary(results)
    rows = gc.parse_train_summary(capsys.readouterr().out)
    assert rows[0] == {
        "arch": "ViT-B/16",
        "original_clips_s": 101.234,
        "ours_clips_s": 203.5,
        "speedup": 2.01,
        "ours_tflops": 172.0,
        "mfu_pct": 17.3,
        "peak_gib": 61.25,
        "data_wait_pct": 4.2,
    }
    assert rows[1]["arch"] == "tiny" and rows[1]["mfu_pct"] is None and rows[1]["peak_gib"] is None
    assert len(rows) == 2


def test_junit_reader_counts_outcomes_and_reasons(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(
        '<testsuites><testsuite><testcase classname="tests.test_cuda" name="a[cpu]"/>'
        '<testcase classname="tests.test_cuda" name="a[cuda]"><skipped message="no CUDA device here: x"/>'
        "</testcase>"
        '<testcase classname="tests.test_cuda" name="b"><failure message="assert 1 == 2&#10;more">tb</failure>'
        "</testcase></testsuite></testsuites>"
    )
    res = gc._junit(path)
    assert res["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert res["cases"]["tests.test_cuda::a[cpu]"] == "passed"
    want = {"tests.test_cuda::a[cuda]": "no CUDA device here: x", "tests.test_cuda::b": "assert 1 == 2"}
    assert res["reasons"] == want
