"""The prepared GPU check: every CUDA path of the project run once, and the headline figures measured.

    bash bench/gpu_check.sh                      # on the GPU machine (installs the carried wheels first)
    bash bench/gpu_check.sh --dry-run            # here, on the CPU, tiny settings: checks the wiring
    python bench/gpu_check.py --out DIR [--device cuda|cpu] [--dry-run] [--budget S] [--only a,b]

Steps, in this order (the most wanted first, so a spent budget cuts the least wanted):
  env         torch, CUDA, the GPU, the packages and decoders found, a bf16 8192^3 matmul (the ceiling)
  tests       `pytest -m cuda tests/test_cuda.py` (autocast + scaler, GPU transforms, checkpoints, ONNX)
  throughput  per architecture: the largest batch that fits (doubling, ~30 s of probing), then clips/s,
              model TFLOP/s, MFU, peak memory with and without torch.compile (clips held on the GPU:
              the model alone); the first architecture also gets a torch.profiler trace of a few steps
  demo        the offline demo's data, config and test (3 crops x 2 clips), trained on the device in bf16
  eval        bench/eval.py at 8 frames x 3 crops x 4 clips on the device
  bench_train bench/train.py on K400-like clips through the real loader: original-like against ours and
              the data-wait share (needs PyAV there to generate the clips)
  nvdec       bench/data.py --device cuda, when torchcodec can decode on the GPU there

Each step runs in its own process (session) with its own time limit, cut to what is left of --budget;
a failure, a timeout or a skip is recorded with its reason and the next step runs. After every step
DIR/gpu_check.json and DIR/gpu_check.md are rewritten (a kill loses only the step in flight), and each
step's output is appended to DIR/gpu_check.log. The profiler's table and trace land in DIR too.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = ("env", "tests", "throughput", "demo", "eval", "bench_train", "nvdec")
PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "open_clip_torch",
    "timm",
    "av",
    "decord",
    "torchcodec",
    "webdataset",
)
PACKAGES += ("ftfy", "onnx", "onnxruntime", "onnxscript", "numpy")
MIN_START_S = 15  # a step is not started with less budget than this left
PROFILE_TABLE = "profile.txt"
PROFILE_TRACE = "trace.json.gz"
TRACE_LIMIT = 15 * 2**20  # files that come back from the device: 16 MiB each at most


@dataclass(frozen=True)
class Settings:
    """What each step runs: the GPU's real settings, or tiny ones for the dry run on the CPU."""

    archs: tuple[str, ...]
    frames: int
    size: int
    precision: str
    probe_start: int
    probe_max: int
    probe_seconds: float
    probe_steps: int
    steps: int
    compile_backend: str
    profile_steps: int
    demo_gen: tuple[str, ...]
    demo_opts: tuple[str, ...]
    eval_args: tuple[str, ...]
    bench_train_args: tuple[str, ...]
    nvdec_args: tuple[str, ...]
    timeouts: dict[str, int] = field(default_factory=dict)


DEMO_GEN: tuple[str, ...] = ("--format", "frames", "--motions", "horizontal,scale,vertical", "--videos-per-class", "32")
DEMO_GEN += ("--val-videos-per-class", "16")  # scripts/run_demo.sh's data

GPU = Settings(
    archs=("ViT-B/16", "ViT-B/32"),
    frames=8,
    size=224,
    precision="bf16",
    probe_start=16,
    probe_max=1024,
    probe_seconds=30.0,
    probe_steps=2,  # the second step holds AdamW's moments too: the steady state
    steps=5,
    compile_backend="inductor",
    profile_steps=3,
    demo_gen=DEMO_GEN,
    demo_opts=("data.workers=8",),
    eval_args=(
        *("--arch", "ViT-B/32", "--frames", "8", "--crops", "3", "--clips", "4", "--videos", "2", "--rounds", "2"),
        *("--data-videos", "12", "--workers", "8", "--device", "cuda", "--precision", "bf16"),
    ),
    bench_train_args=(
        *("--arch", "ViT-B/32,ViT-B/16", "--frames", "8", "--precision", "bf16", "--device", "cuda"),
        *("--batch", "16", "--steps", "3", "--rounds", "1", "--videos", "48", "--workers", "12"),
    ),
    nvdec_args=("--videos", "4", "--reps", "1", "--block", "0.3", "--no-loader", "--device", "cuda"),
    timeouts={"env": 60, "tests": 150, "throughput": 150, "demo": 150, "eval": 100, "bench_train": 150, "nvdec": 90},
)

