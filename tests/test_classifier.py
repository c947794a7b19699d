"""Class embeddings: text rows equal encode_text of the prompts, the cache, random/orthogonal/file, LDA."""

import pytest
import torch
import torch.nn.functional as F

from modules import classifier as C
from modules.lda_directions import fit_lda
from utils.errors import UserError

NAMES = ["abseiling", "air drumming", "answering questions"]


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        quick_gelu=True,
        vision_cfg=dict(image_size=32, layers=1, width=64, head_width=32, patch_size=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1),
    )
    return model, open_clip.get_tokenizer("ViT-B-32")


def test_text_rows_equal_encode_text_of_prompted_names(tiny_clip):
    model, tok = tiny_clip
    model.train()  # must be switched to eval for encoding and restored afterwards
    emb = C.text_class_embeddings(model, tok, NAMES)
    assert model.training
    model.eval()
    with torch.no_grad():
        ref = model.encode_text(tok([f"a video of a person {n}." for n in NAMES]))
    assert emb.dtype == torch.float32 and emb.shape == (3, 32)
    torch.testing.assert_close(emb, ref, rtol=1e-5, atol=1e-6)  # un-normalised encode_text
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(3))


def test_short_encoding_equals_full_encode_text(tiny_clip):
    model, tok = tiny_clip
    model.eval()
    tokens = tok(["a", "a video of a person abseiling.", "x " * 60])  # EOT at 2, 9 and 62
    with torch.no_grad():
        torch.testing.assert_close(C.encode_text(model, tokens), model.encode_text(tokens), rtol=1e-5, atol=1e-6)
    model.text_pool_type = "first"  # an unknown text tower: falls back to encode_text
    try:
        with torch.no_grad():
            assert torch.equal(C.encode_text(model, tokens), model.encode_text(tokens))
    finally:
        model.text_pool_type = "argmax"


def test_several_templates_average_normalised_features(tiny_clip):
    model, tok = tiny_clip
    templates = ["a photo of {}.", "{}"]
    emb = C.text_class_embeddings(model, tok, NAMES, templates)
    model.eval()
    with torch.no_grad():
        ref = sum(F.normalize(model.encode_text(tok([t.format(n) for n in NAMES])), dim=-1) for t in templates) / 2
    torch.testing.assert_close(emb, ref, rtol=1e-6, atol=1e-6)


def test_kinetics28_named_set():
    t = C.resolve_templates("kinetics28")
    assert len(t) == 28 == len(set(t))
    assert "a video of a person {}." in t and all(s.count("{}") == 1 for s in t)
    # the original's order (modules/text_prompt.py): person-form first for "a photo of" only
    assert t[:3] == ["a photo of a person {}.", "a photo of {}.", "a photo of a person using {}."]
    assert t[7:9] == ["a video of {}.", "a video of a person {}."]
    assert t[-1] == "a demonstration of a person practicing {}."
    assert C.resolve_templates("a clip of {}") == ["a clip of {}"]
    assert C.resolve_templates(None) == ["a video of a person {}."]
    with pytest.raises(UserError, match="templates"):
        C.resolve_templates("no placeholder")


def test_cache_reused_only_for_identical_key(tiny_clip, tmp_path, monkeypatch):
    model, tok = tiny_clip
    calls = []
    real = C.encode_class_names
    monkeypatch.setattr(C, "encode_class_names", lambda *a, **k: calls.append(1) or real(*a, **k))
    templates = C.resolve_templates(None)

    def run(arch="ViT-B/32", weights="openai", names=NAMES):
        key = C.make_cache_key(arch, weights, templates, names)
        return C.text_class_embeddings(model, tok, names, templates, tmp_path, key)

    first = run()
    assert len(calls) == 1 and len(list(tmp_path.glob("text_feats_*.pt"))) == 1
    torch.testing.assert_close(run(), first, rtol=0, atol=0)
    assert len(calls) == 1  # reused
    run(arch="ViT-B/16")
    run(weights="/some/other/weights.pt")
    changed = run(names=NAMES[:2] + ["archery"])
    assert len(calls) == 4  # each change recomputed
    assert changed.shape == (3, 32) and not torch.equal(changed[2], first[2])
    run(names=list(reversed(NAMES)))  # same classes, other order = other class indices
    assert len(calls) == 5
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file


def test_stale_or_corrupt_cache_file_is_not_reused(tiny_clip, tmp_path):
    model, tok = tiny_clip
    templates = C.resolve_templates(None)
    key = C.make_cache_key("tiny", "w", templates, NAMES)
    path = C.cache_path(tmp_path, key)
    fake = torch.zeros(3, 32)
    # a file at the right name but written for another key (e.g. a truncated-hash collision)
    torch.save({"key": "0" * 64, "embeddings": fake}, path)
    emb = C.text_class_embeddings(model, tok, NAMES, templates, tmp_path, key)
    assert not torch.equal(emb, fake)
    assert torch.load(path, weights_only=True)["key"] == key  # overwritten with the right key
    path.write_bytes(b"garbage")
    torch.testing.assert_close(C.text_class_embeddings(model, tok, NAMES, templates, tmp_path, key), emb)


