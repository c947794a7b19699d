"""utils.distributed: single-process defaults, SLURM parsing, and the helpers over 2 gloo processes."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from utils import distributed as D

ROOT = Path(__file__).resolve().parents[1]


def test_single_process_without_launcher(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    info = D.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.local_rank, info.distributed) == (0, 1, 0, False)
    assert info.device == torch.device("cpu") and info.is_main
    t = torch.arange(3.0)
    assert torch.equal(D.all_gather_tensor(t), t)
    assert D.all_gather_object({"a": 1}) == [{"a": 1}]
    assert torch.equal(D.broadcast_tensor(t), t)
    assert D.broadcast_object("x") == "x"
    assert torch.equal(D.all_reduce_sum(t), t)
    D.barrier()
    D.cleanup()


def test_slurm_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so the values _env_ranks writes are undone afterwards
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODELIST", "gpu[07-08,11]")
    assert D._env_ranks() == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["RANK"] == "5"
    assert D._first_slurm_host("node1,node2") == "node1"
    assert D._first_slurm_host("a[3,5]") == "a3"


@pytest.mark.slow
def test_helpers_over_two_gloo_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        from utils import distributed as D
        info = D.init_distributed(device="cpu")
        r = info.rank
        assert info.distributed and info.world_size == 2
        g = D.all_gather_tensor(torch.full((r + 1, 2), float(r)))      # 1 row from rank 0, 2 from rank 1
        assert g.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], g
        e = D.all_gather_tensor(torch.zeros(0, 2) if r == 0 else torch.ones(1, 2))  # an empty rank
        assert e.tolist() == [[1.0, 1.0]]
        assert D.all_gather_object({"r": r}) == [{"r": 0}, {"r": 1}]
        b = D.broadcast_tensor(torch.arange(6.0).reshape(2, 3) if r == 0 else None)
        assert b.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert D.broadcast_object("from0" if r == 0 else None) == "from0"
        assert D.all_reduce_sum(torch.tensor([r + 1.0])).item() == 3.0
        D.barrier()
        D.cleanup()
        print(f"rank{r}-ok", flush=True)
    """)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(script),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "rank0-ok" in proc.stdout and "rank1-ok" in proc.stdout