DRY = Settings(
    archs=("tiny",),
    frames=2,
    size=112,
    precision="fp32",  # low-precision autocast is 7-40x slower on this CPU (utils/precision.py)
    probe_start=1,
    probe_max=2,
    probe_seconds=600.0,  # always 1 then 2, however loaded the machine
    probe_steps=1,
    steps=1,
    compile_backend="eager",  # the compile wiring without inductor's minutes of CPU code generation
    profile_steps=1,
    demo_gen=(
        *("--format", "frames", "--classes", "2", "--videos-per-class", "2", "--val-videos-per-class", "1"),
        *("--frames", "8", "--size", "128"),
    ),
    demo_opts=("solver.epochs=1", "data.batch_size=2", "data.workers=0", "logging.eval_freq=1"),
    eval_args=(
        *("--arch", "tiny", "--input-size", "112", "--size", "128", "--frames", "2", "--crops", "3", "--clips", "2"),
        *("--videos", "1", "--rounds", "1", "--data-videos", "2", "--workers", "0", "--device", "cpu"),
    ),
    bench_train_args=(
        *("--arch", "tiny,tiny", "--frames", "2", "--size", "112", "--steps", "1", "--rounds", "1"),
        *("--classes", "5"),
    ),
    nvdec_args=(),
    timeouts={"env": 60, "tests": 120, "throughput": 300, "demo": 300, "eval": 240, "bench_train": 300, "nvdec": 30},
)


OOM = re.compile(r"out of memory|ALLOC_FAILED|CUDNN_STATUS_NOT_SUPPORTED|CUDNN_STATUS_ALLOC", re.I)


class Skip(Exception):
    """A step that cannot run here (the reason is recorded, the check goes on)."""


# ----------------------------------------------------------------------------- the steps (child process)
@dataclass
class Ctx:
    """What a step needs: device, settings, folders, and where to write its result as it goes."""

    device: str
    dry: bool
    s: Settings
    out: Path
    work: Path
    result_path: Path
    matmul_tflops: float | None
    arch: str = ""
    profile: bool = False
    result: dict[str, Any] = field(default_factory=dict)

    def save(self, **items: Any) -> None:
        """Record partial results now: a step killed by its time limit keeps what it measured."""
        self.result.update(items)
        self.result_path.write_text(json.dumps(self.result, indent=1, default=str))


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }


