"""`solver.compile`: torch.compile the video model's visual encoder and temporal head in place.

`nn.Module.compile` keeps the module objects and their parameter names, so checkpoints, DDP and
the optimiser groups see the same model as without compiling. The class-embedding matmul and the
loss stay eager (tiny). The first forward and backward compile (tens of seconds on a GPU for a
ViT-B); train.py logs the first step's time, which is mostly that.
"""

from __future__ import annotations

from collections.abc import Sequence

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
