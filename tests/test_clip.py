"""clip/: arch names -> QuickGELU open_clip models, tokenizer, sizes, determinism of random weights."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

import clip
from clip.archs import infer_arch, model_config
from utils.errors import UserError

ORIGINAL_NAMES = ["RN50", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14-336px"]
OPEN_CLIP_NAMES = {
    "ViT-B-32": "ViT-B-32-quickgelu",
    "ViT-B-16": "ViT-B-16-quickgelu",
    "ViT-L-14": "ViT-L-14-quickgelu",
    "ViT-L-14-336": "ViT-L-14-336-quickgelu",
    "RN50-quickgelu": "RN50-quickgelu",
    "ViT-B-32-quickgelu": "ViT-B-32-quickgelu",
}


@pytest.mark.parametrize("arch", ORIGINAL_NAMES)
def test_original_names_resolve_to_quickgelu_configs(arch):
    name = clip.resolve_arch(arch)
    assert name.endswith("-quickgelu") and name in open_clip.list_models()
    assert model_config(arch)["quick_gelu"] is True


def test_expected_mapping_of_names():
    assert clip.resolve_arch("ViT-B/32") == "ViT-B-32-quickgelu"
    assert clip.resolve_arch("ViT-L/14-336px") == "ViT-L-14-336-quickgelu"
    assert clip.resolve_arch("RN50") == "RN50-quickgelu"
    for spelled, expected in OPEN_CLIP_NAMES.items():
        assert clip.resolve_arch(spelled) == expected
    for tiny in ("tiny", "tiny-rn"):
        assert model_config(tiny)["quick_gelu"] is True


def test_unknown_arch_lists_valid_names():
    with pytest.raises(UserError) as err:
        clip.resolve_arch("ViT-B/64")
    msg = str(err.value)
    assert "ViT-B/64" in msg and "ViT-B/32" in msg and "RN50" in msg and "tiny" in msg


def _activations(model: torch.nn.Module) -> set[type]:
    return {type(m) for name, m in model.named_modules() if name.endswith("mlp.gelu")}


@pytest.mark.parametrize("arch", ["tiny", "tiny-rn"])
def test_tiny_models_build_quickgelu_everywhere(arch):
    model = clip.create_clip(arch, "none")
    assert infer_arch(model.state_dict()) == arch
    assert _activations(model) == {QuickGELU}
    assert not any(isinstance(m, torch.nn.GELU) for m in model.modules())


def test_vit_b32_is_built_with_quickgelu():
    """The README's arch: build it for real (random weights) and look at its activations."""
    model = clip.create_clip("ViT-B/32", "none")
    assert _activations(model) == {QuickGELU}
    assert not any(isinstance(m, torch.nn.GELU) for m in model.modules())
    assert clip.embed_dim(model) == 512 and clip.text_width(model) == 512
    assert model.visual.conv1.kernel_size == (32, 32)
    assert infer_arch(model.state_dict()) == "ViT-B/32"  # an arch given as a file is recognised


def test_gelu_model_with_quickgelu_weights_gives_other_features(tmp_path):
    """What the QuickGELU table protects against: same weights, GELU activations -> other features."""
    src = clip.create_clip("tiny", "none").eval()
    cfg = model_config("tiny")
    cfg["quick_gelu"] = False
    gelu = open_clip.CLIP(**cfg).eval()
    gelu.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    text = clip.get_tokenizer("tiny")(["a video of a person dancing."])
    with torch.no_grad():
        assert not torch.allclose(gelu.visual(x), src.visual(x), atol=1e-4)
        assert not torch.allclose(gelu.encode_text(text), src.encode_text(text), atol=1e-4)
        path = tmp_path / "w.pt"
        torch.save(src.state_dict(), path)
        loaded = clip.create_clip("tiny", str(path)).eval()
        assert torch.equal(loaded.visual(x), src.visual(x))


def test_sizes_of_tiny_models():
    vit = clip.create_clip("tiny", "none")
    rn = clip.create_clip("tiny-rn", "none")
    assert clip.embed_dim(vit) == 256 and clip.text_width(vit) == 256
    assert clip.embed_dim(rn) == 256 and clip.text_width(rn) == 256
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert vit.visual(x).shape == (2, 256)
        assert rn.visual(x).shape == (2, 256)
    assert next(vit.parameters()).dtype == torch.float32


def test_random_weights_are_reproducible_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = clip.create_clip("tiny", "none")
    after = torch.rand(3)
    b = clip.create_clip("tiny", "none")
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_tokenizer_matches_open_clip_and_rejects_long_text():
    tok = clip.get_tokenizer("ViT-B/32")
    names = ["a video of a person dancing.", "a video of a person abseiling."]
    ids = tok(names)
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert torch.equal(ids, open_clip.get_tokenizer("ViT-B-32")(names))
    assert ids[0, 0] == 49406 and 49407 in ids[0].tolist()
    with pytest.raises(UserError, match="context length"):
        tok(["word " * 80])


def test_tiny_tokenizer_is_the_real_bpe():
    assert torch.equal(clip.get_tokenizer("tiny")(["abseiling"]), clip.get_tokenizer("RN50")(["abseiling"]))


def test_grad_checkpointing_is_opt_in_and_numerically_neutral():
    plain = clip.create_clip("tiny", "none")
    ckpt = clip.create_clip("tiny", "none", training=clip.VisualTraining(grad_checkpointing=True))
    assert plain.visual.transformer.grad_checkpointing is False
    assert ckpt.visual.transformer.grad_checkpointing is True
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    grads = []
    for m in (plain, ckpt):
        m.zero_grad()
        m.visual(x).square().sum().backward()
        grads.append(m.visual.conv1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
