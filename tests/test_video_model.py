"""VideoCLIP (encode/logits against reference computations), build_model from configs, the
docs/model.md snippet as written."""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip
from modules import model_builder
from modules.heads import MeanHead, TransfHead, build_head
from modules.video_model import VideoCLIP
from utils.checkpoint import save_checkpoint
from utils.config import load_config, resolve, to_config
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["abseiling", "air drumming", "answering questions", "applauding"]


class LinearVisual(nn.Module):
    """A visual 'encoder' whose output is easy to compute by hand: flatten -> linear."""

    def __init__(self, size=4, dim=8):
        super().__init__()
        self.proj = nn.Linear(3 * size * size, dim)

    def forward(self, x):
        return self.proj(x.flatten(1))


class JointVisual(LinearVisual):
    def __init__(self, frames, **kw):
        super().__init__(**kw)
        self.frames = frames

    def forward(self, x):
        return super().forward(x).view(-1, self.frames, self.proj.out_features).sum(1)


@pytest.fixture
def small():
    torch.manual_seed(0)
    visual, head = LinearVisual(), build_head("Transf", 8, 3, heads=2)
    emb = torch.randn(5, 8)
    return VideoCLIP(visual, head, emb, logit_scale=math.log(1 / 0.07)), torch.randn(2, 3, 3, 4, 4)


def test_encode_video_is_head_of_per_frame_features(small):
    model, x = small
    per_frame = model.visual(x.reshape(6, 3, 4, 4)).reshape(2, 3, 8)
    torch.testing.assert_close(model.encode_video(x), model.fusion_model(per_frame), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B, T, 3, S, S\)"):
        model.encode_video(x[0])


def test_logits_are_scaled_cosines(small):
    model, x = small
    v = model.encode_video(x)
    cos = F.normalize(v, dim=-1) @ F.normalize(model.class_embeddings, dim=-1).T
    torch.testing.assert_close(model(x), cos / 0.07, rtol=1e-5, atol=1e-5)  # exp(logit_scale)
    torch.testing.assert_close(model(x, scale=100.0), 100 * cos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.logits_from_embeddings(3 * v, 100.0), 100 * cos, rtol=1e-5, atol=1e-5)
    # the learned temperature receives a gradient in training
    model(x).sum().backward()
    assert model.logit_scale.grad is not None and model.logit_scale.shape == ()


def test_frozen_vs_trainable_class_embeddings(small):
    model, _ = small
    assert "class_embeddings" in dict(model.named_buffers())
    assert "class_embeddings" in model.state_dict()
    assert all(n != "class_embeddings" for n, _ in model.named_parameters())
    trainable = VideoCLIP(LinearVisual(), MeanHead(), torch.randn(5, 8), fix_text=False)
    assert isinstance(trainable.class_embeddings, nn.Parameter)
    assert "class_embeddings" in dict(trainable.named_parameters())
    trainable(torch.randn(2, 3, 3, 4, 4)).sum().backward()
    assert trainable.class_embeddings.grad is not None


def test_set_class_embeddings_swaps_the_class_set(small):
    model, x = small
    new = torch.randn(3, 8)
    model.set_class_embeddings(new)
    assert model(x, 100.0).shape == (2, 3) and model.num_classes == 3
    torch.testing.assert_close(model.class_embeddings, new)
    assert "class_embeddings" in dict(model.named_buffers())


def test_joint_st_bypasses_the_head():
    torch.manual_seed(0)
    head = build_head("Transf", 8, 3, heads=2)
    model = VideoCLIP(JointVisual(3), head, torch.randn(5, 8), joint_st=True)
    x = torch.randn(2, 3, 3, 4, 4)
    torch.testing.assert_close(model.encode_video(x), model.visual(x.reshape(6, 3, 4, 4)))


# ------------------------------------------------------------------------------------- builder
def tiny_cfg(tmp_path, **network):
    raw = {
        "seed": 7,
        "data": {"num_segments": 2, "input_size": 112, "label_list": "labels.csv"},
        "network": {
            "arch": "tiny",
            "pretrained": "none",
            "sim_header": "Transf",
            "text_cache": str(tmp_path / "cache"),
            **network,
        },
    }
    return to_config(resolve(raw, "test"))


@pytest.fixture(scope="module")
def tiny_clip():
    model = clip.create_clip("tiny", "none", num_frames=2).eval()
    return model


def test_build_model_tiny(tmp_path, tiny_clip):
    cfg = tiny_cfg(tmp_path)
    model = model_builder.build_model(cfg, NAMES)
    # only visual, head, temperature and classes: the text tower is gone
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"visual", "fusion_model", "logit_scale", "class_embeddings"}
    assert not any(isinstance(m, nn.Embedding) and m.num_embeddings == 49408 for m in model.modules())
    # rows = encode_text of the prompted names by the same (seeded) CLIP
    with torch.no_grad():
        ref = tiny_clip.encode_text(clip.get_tokenizer("tiny")([f"a video of a person {n}." for n in NAMES]))
    torch.testing.assert_close(model.class_embeddings, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.visual.proj, tiny_clip.visual.proj)
    assert model.logit_scale.item() == pytest.approx(tiny_clip.logit_scale.item())
    assert isinstance(model.fusion_model, TransfHead)
    assert model.fusion_model.transformer.resblocks[0].attn.num_heads == clip.text_width(tiny_clip) // 64
    d = clip.embed_dim(tiny_clip)
    x = torch.randn(3, 2, 3, 112, 112)
    with torch.no_grad():
        assert model.eval()(x, scale=100.0).shape == (3, len(NAMES))
        assert model.encode_video(x).shape == (3, d)
    # random text weights are never cached (their values depend on the torch version)
    assert not (tmp_path / "cache").exists()