def test_random_is_seeded_normal():
    a = C.random_class_embeddings(50, 64, seed=3)
    assert a.shape == (50, 64)
    assert torch.equal(a, C.random_class_embeddings(50, 64, seed=3))
    assert not torch.equal(a, C.random_class_embeddings(50, 64, seed=4))
    assert abs(a.mean().item()) < 0.05 and abs(a.std().item() - 1) < 0.05


def test_orthogonal_rows_are_orthonormal():
    q = C.orthogonal_class_embeddings(10, 32, seed=0)
    assert q.shape == (10, 32)
    torch.testing.assert_close(q @ q.T, torch.eye(10), rtol=0, atol=1e-5)
    full = C.orthogonal_class_embeddings(32, 32, seed=0)
    torch.testing.assert_close(full[:10], q)  # first C rows of the same Q
    with pytest.raises(UserError, match="orthogonal"):
        C.orthogonal_class_embeddings(33, 32)


def test_load_class_embeddings_checks_shape(tmp_path):
    good = torch.randn(3, 8)
    torch.save(good, tmp_path / "e.pt")
    torch.testing.assert_close(C.load_class_embeddings(tmp_path / "e.pt", 3, 8), good)
    torch.save({"embeddings": good}, tmp_path / "d.pt")
    torch.testing.assert_close(C.load_class_embeddings(tmp_path / "d.pt", 3, 8), good)
    with pytest.raises(UserError, match=r"e\.pt.*\(3, 8\).*\(4, 8\)"):
        C.load_class_embeddings(tmp_path / "e.pt", 4, 8)
    with pytest.raises(UserError, match=r"e\.pt"):
        C.load_class_embeddings(tmp_path / "e.pt", 3, 16)
    with pytest.raises(UserError, match="not found"):
        C.load_class_embeddings(tmp_path / "missing.pt", 3, 8)
    (tmp_path / "bad.pt").write_text("not a tensor")
    with pytest.raises(UserError, match="bad.pt"):
        C.load_class_embeddings(tmp_path / "bad.pt", 3, 8)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_fit_lda_recovers_classes_of_separable_features(num_classes):
    g = torch.Generator().manual_seed(0)
    d, per = 16, 40
    # class means on random directions, anisotropic noise that LDA's whitening has to undo
    means = 3 * torch.randn(num_classes, d, generator=g)
    scale = torch.linspace(0.2, 2.0, d)
    labels = torch.arange(num_classes).repeat_interleave(per)
    feats = means[labels] + torch.randn(len(labels), d, generator=g) * scale
    w = fit_lda(feats, labels)
    assert w.shape == (num_classes, d) and w.dtype == torch.float32
    # the model's logits: cosine between video embedding and class row
    cos = F.normalize(feats, dim=-1) @ F.normalize(w, dim=-1).T
    assert (cos.argmax(1) == labels).all()
    fresh = means[labels] + torch.randn(len(labels), d, generator=g) * scale
    cos = F.normalize(fresh, dim=-1) @ F.normalize(w, dim=-1).T
    assert (cos.argmax(1) == labels).float().mean().item() >= 0.95
    # rows are directions in feature space, not class means: whitening changes them
    assert not torch.allclose(F.normalize(w, dim=-1), F.normalize(means, dim=-1), atol=0.05)


def test_fit_lda_needs_every_class():
    with pytest.raises(UserError, match="classes"):
        fit_lda(torch.randn(6, 4), torch.tensor([0, 0, 2, 2, 3, 3]))


# ----------------------------------------------------------------------- modules.hf_text_embed
def test_projection_keeps_cosines_when_widening():
    from modules.hf_text_embed import project, projection_matrix

    e = torch.randn(6, 24)
    p = project(e, 32, seed=1)
    assert p.shape == (6, 32)
    cos = lambda a: F.normalize(a, dim=-1) @ F.normalize(a, dim=-1).T  # noqa: E731
    torch.testing.assert_close(cos(p), cos(e), rtol=0, atol=1e-5)
    w = projection_matrix(48, 32, seed=1)  # narrowing: orthonormal columns
    torch.testing.assert_close(w.T @ w, torch.eye(32), rtol=0, atol=1e-5)
    assert project(e, None) is e and project(e, 24) is e