def _call(cmd: list[str], what: str) -> float:
    """Run a command of a step (output to the step's log); seconds taken, or RuntimeError naming it."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env=_env())
    if rc != 0:
        raise RuntimeError(f"{what} exited with {rc}: {' '.join(cmd)}")
    return time.perf_counter() - t0


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def matmul_tflops(device: str) -> float:
    """Achieved TFLOP/s of a large bf16 matmul on the GPU (fp32 and small on the CPU): the ceiling
    the model's MFU can be read against, measured in the same run."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (256, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    reps, t0 = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def step_env(ctx: Ctx) -> None:
    import torch

    from datasets.video_reader import DECODERS, decoder_problem

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "packages": {p: _version(p) for p in PACKAGES},
        "decoders": {d: decoder_problem(d) or "ok" for d in DECODERS},
        "compile_available": hasattr(torch.nn.Module, "compile"),
    }
    if ctx.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA device")
        prop = torch.cuda.get_device_properties(0)
        info.update(
            gpu=prop.name,
            capability=f"{prop.major}.{prop.minor}",
            memory_gib=round(prop.total_memory / 2**30, 1),
            multiprocessors=prop.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "--query-gpu=driver_version,clocks.max.sm,power.limit"
            res = subprocess.run([smi, q, "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = res.stdout.strip() or res.stderr.strip()
    ctx.save(**info)
    what = "bf16 8192^3" if ctx.device == "cuda" else "fp32 256^3"
    ctx.save(matmul=what, matmul_tflops=float(f"{matmul_tflops(ctx.device):.4g}"))


def _junit(path: Path) -> dict[str, Any]:
    """Outcome of every test case of a pytest --junitxml file."""
    cases: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag != "skipped" else "skipped"
                reasons[name] = (child.get("message") or child.text or "").strip().splitlines()[0][:300]
        cases[name] = outcome
    counts = {k: sum(1 for v in cases.values() if v == k) for k in ("passed", "failed", "skipped")}
    return {"counts": counts, "cases": cases, "reasons": reasons}


def step_tests(ctx: Ctx) -> None:
    junit = ctx.work / "junit_cuda.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={junit}", "-o", "addopts=-ra"]
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=_env())
    if not junit.is_file():
        raise RuntimeError(f"pytest exited with {rc} and wrote no report")
    res = _junit(junit)
    ctx.save(command=" ".join(cmd[1:]), returncode=rc, **res)
    if res["counts"]["failed"]:
        raise RuntimeError(f"{res['counts']['failed']} CUDA test(s) failed: " + ", ".join(res["reasons"]))


def _batch(s: Settings, batch: int, classes: int, device: str) -> tuple[Any, Any, None]:
    import torch

    g = torch.Generator(device=device).manual_seed(batch)
    x = torch.randint(0, 256, (batch, s.frames, 3, s.size, s.size), dtype=torch.uint8, device=device, generator=g)
    return x, torch.randint(0, classes, (batch,), device=device, generator=g), None


def _sig(x: float) -> float:
    """Four significant digits: the report's rounding, whatever the scale (a CPU's 0.0002 TFLOP/s too)."""
    return float(f"{x:.4g}")


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def probe_batch(fits: Callable[[int], bool], start: int, largest: int, seconds: float) -> tuple[int, list[dict]]:
    """The largest batch that `fits` (doubling from `start`, then once halfway to the first that did
    not), within `seconds` of probing; returns it and what was tried."""
    tried: list[dict] = []
    good, bad, b = 0, 0, start
    t0 = time.perf_counter()
    while b <= largest and time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        ok = fits(b)
        tried.append({"batch": b, "fits": ok, "seconds": round(time.perf_counter() - t, 2)})
        if not ok:
            bad = b
            break
        good, b = b, 2 * b
    mid = (good + bad) // 2
    if good and bad and mid > good and time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        ok = fits(mid)
        tried.append({"batch": mid, "fits": ok, "seconds": round(time.perf_counter() - t, 2)})
        good = mid if ok else good
    if not good:
        raise RuntimeError(f"not even a batch of {start} fits: {tried}")
    return good, tried


def _profile(ctx: Ctx, model: Any, batch: Any, arch: str) -> dict[str, Any]:
    """A torch.profiler trace of a few training steps: the table and the (gzipped) trace go to --out,
    the top operators by device time into the result."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.train import run_side

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device == "cuda" else [])
    dev = torch.device(ctx.device)
    with profile(activities=acts, record_shapes=False) as prof:
        run_side(model, [batch] * ctx.s.profile_steps, dev, ctx.s.precision, ctx.s.frames)
    events = prof.key_averages()

    def self_time(e: Any) -> float:  # torch >= 2.4 says device, older versions cuda
        if ctx.device != "cuda":
            return float(e.self_cpu_time_total)
        return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", None) or 0.0)

    total = sum(self_time(e) for e in events) or 1.0
    top = sorted(events, key=self_time, reverse=True)[:12]
    keys = ["self_cpu_time_total"] if ctx.device != "cuda" else ["self_device_time_total", "self_cuda_time_total"]
    table = ""
    for key in keys:  # the name torch >= 2.4 uses first, then the older one
        with contextlib.suppress(Exception):
            table = events.table(sort_by=key, row_limit=30)
            break
    (ctx.out / PROFILE_TABLE).write_text(f"{arch}, {ctx.s.profile_steps} training steps, {ctx.device}\n{table}\n")
    raw = ctx.work / "trace.json"
    prof.export_chrome_trace(str(raw))
    packed = gzip.compress(raw.read_bytes(), compresslevel=6)
    trace = None
    if len(packed) <= TRACE_LIMIT:
        (ctx.out / PROFILE_TRACE).write_bytes(packed)
        trace = PROFILE_TRACE
    return {
        "profile_arch": arch,
        "profile_table": PROFILE_TABLE,
        "profile_trace": trace or f"left out: {len(packed) / 2**20:.1f} MiB gzipped",
        "top_ops": [{"op": e.key, "share": round(self_time(e) / total, 4), "calls": e.count} for e in top],
    }


def _timed(model: Any, batch: Any, ctx: Ctx) -> dict[str, Any]:
    """clips/s, step time and peak memory of `steps` optimiser steps on one held batch."""
    import torch

    from bench.train import run_side

    dev = torch.device(ctx.device)
    if ctx.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cps = run_side(model, [batch] * ctx.s.steps, dev, ctx.s.precision, ctx.s.frames)
    res = {"clips_s": _sig(cps), "step_s": _sig(len(batch[0]) / cps)}
    if ctx.device == "cuda":
        res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def step_throughput(ctx: Ctx) -> None:
    """One architecture: probe the batch, then eager and compiled clips/s, MFU and memory."""
    import warnings

    import torch

    from bench.train import build, peak_tflops, run_side, vit_flops_per_clip
    from utils.compile import compile_model

    s, dev, arch = ctx.s, torch.device(ctx.device), ctx.arch
    peak = peak_tflops(dev, None)
    classes = 400
    rows: list[dict[str, Any]] = []
    ctx.save(arch=arch, peak_tflops=peak, matmul_tflops=ctx.matmul_tflops, rows=rows, precision=s.precision)
    torch.manual_seed(0)
    model = build(arch, s.frames, s.size, classes, dev)
    fwd = vit_flops_per_clip(model, s.frames, s.size)

    def fits(b: int) -> bool:
        ok = True
        try:
            run_side(model, [_batch(s, b, classes, ctx.device)] * s.probe_steps, dev, s.precision, s.frames)
        except RuntimeError as err:  # OutOfMemoryError, or cuBLAS/cuDNN failing to allocate their workspace
            if not isinstance(err, torch.cuda.OutOfMemoryError) and not OOM.search(str(err)):
                raise
            ok = False
        model.zero_grad(set_to_none=True)
        _free(ctx.device)  # here, with the exception and its frames released
        return ok

    b, tried = probe_batch(fits, s.probe_start, s.probe_max, s.probe_seconds)
    ctx.save(probe=tried)
    batch = _batch(s, b, classes, ctx.device)
    base = {"arch": arch, "batch": b, "fwd_gflop_per_clip": round(fwd / 1e9, 2)}
    base["train_gflop_per_clip"] = round(3 * fwd / 1e9, 2)
    for compiled in (False, True):
        row: dict[str, Any] = {**base, "compile": compiled}
        try:
            if compiled:
                if not hasattr(torch.nn.Module, "compile"):
                    raise Skip(f"torch {torch.__version__} has no nn.Module.compile")
                compile_model(model, backend=s.compile_backend)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run_side(model, [batch] * 2, dev, s.precision, s.frames)  # compiles forward and backward
                row["compile_s"] = round(time.perf_counter() - t0, 1)
                row["compile_backend"] = s.compile_backend
            row.update(_timed(model, batch, ctx))
            tflops = 3 * fwd * row["clips_s"] / 1e12
            row["model_tflops"] = _sig(tflops)
            row["mfu_pct"] = round(100 * tflops / peak, 1) if peak else None
            if ctx.matmul_tflops:
                row["pct_of_matmul"] = round(100 * tflops / ctx.matmul_tflops, 1)
        except Skip as why:
            row["skipped"] = str(why)
        except Exception as err:  # noqa: BLE001 - a compile failure is a finding, the eager row stands
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            row["error"] = f"{type(err).__name__}: {first}"
        rows.append(row)
        ctx.save(rows=rows)
        if ctx.profile and not compiled and "error" not in row:
            ctx.save(**_profile(ctx, model, batch, arch))


def _demo_paths(data: Path) -> list[str]:
    return [
        f"data.train_root={data}/frames",
        f"data.val_root={data}/frames",
        f"data.train_list={data}/train.txt",
        f"data.val_list={data}/val.txt",
        f"data.label_list={data}/labels.csv",
    ]


def step_demo(ctx: Ctx) -> None:
    """scripts/run_demo.sh's three stages with --precision and --device given (the script takes neither)."""
    py, data, run = sys.executable, ctx.work / "demo_data", ctx.work / "demo_run"
    cfg = "configs/demo/demo_transf.yaml"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    opts = [*_demo_paths(data), *ctx.s.demo_opts]
    dev = ["--device", ctx.device, "--precision", ctx.s.precision]
    gen = _call([py, "-m", "datasets.synthetic", "--out", str(data), *ctx.s.demo_gen], "data generation")
    ctx.save(config=cfg, generate_s=round(gen, 1), opts=list(ctx.s.demo_opts), precision=ctx.s.precision)
    train = _call([py, "train.py", "--config", cfg, "--output", str(run), *dev, "--opts", *opts], "train.py")
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    vals = [float(r["val_top1"]) for r in rows if r.get("val_top1")]
    ctx.save(train_s=round(train, 1), epochs=len(rows), best_val_top1=max(vals) if vals else None)
    test_cmd = [py, "test.py", "--config", cfg, "--weights", str(run / "model_best.pt"), *dev]
    test_cmd += ["--test_crops", "3", "--test_clips", "2", "--output", str(run / "test_3x2"), "--opts", *opts]
    test = _call(test_cmd, "test.py")
    res = json.loads((run / "test_3x2" / "results.json").read_text())
    ctx.save(test_s=round(test, 1), test_top1=res.get("top1"), test_top5=res.get("top5"))


def step_eval(ctx: Ctx) -> None:
    out = ctx.work / "eval.json"
    out.unlink(missing_ok=True)
    args = [*ctx.s.eval_args, "--data", str(ctx.work / "bench_eval"), "--json", str(out)]
    seconds = _call([sys.executable, "bench/eval.py", *args], "bench/eval.py")
    res = json.loads(out.read_text())
    res.pop("args", None)
    ctx.save(command="bench/eval.py " + " ".join(args), seconds=round(seconds, 1), **res)


SUMMARY_ROW = re.compile(
    r"^\| (?P<arch>[^|]+?) \| (?P<original>[\d.]+) \| (?P<ours>[\d.]+) \| (?P<speedup>[\d.]+)x \| "
    r"(?P<tflops>[\d.e+-]+) \| (?P<mfu>[\d.]+ %|-) \| (?P<mem>[\d.]+ GiB|-) \| (?P<wait>[\d.]+) % \|$"
)


def parse_train_summary(text: str) -> list[dict[str, Any]]:
    """The summary rows bench/train.py prints (one per architecture)."""
    rows = []
    for line in text.splitlines():
        m = SUMMARY_ROW.match(line.strip())
        if m:
            d = m.groupdict()
            rows.append(
                {
                    "arch": d["arch"],
                    "original_clips_s": float(d["original"]),
                    "ours_clips_s": float(d["ours"]),
                    "speedup": float(d["speedup"]),
                    "ours_tflops": float(d["tflops"]),
                    "mfu_pct": None if d["mfu"] == "-" else float(d["mfu"].rstrip(" %")),
                    "peak_gib": None if d["mem"] == "-" else float(d["mem"].rstrip(" GiB")),
                    "data_wait_pct": float(d["wait"]),
                }
            )
    return rows


def step_bench_train(ctx: Ctx) -> None:
    from datasets.video_reader import decoder_problem

    args = list(ctx.s.bench_train_args)
    if not ctx.dry:  # the real loader on generated K400-like clips: PyAV encodes them
        problem = decoder_problem("pyav")
        if problem:
            raise Skip(f"the K400-like clips are generated with PyAV, and {problem}")
        args += ["--data", str(ctx.work / "k400")]
    cmd = [sys.executable, "bench/train.py", *args]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    print(proc.stdout + proc.stderr, flush=True)
    ctx.save(command="bench/train.py " + " ".join(args), seconds=round(time.perf_counter() - t0, 1))
    if proc.returncode != 0:
        raise RuntimeError(f"bench/train.py exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    rows = parse_train_summary(proc.stdout)
    if not rows:
        raise RuntimeError("bench/train.py printed no summary row")
    ctx.save(rows=rows, source="K400-like clips through the loader" if not ctx.dry else "random clips in memory")


def step_nvdec(ctx: Ctx) -> None:
    if ctx.device != "cuda":
        raise Skip("NVDEC needs a CUDA device")
    from datasets.video_reader import decoder_problem

    problem = decoder_problem("torchcodec")
    if problem:
        raise Skip(problem)
    sample = ctx.work / "nvdec_probe.mp4"
    if decoder_problem("pyav"):
        raise Skip("no sample video can be made here (PyAV missing)")
    from torchcodec.decoders import VideoDecoder

    from bench.k400_like import k400_like_clip

    if not sample.exists():
        k400_like_clip(sample, 0)
    try:
        VideoDecoder(str(sample), device="cuda").get_frame_at(0)
    except Exception as err:  # noqa: BLE001 - PyPI's torchcodec is CPU-only: say what it answers
        raise Skip(f"torchcodec cannot decode on the GPU here: {str(err).strip().splitlines()[0][:200]}") from None
    args = [*ctx.s.nvdec_args, "--data", str(ctx.work / "bench_k400")]
    cmd = [sys.executable, "bench/data.py", *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    print(proc.stdout + proc.stderr, flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/data.py exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and ("NVDEC" in line or "GPU" in line)]
    ctx.save(command="bench/data.py " + " ".join(args), rows=rows)


STEP_FUNCS: dict[str, Callable[[Ctx], None]] = {
    "env": step_env,
    "tests": step_tests,
    "throughput": step_throughput,
    "demo": step_demo,
    "eval": step_eval,
    "bench_train": step_bench_train,
    "nvdec": step_nvdec,
}


def run_step(a: argparse.Namespace) -> int:
    """Child mode: one step; its result JSON holds what it measured, and `skipped` or `error`."""
    s = DRY if a.dry_run else GPU
    ctx = Ctx(a.device, a.dry_run, s, Path(a.out), Path(a.work), Path(a.result), a.matmul_tflops, a.arch, a.profile)
    try:
        STEP_FUNCS[a.step](ctx)
    except Skip as why:
        ctx.save(skipped=str(why))
    except Exception as err:  # noqa: BLE001 - recorded; the parent goes on with the next step
        import traceback

        traceback.print_exc()
        ctx.save(error=f"{type(err).__name__}: {err}"[:600])
        return 1
    return 0


# ----------------------------------------------------------------------------- the parent
@dataclass
class StepRecord:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float
    note: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def plan(steps: list[str], s: Settings) -> list[tuple[str, str, str]]:
    """(report key, step, architecture) in running order: one throughput step per architecture,
    the first of which is profiled."""
    out = []
    for step in steps:
        if step == "throughput":
            out += [(f"throughput {arch}", step, arch) for arch in s.archs]
        else:
            out.append((step, step, ""))
    return out


def run_child(
    key: str, step: str, arch: str, a: argparse.Namespace, timeout: float, matmul: float | None, log: Path
) -> StepRecord:
    """One step in its own process session, killed with everything it started at `timeout`."""
    work = Path(a.work)
    result = work / f"result_{re.sub(r'[^A-Za-z0-9]+', '_', key)}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--device", a.device]
    cmd += ["--out", a.out, "--work", a.work, "--result", str(result)]
    cmd += ["--dry-run"] if a.dry_run else []
    cmd += ["--matmul-tflops", str(matmul)] if matmul else []
    cmd += ["--arch", arch] if arch else []
    cmd += ["--profile"] if arch and arch == (DRY if a.dry_run else GPU).archs[0] else []
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n===== {key} (limit {timeout:.0f} s) {time.strftime('%H:%M:%S')}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    seconds = round(time.perf_counter() - t0, 1)
    res = json.loads(result.read_text()) if result.is_file() else {}
    if rc is None:
        return StepRecord(key, "timeout", seconds, f"stopped at its limit of {timeout:.0f} s", res)
    if "skipped" in res:
        return StepRecord(key, "skipped", seconds, res["skipped"], res)
    if rc != 0:
        note = res.get("error") or f"exited with {rc} (see gpu_check.log)"
        return StepRecord(key, "failed", seconds, note, res)
    return StepRecord(key, "ok", seconds, "", res)


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or v == "":
        return "-"
    return f"{v:g}{unit}" if isinstance(v, float) else f"{v}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: steps, then one table per measurement."""
    env = report["steps"].get("env", {}).get("result", {})
    lines = [
        f"# GPU check ({report['mode']}): {env.get('gpu', report['device'])}, torch {env.get('torch', '?')}",
        "",
        f"Command: `{report['command']}`; started {report['started']}, {report['seconds']:.0f} s of a "
        f"{report['budget']:g} s budget. {env.get('matmul', 'matmul')} matmul: "
        f"{_fmt(env.get('matmul_tflops'))} TFLOP/s measured.",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, st in report["steps"].items():
        lines.append(f"| {name} | {st['status']} | {st['seconds']:g} | {st['note'].replace('|', '/')[:300]} |")
    tps = [st["result"] for k, st in report["steps"].items() if k.startswith("throughput ")]
    tp = next((t for t in tps if t.get("top_ops")), tps[0] if tps else {})
    tp_rows = [r for t in tps for r in t.get("rows", [])]
    if tp_rows:
        peak = tp.get("peak_tflops")
        lines += [
            "",
            f"## Training throughput, {tp.get('precision')} (clips held on the device: the model alone)",
            "",
            "MFU = model FLOPs (3 x the visual encoder's forward matmul FLOPs per clip, stated below) x clips/s "
            f"/ {_fmt(peak)} TFLOP/s dense bf16 peak; the last column against the matmul measured above.",
            "",
            "| arch | torch.compile | batch | GFLOP/clip (train) | clips/s | step s | model TFLOP/s | MFU | "
            "% of matmul | peak memory | compile s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tp_rows:
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['arch']} | {r['compile']} | {r['batch']} | | {r.get('error', r.get('skipped'))} |")
                continue
            lines.append(
                f"| {r['arch']} | {'yes' if r['compile'] else 'no'} | {r['batch']} | {r['train_gflop_per_clip']} | "
                f"{r['clips_s']} | {r['step_s']} | {r['model_tflops']} | {_fmt(r.get('mfu_pct'), ' %')} | "
                f"{_fmt(r.get('pct_of_matmul'), ' %')} | {_fmt(r.get('peak_gib'), ' GiB')} | "
                f"{_fmt(r.get('compile_s'))} |"
            )
        if tp.get("top_ops"):
            lines += ["", f"Top operators by self device time ({tp['profile_arch']}, eager; {PROFILE_TABLE}):", ""]
            lines += [f"- {o['op']}: {100 * o['share']:.1f} % ({o['calls']} calls)" for o in tp["top_ops"][:8]]
    bt = report["steps"].get("bench_train", {}).get("result", {})
    if bt.get("rows"):
        lines += [
            "",
            f"## bench/train.py ({bt.get('source')}): `{bt.get('command')}`",
            "",
            "| arch | original-like clips/s | ours clips/s | speed-up | ours TFLOP/s | MFU | peak mem | data wait |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in bt["rows"]:
            lines.append(
                f"| {r['arch']} | {r['original_clips_s']} | {r['ours_clips_s']} | {r['speedup']}x | "
                f"{r['ours_tflops']} | {_fmt(r['mfu_pct'], ' %')} | {_fmt(r['peak_gib'], ' GiB')} | "
                f"{r['data_wait_pct']} % |"
            )
    demo = report["steps"].get("demo", {}).get("result", {})
    if "train_s" in demo:
        lines += [
            "",
            f"## Demo ({demo.get('config')}, {demo.get('precision')}, --opts {' '.join(demo.get('opts', []))})",
            "",
            "| data s | train s | epochs | best val top-1 (1 view) | test s | test top-1 (3x2) | test top-5 |",
            "|---|---|---|---|---|---|---|",
            f"| {demo.get('generate_s')} | {demo['train_s']} | {demo.get('epochs')} | "
            f"{_fmt(demo.get('best_val_top1'))} "
            f"| {_fmt(demo.get('test_s'))} | {_fmt(demo.get('test_top1'))} | {_fmt(demo.get('test_top5'))} |",
        ]
    ev = report["steps"].get("eval", {}).get("result", {})
    if "e2e_ours" in ev:
        lines += [
            "",
            f"## Evaluation: `{ev.get('command')}`",
            "",
            "| videos/s | original | ours | speed-up |",
            "|---|---|---|---|",
            f"| data only | {ev['data_original']:.2f} | {ev['data_ours']:.2f} | "
            f"{ev['data_ours'] / ev['data_original']:.2f}x |",
            f"| end to end | {ev['e2e_original']:.3f} | {ev['e2e_ours']:.3f} | "
            f"{ev['e2e_ours'] / ev['e2e_original']:.2f}x |",
            "",
            f"Agreement: min cosine {ev['min_cosine']:.5f}, same top-1 for {100 * ev['same_top1']:.0f} % of videos.",
        ]
    tests = report["steps"].get("tests", {}).get("result", {})
    if tests.get("cases"):
        c = tests["counts"]
        lines += ["", f"## CUDA tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped", ""]
        lines += [
            f"- {n}: {o}" + (f" ({tests['reasons'][n]})" if n in tests["reasons"] else "")
            for n, o in tests["cases"].items()
        ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """Both files, each replaced whole (a reader never sees half a file)."""
    for name, text in (
        ("gpu_check.json", json.dumps(report, indent=1, default=str)),
        ("gpu_check.md", markdown(report)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json/.md/.log and the profile (e.g. $OUT)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--dry-run", action="store_true", help="tiny settings (CPU): checks the wiring, measures nothing")
    p.add_argument("--budget", type=float, default=None, help="seconds for all steps (default 480; dry run 1200)")
    p.add_argument("--only", default="", help=f"comma-separated steps to run (of {', '.join(STEPS)})")
    p.add_argument("--work", default=str(ROOT / ".cache" / "gpu_check"), help="scratch folder (generated data)")
    p.add_argument("--step", default=None, choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--matmul-tflops", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--arch", default="", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.device == "cpu" and not a.dry_run:
        p.error("--device cpu measures nothing worth keeping: use it with --dry-run")
    a.steps = [s.strip() for s in a.only.split(",") if s.strip()] or list(STEPS)
    unknown = [s for s in a.steps if s not in STEPS]
    if unknown:
        p.error(f"--only: unknown step(s) {', '.join(unknown)} (steps: {', '.join(STEPS)})")
    if a.budget is None:
        a.budget = 1200.0 if a.dry_run else 480.0
    if a.budget <= 0:
        p.error(f"--budget must be positive, got {a.budget:g}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.step:
        return run_step(a)
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    s = DRY if a.dry_run else GPU
    log = out / "gpu_check.log"
    log.unlink(missing_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "dry run" if a.dry_run else "GPU",
        "device": a.device,
        "command": " ".join(["python", "bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "budget": a.budget,
        "settings": {k: v for k, v in asdict(s).items() if k != "timeouts"},
        "steps": {},
        "seconds": 0.0,
    }
    matmul = None
    for name, step, arch in plan(a.steps, s):
        left = a.budget - (time.perf_counter() - t0)
        if left < MIN_START_S:
            rec = StepRecord(name, "skipped", 0.0, f"out of budget ({left:.0f} s left of {a.budget:g})")
        else:
            rec = run_child(name, step, arch, a, min(s.timeouts[step], left), matmul, log)
        if name == "env":
            matmul = rec.result.get("matmul_tflops")
        report["steps"][name] = asdict(rec)
        report["seconds"] = round(time.perf_counter() - t0, 1)
        write_report(report, out)
        print(f"[gpu_check] {name}: {rec.status} in {rec.seconds:g} s {rec.note}"[:400], flush=True)
    print((out / "gpu_check.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
