"""Checkpoint loading: the original Text4Vis layout (with/without `module.`), ours, the CLI, errors."""

import argparse
import math

import pytest
import torch

from modules import convert
from modules.heads import build_head
from modules.video_model import VideoCLIP
from utils.errors import UserError

D = 32


def tiny_visual(patch=16, width=64):
    import open_clip

    model = open_clip.CLIP(
        embed_dim=D,
        quick_gelu=True,
        vision_cfg=dict(image_size=32, layers=2, width=width, head_width=32, patch_size=patch),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1),
    )
    return model.visual


def make_model(seed, patch=16, width=64, head="Transf", fix_text=True, classes=5):
    torch.manual_seed(seed)
    return VideoCLIP(
        tiny_visual(patch, width),
        build_head(head, D, 4, heads=1),
        torch.randn(classes, D),
        fix_text=fix_text,
        logit_scale=math.log(1 / 0.07),
    )


def original_checkpoint(seed=123, prefix=""):
    """A checkpoint as the original's train.py saves it, from random weights: visual.* from an
    open_clip visual tower, fusion_model.* of the Transf head, logit_scale; no class embeddings."""
    torch.manual_seed(seed)
    visual = tiny_visual()
    head = build_head("Transf", D, 4, heads=1)
    sd = {f"{prefix}visual.{k}": torch.randn_like(v) for k, v in visual.state_dict().items()}
    sd.update({f"{prefix}fusion_model.{k}": torch.randn_like(v) for k, v in head.state_dict().items()})
    sd[f"{prefix}logit_scale"] = torch.tensor(4.6052)
    return {"epoch": 29, "model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}}


def assert_loaded(model, ckpt, prefix=""):
    own = model.state_dict()
    src = ckpt["model_state_dict"]
    assert len(src) == len(own) - 1  # everything but class_embeddings
    for k, v in src.items():
        assert torch.equal(own[k[len(prefix) :]], v), k


@pytest.mark.parametrize("prefix", ["", "module."])
def test_original_layout_loads_exactly(prefix, tmp_path):
    ckpt = original_checkpoint(prefix=prefix)
    path = tmp_path / "orig.pt"
    torch.save(ckpt, path)
    model = make_model(0)
    emb_before = model.class_embeddings.clone()
    report = convert.load_weights(model, path)
    assert_loaded(model, ckpt, prefix)
    assert torch.equal(model.class_embeddings, emb_before)  # from the CSV, not the checkpoint
    assert report.layout.startswith("original") and not report.class_embeddings_loaded
    assert model.logit_scale.item() == pytest.approx(4.6052)


def test_head_wrapped_alone_module_infix_is_stripped():
    ckpt = original_checkpoint()
    sd = ckpt["model_state_dict"]
    ckpt["model_state_dict"] = {k.replace("fusion_model.", "fusion_model.module."): v for k, v in sd.items()}
    model = make_model(0)
    convert.load_weights(model, ckpt)
    assert torch.equal(
        model.fusion_model.frame_position_embeddings.weight, sd["fusion_model.frame_position_embeddings.weight"]
    )


def test_cli_round_trips_weights_exactly(tmp_path):
    ckpt = original_checkpoint(prefix="module.")
    torch.save(ckpt, tmp_path / "orig.pt")
    convert.main([str(tmp_path / "orig.pt"), str(tmp_path / "ours.pt")])
    ours = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert ours["epoch"] == 29 and set(ours) >= {"model", "source"}
    src = {k[len("module.") :]: v for k, v in ckpt["model_state_dict"].items()}
    assert set(ours["model"]) == set(src)
    assert all(torch.equal(ours["model"][k], v) for k, v in src.items())
    model = make_model(1)
    convert.load_weights(model, tmp_path / "ours.pt")
    assert_loaded(model, {"model_state_dict": src})
    # and back: our model's state dict equals the original weights (+ class embeddings)
    back = {k: v for k, v in model.state_dict().items() if k != "class_embeddings"}
    assert all(torch.equal(back[k], v) for k, v in src.items()) and set(back) == set(src)


def test_our_checkpoint_and_class_embedding_policy(tmp_path):
    trained = make_model(7, fix_text=False)
    ckpt = {"model": trained.state_dict(), "config": {}, "epoch": 3}
    frozen = make_model(8)
    emb = frozen.class_embeddings.clone()
    convert.load_weights(frozen, ckpt)  # frozen: keep the CSV's embeddings
    assert torch.equal(frozen.class_embeddings, emb)
    assert torch.equal(frozen.visual.proj, trained.visual.proj)
    trainable = make_model(9, fix_text=False)
    assert convert.load_weights(trainable, ckpt).class_embeddings_loaded  # trained matrix is part of the model
    assert torch.equal(trainable.class_embeddings, trained.class_embeddings)
    other_classes = make_model(9, fix_text=False, classes=3)
    assert not convert.load_weights(other_classes, ckpt).class_embeddings_loaded
    with pytest.raises(UserError, match=r"class embeddings have shape \(5, 32\)"):
        convert.load_weights(other_classes, ckpt, class_embeddings=True)
    forced = make_model(10, classes=5)
    convert.load_weights(forced, ckpt, class_embeddings=True)
    assert torch.equal(forced.class_embeddings, trained.class_embeddings)
    wrapper = torch.nn.Module()
    wrapper.module = make_model(11)
    convert.load_weights(wrapper, ckpt)  # DDP-style wrappers (.module) are unwrapped
    assert torch.equal(wrapper.module.visual.proj, trained.visual.proj)


def test_other_architecture_gives_short_clear_error(tmp_path):
    other = make_model(3, patch=8, width=96, head="None")
    path = tmp_path / "b16.pt"
    torch.save({"model_state_dict": other.state_dict()}, path)
    model = make_model(0)
    with pytest.raises(UserError) as err:
        convert.load_weights(model, path)
    msg = str(err.value)
    assert "b16.pt" in msg and "missing keys" in msg and "shape mismatches" in msg
    assert "fusion_model.frame_position_embeddings.weight" in msg  # the head the checkpoint lacks
    assert "visual.conv1.weight (96, 3, 8, 8) vs (64, 3, 16, 16)" in msg
    assert len(msg) < 1500 and "more)" in msg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = convert.load_weights(model, path, strict=False)
    assert report.mismatched and report.missing
    assert torch.equal(model.visual.conv1.weight, before["visual.conv1.weight"])  # mismatches skipped


def test_unexpected_keys_are_reported():
    ckpt = original_checkpoint()
    ckpt["model_state_dict"]["visual.extra_temporal.weight"] = torch.zeros(3)
    with pytest.raises(UserError, match=r"1 unexpected keys: visual\.extra_temporal\.weight"):
        convert.load_weights(make_model(0), ckpt)


def test_missing_or_unreadable_files(tmp_path):
    model = make_model(0)
    with pytest.raises(UserError, match="not found.*nope.pt"):
        convert.load_weights(model, tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(UserError, match="junk.pt is not a PyTorch checkpoint"):
        convert.load_weights(model, tmp_path / "junk.pt")
    torch.save({"optimizer": {}}, tmp_path / "noweights.pt")
    with pytest.raises(UserError, match="no model weights"):
        convert.load_weights(model, tmp_path / "noweights.pt")
    torch.save({"model_state_dict": {"x": argparse.Namespace()}}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="pickled.pt holds Python objects besides tensors"):  # weights_only refuses
        convert.load_weights(model, tmp_path / "pickled.pt")


def test_builder_model_loads_original_layout(tmp_path):
    """The public API path: build_model from a config, then load_weights of an original checkpoint."""
    from modules.model_builder import build_model
    from utils.config import resolve, to_config

    cfg = to_config(
        resolve(
            {
                "data": {"num_segments": 2, "input_size": 112},
                "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "classifier": "random"},
            },
            "test",
        )
    )
    model = build_model(cfg, ["a", "b"])
    torch.manual_seed(5)
    sd = {f"module.{k}": torch.randn_like(v) for k, v in model.state_dict().items() if k != "class_embeddings"}
    torch.save({"epoch": 0, "model_state_dict": sd, "optimizer_state_dict": {}}, tmp_path / "orig.pt")
    convert.load_weights(model, tmp_path / "orig.pt")
    own = model.state_dict()
    assert all(torch.equal(own[k[len("module.") :]], v) for k, v in sd.items())


def test_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "modules.convert", str(tmp_path / "missing.pt"), str(tmp_path / "o.pt")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.pt'}"
    assert not (tmp_path / "o.pt").exists()


# ----------------------------------------------------------------------------- the original's TSM wrappers
def original_shift(x, n_segment, fold_div=8):
    """The original's TemporalShift.shift (modules/temporal_modeling.py), (nt, c, h, w)."""
    nt, c, h, w = x.size()
    x = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class OriginalShiftViT(torch.nn.Module):
    """The original's TemporalShift_VIT: `.net` is the wrapped block (hence the `.net.` keys); the
    shift runs on the (1 + hw, nt, c) tokens, class token excluded. open_clip's blocks are batch-first."""

    def __init__(self, net, n_segment):
        super().__init__()
        self.net, self.n_segment = net, n_segment

    def forward(self, x, attn_mask=None):
        lnd = x.transpose(0, 1)
        hw, nt, c = lnd.size()
        cls_, patches = lnd[:1], lnd[1:].permute(1, 2, 0)
        side = int((hw - 1) ** 0.5)
        shifted = original_shift(patches.contiguous().view(nt, c, side, side), self.n_segment)
        lnd = torch.cat((cls_, shifted.view(nt, c, side * side).permute(2, 0, 1)), dim=0)
        return self.net(lnd.transpose(0, 1), attn_mask=attn_mask)


class OriginalShiftConv(torch.nn.Module):
    """The original's TemporalShift around a ResNet bottleneck's conv1 ('blockres')."""

    def __init__(self, net, n_segment):
        super().__init__()
        self.net, self.n_segment = net, n_segment

    def forward(self, x):
        return self.net(original_shift(x, self.n_segment))


def _tsm_pair(arch, frames=4):
    """(our tm=tsm model, the original-style visual encoder with `.net` wrappers, its checkpoint)."""
    import clip
    from modules.model_builder import build_model
    from utils.config import resolve, to_config

    cfg = to_config(
        resolve(
            {
                "data": {"num_segments": frames, "input_size": 112},
                "network": {
                    "arch": arch,
                    "pretrained": "none",
                    "tm": "tsm",
                    "sim_header": "meanP",
                    "classifier": "random",
                },
            },
            "test",
        )
    )
    ours = build_model(cfg, ["a", "b"]).eval()
    ref = clip.create_clip(arch, "none", num_frames=frames).visual.eval()  # no shift of its own
    if arch == "tiny":
        blocks = [OriginalShiftViT(b, frames) for b in ref.transformer.resblocks]
        ref.transformer.resblocks = torch.nn.Sequential(*blocks)
    else:
        for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
            for block in layer:
                block.conv1 = OriginalShiftConv(block.conv1, frames)
    torch.manual_seed(11)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    sd = {f"visual.{k}": v for k, v in ref.state_dict().items()}
    sd["logit_scale"] = torch.tensor(4.6052)
    return ours, ref, {"epoch": 3, "model_state_dict": sd}


@pytest.mark.parametrize(
    "arch,wrapped",
    [
        ("tiny", "visual.transformer.resblocks.0.net.attn.in_proj_weight"),
        ("tiny-rn", "visual.layer1.0.conv1.net.weight"),
    ],
)
def test_original_tsm_checkpoint_loads_and_gives_the_original_features(arch, wrapped):
    ours, ref, ckpt = _tsm_pair(arch)
    assert wrapped in ckpt["model_state_dict"]
    report = convert.load_weights(ours, ckpt)
    assert "TSM" in report.layout
    frames = torch.randn(2 * 4, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = ref(frames), ours.visual(frames)
        plain = ref(frames[torch.tensor([0, 2, 1, 3, 4, 5, 6, 7])])
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    assert not torch.allclose(plain[:4], want[:4], atol=1e-4)  # the shift matters: frame order shows


# ----------------------------------------------------------------------------- ActionCLIP heads
def _actionclip_fusion(head_name, d, frames):
    """ActionCLIP's visual_prompt state dict for `head_name`, as its train.py saved it (DataParallel:
    `module.`): its unused 77 x D frame_position_embeddings, Transf_cls under `transformer.`."""
    head = build_head(head_name, d, frames, heads=1)
    torch.manual_seed(4)
    sd = {k: torch.randn_like(v) for k, v in head.state_dict().items()}
    out = {"module.frame_position_embeddings.weight": torch.randn(77, d)}
    for k, v in sd.items():
        name = f"transformer.{k}" if head_name == "Transf_cls" else k
        out[f"module.{name}"] = v
    return sd, out


@pytest.mark.parametrize("head_name", ["Conv_1D", "LSTM", "Transf_cls"])
def test_actionclip_head_checkpoints_load(head_name):
    sd, fusion = _actionclip_fusion(head_name, D, 4)
    model = make_model(0, head=head_name)
    visual = {f"visual.{k}": v.clone() for k, v in model.visual.state_dict().items()}
    ckpt = {
        "model_state_dict": {
            **visual,
            **{f"fusion_model.{k[len('module.') :]}": v for k, v in fusion.items()},
            "logit_scale": torch.tensor(4.0),
        }
    }
    report = convert.load_weights(model, ckpt)  # Text4Vis layout with an ActionCLIP head
    assert "frame_position_embeddings dropped" in report.layout
    for k, v in sd.items():
        assert torch.equal(model.fusion_model.state_dict()[k], v), k


def test_transf_keeps_its_position_embeddings():
    """Only a non-Transf head's frame_position_embeddings are dropped."""
    ckpt = original_checkpoint()
    state, layout = convert.extract_state_dict(ckpt)
    assert "fusion_model.frame_position_embeddings.weight" in state and "dropped" not in layout