def test_hf_text_embed_without_transformers_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from modules import hf_text_embed

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    (tmp_path / "labels.csv").write_text("id,name\n0,abseiling\n1,archery\n")
    with pytest.raises(UserError, match="pip install transformers"):
        hf_text_embed.main(
            [
                "--labels",
                str(tmp_path / "labels.csv"),
                "--model",
                "distilbert-base-uncased",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )


def test_hf_text_embed_with_a_stand_in_model(monkeypatch, tmp_path):
    """The tool's pooling, projection and output, with a fake `transformers` (no download)."""
    import sys
    import types

    from modules import hf_text_embed

    class Tok:
        def __call__(self, texts, padding, truncation, return_tensors):
            ids = [[len(w) for w in t.split()] for t in texts]
            n = max(map(len, ids))
            batch = {
                "input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids]),
            }
            return types.SimpleNamespace(**batch, to=lambda d: batch, __getitem__=batch.__getitem__)

    class Model(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            h = torch.stack([input_ids.float(), 2 * input_ids.float(), torch.ones_like(input_ids).float()], -1)
            return types.SimpleNamespace(last_hidden_state=h)

    fake = types.ModuleType("transformers")
    fake.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda name: Tok())
    fake.AutoModel = types.SimpleNamespace(from_pretrained=lambda name: Model())
    monkeypatch.setitem(sys.modules, "transformers", fake)
    (tmp_path / "labels.csv").write_text("id,name\n0,abseiling\n1,air drumming\n")
    out = tmp_path / "e.pt"
    hf_text_embed.main(["--labels", str(tmp_path / "labels.csv"), "--model", "fake", "--out", str(out)])
    emb = torch.load(out, weights_only=True)
    # masked mean of (len, 2 len, 1) over the words: "abseiling" -> 9; "air drumming" -> (3 + 8) / 2
    torch.testing.assert_close(emb, torch.tensor([[9.0, 18.0, 1.0], [5.5, 11.0, 1.0]]))
    hf_text_embed.main(["--labels", str(tmp_path / "labels.csv"), "--model", "fake", "--out", str(out), "--dim", "8"])
    wide = torch.load(out, weights_only=True)
    assert wide.shape == (2, 8)
    torch.testing.assert_close(F.cosine_similarity(wide[0], wide[1], dim=0), F.cosine_similarity(emb[0], emb[1], dim=0))


# ----------------------------------------------------------------------------- app.lda CLI
def test_lda_tool_end_to_end_on_synthetic_videos(tmp_path, monkeypatch):
    import yaml

    from app import lda
    from datasets.synthetic import generate
    from modules.model_builder import build_model
    from utils.config import resolve, to_config

    paths = generate(
        tmp_path / "data", classes=3, videos_per_class=3, val_videos_per_class=1, frames=4, size=112, fmt="frames"
    )
    raw = {
        "seed": 1,
        "data": {
            "num_segments": 2,
            "input_size": 112,
            "batch_size": 4,
            "workers": 0,
            "min_frames": 1,
            "train_list": str(paths["train"]),
            "train_root": str(tmp_path / "data" / "frames"),
            "val_list": str(paths["val"]),
            "val_root": str(tmp_path / "data" / "frames"),
            "label_list": str(paths["labels"]),
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "meanP", "classifier": "random"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    model = build_model(to_config(resolve(raw, "test")), ["a", "b", "c"])
    torch.save({"model": model.state_dict()}, tmp_path / "w.pt")
    seen = {}
    real_fit = lda.fit_lda  # app.lda's reference to modules.lda_directions.fit_lda
    monkeypatch.setattr(lda, "fit_lda", lambda f, y, **k: seen.update(f=f, y=y) or real_fit(f, y, **k))
    lda.main(
        [
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--weights",
            str(tmp_path / "w.pt"),
            "--out",
            str(tmp_path / "lda.pt"),
            "--device",
            "cpu",
        ]
    )
    w = torch.load(tmp_path / "lda.pt", weights_only=True)
    assert w.shape == (3, 256) and torch.isfinite(w).all()
    assert seen["f"].shape == (9, 256) and sorted(seen["y"].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the file is accepted as `classifier: lda` by the same config
    raw["network"].update(classifier="lda", classifier_file=str(tmp_path / "lda.pt"))
    again = build_model(to_config(resolve(raw, "test")), ["a", "b", "c"])
    assert torch.equal(again.class_embeddings, w)


def test_build_model_never_reuses_the_cache_of_other_templates(tmp_path):
    """Through build_model with real (file) text weights, so the cache is used: a template change
    computes new rows (equal to an uncached build), and the first templates still find theirs."""
    import open_clip

    from clip.archs import model_config
    from modules.model_builder import build_model
    from utils.config import resolve, to_config

    torch.manual_seed(1234)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.CLIP(**model_config("tiny")).state_dict(), weights)

    def embeddings(templates, cache):
        net = {"arch": "tiny", "pretrained": str(weights), "templates": templates, "text_cache": cache}
        return build_model(
            to_config(resolve({"network": net, "data": {"input_size": 112}}, "t")), NAMES
        ).class_embeddings.detach()

    cache = str(tmp_path / "cache")
    first = embeddings("a video of a person {}.", cache)
    other = embeddings("a photo of {}.", cache)
    assert len(list((tmp_path / "cache").glob("text_feats_*.pt"))) == 2
    torch.testing.assert_close(other, embeddings("a photo of {}.", ""), rtol=0, atol=0)
    assert not torch.allclose(other, first)
    several = embeddings(["a photo of {}.", "{}"], cache)  # a list differs from its first template
    torch.testing.assert_close(several, embeddings(["a photo of {}.", "{}"], ""), rtol=0, atol=0)
    torch.testing.assert_close(embeddings("a video of a person {}.", cache), first, rtol=0, atol=0)
