"""How long `--help` of every entry point takes, next to `import torch` and `import open_clip`
timed the same way in the same run.

    .venv/bin/python bench/cli_help.py [--repeat 3] [--only train.py,app.extract]

Each command runs in a fresh interpreter (as a user starts it) `--repeat` times; the best wall
time is reported (the least disturbed by other load on the machine), with whether torch or
open_clip was imported on the way (`python -X importtime`). Every entry point builds its parser
from `utils.cli` alone and answers `--help` before its heavy imports, so its time should be that
of a bare interpreter, far below the baseline rows.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = ("app", "datasets", "modules", "utils")
MAIN = '\nif __name__ == "__main__":\n    run_cli(main)'  # how every entry point ends


def entry_points() -> list[str]:
    """Every command a user runs: the scripts at the top of the repository and the `python -m`
    tools of the packages (the modules that end with `run_cli(main)`)."""
    found = sorted(p.name for p in ROOT.glob("*.py") if MAIN in p.read_text())
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            if MAIN in path.read_text():
                found.append(f"{package}.{path.stem}")
    return found


HEAVY = ("torch", "open_clip")
BASELINES = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "import open_clip": ["-c", "import open_clip"],
}


def help_args(entry: str) -> list[str]:
    """The interpreter arguments of `entry --help`."""
    return [entry, "--help"] if entry.endswith(".py") else ["-m", entry, "--help"]


def heavy_imports(importtime: str) -> list[str]:
    """Which of HEAVY a `python -X importtime` report (its stderr) shows imported."""
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", importtime, re.M))
    return [name for name in HEAVY if name in names]


def run_once(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    return time.perf_counter() - start, proc


def measure(args: list[str], repeat: int) -> tuple[float, list[str], int]:
    """(best seconds, heavy modules imported, exit status) of `python args` run `repeat` times."""
    best, proc = min((run_once(args) for _ in range(repeat)), key=lambda r: r[0])
    return best, heavy_imports(proc.stderr), proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the best is reported")
    parser.add_argument("--only", default="", help="comma-separated entry points (default: all)")
    args = parser.parse_args(argv)
    every = entry_points()
    entries = [e for e in args.only.split(",") if e] or every
    unknown = [e for e in entries if e not in every]
    if unknown or args.repeat < 1:
        parser.error(f"unknown entry point(s) {', '.join(unknown)}" if unknown else "--repeat must be >= 1")
    print(f"{'command':34s} {'best s':>7s}  imports")
    baseline: dict[str, float] = {}
    for name, cmd in BASELINES.items():
        seconds, _, code = measure(cmd, args.repeat)
        baseline[name] = seconds
        print(f"{name:34s} {seconds:7.2f}  (baseline{'' if code == 0 else f', exit {code}'})")
    slowest = 0.0
    failed = []
    for entry in entries:
        seconds, heavy, code = measure(help_args(entry), args.repeat)
        slowest = max(slowest, seconds)
        if code != 0 or heavy:
            failed.append(entry)
        note = ", ".join(heavy) if heavy else "no torch, no open_clip"
        print(f"{entry + ' --help':34s} {seconds:7.2f}  {note}{'' if code == 0 else f' (exit {code})'}")
    print(
        f"slowest --help {slowest:.2f} s; import torch {baseline['import torch']:.2f} s "
        f"({baseline['import torch'] / max(slowest, 1e-9):.0f}x the slowest --help)"
    )
    if failed:
        print(f"error: --help imported torch/open_clip or failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
