"""utils.heap: freed buffers stay in the process (no fresh pages per clip), in loader workers only
when data.reuse_freed_memory is on, and train.py's and test.py's loaders pass the key on."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import train
from app.eval_run import EvalRun
from datasets.synthetic import generate
from tests.test_data_dataset import make_cfg
from utils.distributed import DistInfo
from utils.heap import _glibc

ROOT = Path(__file__).resolve().parents[1]
BIG = 40 << 20  # above glibc's largest dynamic mmap threshold (32 MB): always fresh pages by default

pytestmark = pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")


@pytest.mark.parametrize("reuse", [True, False])
def test_freed_buffers_are_reused_only_when_asked(reuse: bool) -> None:
    code = (
        "import resource\n"
        "from utils.heap import reuse_freed_memory\n"
        f"assert reuse_freed_memory() if {reuse} else True\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        f"    bytearray({BIG})\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "faults()\n"
        "print(max(faults() for _ in range(5)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    pages = BIG // resource.getpagesize()
    faults = int(out.stdout)
    assert faults < pages // 20 if reuse else faults > pages // 2


@pytest.mark.parametrize("reuse", [True, False])
def test_loader_workers_reuse_freed_memory_per_flag(reuse: bool) -> None:
    # A fresh process: the worker inherits its parent's malloc state, which a long pytest run can
    # have changed.
    code = (
        "import resource, torch\n"
        "from datasets import build_loader\n"
        "class Faults(torch.utils.data.Dataset):\n"
        "    def __len__(self):\n"
        "        return 4\n"
        "    def __getitem__(self, index):\n"
        "        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        f"        bytearray({BIG})\n"
        "        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        f"loader = build_loader(Faults(), 1, 1, train=False, reuse_memory={reuse})\n"
        "print(*[int(f) for batch in loader for f in batch][1:])\n"  # the first item grows the heap
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    faults = [int(f) for f in out.stdout.split()]
    pages = BIG // resource.getpagesize()
    assert len(faults) == 3
    assert max(faults) < pages // 20 if reuse else min(faults) > pages // 2


def test_train_val_and_test_loaders_pass_the_key_on(tmp_path: Path) -> None:
    syn = tmp_path / "syn"
    generate(syn, classes=2, videos_per_class=2, val_videos_per_class=1, frames=8, size=32, fmt="frames", seed=3)
    dist = DistInfo(0, 1, 0, torch.device("cpu"), False)
    for flag in (True, False):
        cfg = make_cfg(syn, workers=1, reuse_freed_memory=flag)
        evaluation = SimpleNamespace(args=SimpleNamespace(test_crops=1, test_clips=1), dense=False, dist=dist)
        loaders = [
            train.build_train_loader(cfg, dist, tmp_path, print)[0],
            train.build_validation(cfg, dist, print).loader,
            EvalRun.test_data(evaluation, cfg)[1],  # type: ignore[arg-type]
        ]
        assert [ld.worker_init_fn.reuse_memory for ld in loaders] == [flag] * 3
