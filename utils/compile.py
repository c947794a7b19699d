"""`solver.compile`: torch.compile the video model's visual encoder and temporal head in place.

`nn.Module.compile` keeps the module objects and their parameter names, so checkpoints, DDP and
the optimiser groups see the same model as without compiling. The class-embedding matmul and the
loss stay eager (tiny). The first forward and backward compile (tens of seconds on a GPU for a
ViT-B); `warm_up` measures that once so it can be reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

PARTS = ("visual", "fusion_model")


def compile_model(model: nn.Module, parts: Sequence[str] = PARTS, **options: object) -> nn.Module:
    """Compile `model.<part>` in place for each part it has (options go to torch.compile);
    returns `model`."""
    found = [p for p in parts if isinstance(getattr(model, p, None), nn.Module)]
    if not found:
        raise ValueError(f"the model has none of {', '.join(parts)} to compile")
    for name in found:
        getattr(model, name).compile(**options)
    return model


def warm_up(model: nn.Module, example: torch.Tensor) -> float:
    """Seconds of one forward pass without gradients (for a compiled model: mostly compilation)."""
    start = time.perf_counter()
    with torch.no_grad():
        model(example)
    if example.is_cuda:
        torch.cuda.synchronize(example.device)
    return time.perf_counter() - start
