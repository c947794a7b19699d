"""What a run folder does not record by itself and a report needs to say what ran: the command line,
the git commit, the library versions, the machine and the start / end time of each invocation.

`record_invocation(folder, script)` appends one entry to `<folder>/run_info.json` (a resumed training
run has several). Called at the end of train.py, test.py and test_zeroshot.py (through
`app.report.after_run`); it imports nothing heavy and starts only `git` (with a timeout).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from utils.fileio import atomic_write_text

RUN_INFO = "run_info.json"
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "torchcodec", "av", "webdataset", "onnxruntime")


def iso(seconds: float) -> str:
    """Local time with its UTC offset, to the second (`2026-12-03T07:24:11+00:00`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds)).replace("+0000", "+00:00")


def process_start() -> float | None:
    """When this process started (seconds since the epoch), from /proc on Linux; None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): start time in clock ticks after boot
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def git_state(root: Path = ROOT) -> dict[str, Any] | None:
    """{commit, dirty} of the checkout the code runs from; None outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that decide the numbers."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, Any]:
    """OS, CPU and accelerators, without importing torch (it is asked only when already loaded)."""
    info: dict[str, Any] = {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "hostname": platform.node(),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def invocation(script: str) -> dict[str, Any]:
    """This process as one run_info.json entry."""
    started = process_start()
    env = {k: os.environ[k] for k in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    argv = [sys.argv[0] or script, *sys.argv[1:]]
    return {
        "script": script,
        "argv": argv,
        "command": shlex.join(launcher(env) + argv),
        "cwd": os.getcwd(),
        "started": iso(started) if started is not None else None,
        "ended": iso(time.time()),
        "git": git_state(),
        "versions": versions(),
        "machine": machine(),
        "environment": env,
    }


def launcher(env: dict[str, str]) -> list[str]:
    """`python`, or the torchrun line of a multi-process run (from torchrun's environment)."""
    world, local = int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_WORLD_SIZE", 1))
    if world <= 1:
        return ["python"]
    nodes = max(world // max(local, 1), 1)
    return ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local}"]


def read_run_info(folder: Path) -> dict[str, Any] | None:
    """The recorded invocations of a run folder, None when it has none (or the file is damaged)."""
    path = folder / RUN_INFO
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("invocations"), list) else None


def record_invocation(folder: Path, script: str) -> Path:
    """Append this process to `<folder>/run_info.json` (atomically)."""
    data = read_run_info(folder) or {"invocations": []}
    data["invocations"].append(invocation(script))
    return atomic_write_text(folder / RUN_INFO, json.dumps(data, indent=2) + "\n")
