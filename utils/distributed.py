"""Process-group set-up that works the same with and without a launcher.

`init_distributed()` reads torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR`, `MASTER_PORT`) or SLURM's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
`SLURM_NODELIST`), and falls back to a single process (world size 1, no process group) when
neither is present, so `python train.py` runs the same code as `torchrun train.py`. NCCL is used
on GPU and gloo on CPU.

The helpers below are safe to call in a single process (they become no-ops or identities), and
they move tensors to the device the backend needs (CUDA for NCCL, CPU for gloo) and back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from utils.choices import DEVICES
from utils.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as `node[03-05,07],gpu1` -> `node03`."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return nodelist
    prefix, _, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _env_ranks() -> tuple[int, int, int] | None:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", 0))
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_NODELIST", "127.0.0.1")))
        env.setdefault("MASTER_PORT", "29500")
        env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(rank), str(world), str(local)
        return rank, world, local
    return None


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` (the local rank's GPU when CUDA is available, else the CPU), `cpu` or `cuda`; the one
    place every entry point turns `--device` into a device. `cuda` without a GPU is a UserError."""
    if name not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _die_with_launcher() -> None:
    """Under torchrun every rank is a child of the launcher's agent. If the agent is killed (SIGKILL,
    the OOM killer), nothing would stop the ranks: they would train on unsupervised, holding the
    GPUs. Ask the kernel (Linux prctl PR_SET_PDEATHSIG) to send this rank SIGTERM when its parent
    dies, and stop now if it is already gone."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def init_distributed(device: str = "auto", timeout_s: float | None = None) -> DistInfo:
    """Join the process group described by the environment (or run alone).

    `device`: see `select_device`. `timeout_s` bounds every collective, so a rank that dies leaves
    the others with an error instead of a hang (default `TEXT4VIS_DIST_TIMEOUT` seconds, else 1800).
    """
    ranks = _env_ranks()
    rank, world, local = ranks if ranks else (0, 1, 0)
    _die_with_launcher()
    dev = select_device(device, local)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        if timeout_s is None:
            timeout_s = float(os.environ.get("TEXT4VIS_DIST_TIMEOUT", 1800))
        kwargs: dict[str, Any] = {}
        if use_cuda:
            kwargs["device_id"] = dev
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            **kwargs,
        )
    return DistInfo(rank, world, local, dev, distributed)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Run the body on rank 0 first and on the other ranks after it: rank 0 fills a cache (class
    embeddings, downloaded weights) that the others then read instead of racing to write it."""
    if get_rank() != 0:
        barrier()
    yield
    if get_rank() == 0:
        barrier()


def _comm_device() -> torch.device:
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks (a new tensor on the input's device)."""
    if not is_dist():
        return tensor.clone()
    buf = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 0 in rank order; sizes along dim 0 may differ."""
    if not is_dist():
        return tensor
    comm = _comm_device()
    local = tensor.detach().to(comm).contiguous()
    n = torch.tensor([local.shape[0]], device=comm, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    biggest = max(sizes_i)
    padded = torch.zeros((biggest, *local.shape[1:]), dtype=local.dtype, device=comm)
    padded[: local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in sizes_i]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes_i, strict=True)]).to(tensor.device)


def all_gather_keep_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows along dim 0 in rank order, without gradient, except this rank's own rows,
    which are `tensor` itself: the gradient flows through the local rows only (the contrastive
    gather of the original's train_nce.py). Sizes along dim 0 may differ; a single process gets
    `tensor` back unchanged."""
    if not is_dist():
        return tensor
    gathered = all_gather_tensor(tensor.detach())
    sizes = all_gather_tensor(torch.tensor([tensor.shape[0]], device=tensor.device))
    start = int(sizes[: get_rank()].sum())
    return torch.cat([gathered[:start], tensor, gathered[start + tensor.shape[0] :]])


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank."""
    if not is_dist():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def broadcast_tensor(
    tensor: torch.Tensor | None, src: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rank `src`'s tensor on every rank (other ranks may pass None: shape/dtype travel too)."""
    if get_rank() == src and tensor is None:
        raise ValueError("broadcast_tensor: the source rank must pass a tensor")
    if not is_dist():
        assert tensor is not None
        return tensor if device is None else tensor.to(device)
    meta = broadcast_object(
        (tuple(tensor.shape), tensor.dtype) if tensor is not None and get_rank() == src else None, src
    )
    comm = _comm_device()
    if tensor is not None and get_rank() == src:
        buf = tensor.detach().to(comm).contiguous()
    else:
        buf = torch.empty(meta[0], dtype=meta[1], device=comm)
    dist.broadcast(buf, src=src)
    target = device if device is not None else (tensor.device if tensor is not None else comm)
    return buf.to(target)


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if is_dist():
        with contextlib.suppress(Exception):  # teardown after a failure must not mask the first error
            dist.destroy_process_group()
