"""utils.heap: freed buffers stay in the process (no fresh pages per clip), in loader workers only
when data.reuse_freed_memory is on, and every loader the entry points build passes the key on."""

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
from datasets import build_loader
from datasets.synthetic import generate
from tests.test_data_dataset import make_cfg
from utils.distributed import DistInfo
from utils.heap import _glibc

ROOT = Path(__file__).resolve().parents[1]
BIG = 40 << 20  # above glibc's largest dynamic mmap threshold (32 MB): always fresh pages by default

pytestmark = pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")


def faults_of_one_buffer() -> int:
    """Minor page faults of allocating, touching and freeing one BIG buffer."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buf = bytearray(BIG)  # malloc'd and zero-filled: every page is touched
    del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


class FaultCounter(torch.utils.data.Dataset):
    """Each item: the page faults of one clip-sized buffer in the worker that loads it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return faults_of_one_buffer()


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
    loader = build_loader(FaultCounter(), 1, 1, train=False, reuse_memory=reuse)
    faults = [int(f) for batch in loader for f in batch][1:]  # the first item grows the heap
    pages = BIG // resource.getpagesize()
    assert max(faults) < pages // 20 if reuse else min(faults) > pages // 2


def test_every_entry_point_passes_the_key_on(tmp_path: Path) -> None:
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