def test_build_model_caches_text_embeddings_for_real_weights(tmp_path, tiny_clip, monkeypatch):
    weights = tmp_path / "tiny_weights.pt"
    torch.save(tiny_clip.state_dict(), weights)
    cfg = tiny_cfg(tmp_path, pretrained=str(weights), sim_header="None")
    first = model_builder.build_model(cfg, NAMES)
    files = list((tmp_path / "cache").glob("text_feats_*.pt"))
    assert len(files) == 1
    from modules import classifier

    monkeypatch.setattr(classifier, "encode_class_names", lambda *a, **k: pytest.fail("cache not used"))
    second = model_builder.build_model(cfg, NAMES)
    assert torch.equal(first.class_embeddings, second.class_embeddings)
    monkeypatch.undo()
    model_builder.build_model(cfg, NAMES[:3])  # another class list: a second cache file
    assert len(list((tmp_path / "cache").glob("text_feats_*.pt"))) == 2


def test_build_model_classifier_variants_and_freezing(tmp_path, tiny_clip):
    d = clip.embed_dim(tiny_clip)
    rnd = model_builder.build_model(tiny_cfg(tmp_path, classifier="random", sim_header="meanP"), NAMES)
    assert rnd.class_embeddings.shape == (4, d)
    again = model_builder.build_model(tiny_cfg(tmp_path, classifier="random", sim_header="meanP"), NAMES)
    assert torch.equal(rnd.class_embeddings, again.class_embeddings)  # seeded: same on every rank
    orth = model_builder.build_model(
        tiny_cfg(tmp_path, classifier="orthogonal", sim_header="None", fix_text=False, fix_video=True), NAMES
    )
    torch.testing.assert_close(orth.class_embeddings @ orth.class_embeddings.T, torch.eye(4), atol=1e-5, rtol=0)
    assert isinstance(orth.class_embeddings, nn.Parameter)
    assert not any(p.requires_grad for p in orth.visual.parameters())
    assert orth.logit_scale.requires_grad
    emb = torch.randn(4, d)
    save_checkpoint(emb, tmp_path / "lda.pt")
    lda = model_builder.build_model(
        tiny_cfg(tmp_path, classifier="lda", classifier_file=str(tmp_path / "lda.pt"), sim_header="None"), NAMES
    )
    assert torch.equal(lda.class_embeddings, emb)
    with pytest.raises(UserError, match=rf"lda\.pt.*\(4, {d}\).*\(5, {d}\)"):
        model_builder.build_model(
            tiny_cfg(tmp_path, classifier="file", classifier_file=str(tmp_path / "lda.pt"), sim_header="None"),
            NAMES + ["archery"],
        )
    with pytest.raises(UserError, match="n_emb"):
        model_builder.build_model(tiny_cfg(tmp_path, classifier="random", n_emb=d + 1, sim_header="None"), NAMES)


def test_build_model_joint_st_bypasses_and_freezes_the_head(tmp_path):
    model = model_builder.build_model(tiny_cfg(tmp_path, joint_st=True, classifier="random"), NAMES)
    assert model.joint_st and isinstance(model.fusion_model, TransfHead)
    assert not any(p.requires_grad for p in model.fusion_model.parameters())
    x = torch.randn(2, 2, 3, 112, 112)
    with torch.no_grad():
        v = model.encode_video(x)
        assert torch.equal(v, model.visual(x.reshape(4, 3, 112, 112)))  # one embedding per video
    assert v.shape == (2, model.class_embeddings.shape[1])


# ------------------------------------------------------------------------------ docs snippet
@pytest.mark.slow
def test_docs_snippet_runs_as_written(monkeypatch, capsys):
    """The README's API snippet (ViT-B/32 + Transf, pretrained none, K400 CSV), also in docs/model.md."""
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    doc_code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "model.md").read_text(), flags=re.S)[0]
    assert code == doc_code, "README.md and docs/model.md show different API snippets"
    assert "ViT-B/32" in code and "pretrained=none" in code
    monkeypatch.chdir(ROOT)
    cfg = load_config("configs/k400/k400_train_rgb_vitb-32-f8.yaml", ["network.pretrained=none"])
    assert (cfg.network.arch, cfg.network.sim_header, cfg.data.label_list) == (
        "ViT-B/32",
        "Transf",
        "lists/kinetics_400_labels.csv",
    )
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    logits, model = scope["logits"], scope["model"]
    assert logits.shape == (2, 400) and scope["video"].shape == (2, 512)
    assert isinstance(model.fusion_model, TransfHead)
    assert float(logits.abs().max()) <= 100.0 + 1e-3  # fixed evaluation scale on cosines
    assert "torch.Size([2, 400])" in capsys.readouterr().out
