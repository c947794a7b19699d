"""solver.compile: the compiled video model gives the eager model's logits (CPU, within 1e-5),
keeps its parameter names, and trains."""

from __future__ import annotations

import pytest
import torch

from modules.model_builder import build_model
from utils.compile import compile_model
from utils.config import resolve, to_config


@pytest.mark.slow
def test_compiled_logits_equal_eager(tmp_path):
    cfg = to_config(
        resolve(
            {
                "data": {"num_segments": 4, "input_size": 112},
                "network": {
                    "arch": "tiny",
                    "pretrained": "none",
                    "sim_header": "Transf",
                    "text_cache": str(tmp_path / "cache"),
                },
            },
            "test",
        )
    )
    torch.manual_seed(0)
    model = build_model(cfg, ["a", "b", "c"]).eval()
    x = torch.randn(2, 4, 3, 112, 112)
    with torch.no_grad():
        eager = model(x)
    names = [n for n, _ in model.named_parameters()]
    compile_model(model)
    assert [n for n, _ in model.named_parameters()] == names  # checkpoints and optimiser groups unchanged
    assert model.visual._compiled_call_impl is not None and model.fusion_model._compiled_call_impl is not None
    with torch.no_grad():
        compiled = model(x)
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=0), (compiled - eager).abs().max()
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.fusion_model.parameters())


def test_compile_needs_a_video_model():
    with pytest.raises(ValueError, match="has none of visual, fusion_model"):
        compile_model(torch.nn.Linear(2, 2))
