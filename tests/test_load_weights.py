"""app.load_weights.load_model, the one path from a weights file to a model: every kind of file gives
the same logits; class names are matched by name (never relabelled by row); new names are
embedded by the text encoder only where that means something."""

from __future__ import annotations

import pytest
import torch
import yaml

import clip
from app.load_weights import load_model, open_weights
from modules.convert import convert_original
from modules.model_builder import build_model
from utils.checkpoint import RunPosition, save_checkpoint, training_state
from utils.config import resolve, to_config, to_dict
from utils.errors import UserError

NAMES = ["abseiling", "air drumming", "answering questions", "applauding"]


def make_cfg(tmp_path, **network):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(NAMES)))
    raw = {
        "seed": 3,
        "data": {"num_segments": 2, "input_size": 112, "label_list": str(labels)},
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "text_cache": "", **network},
    }
    return to_config(resolve(raw, "test"))


def trained(cfg):
    """A model whose every weight differs from a freshly built one (so a missed key shows)."""
    torch.manual_seed(0)
    model = build_model(cfg, NAMES)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        model.class_embeddings.mul_(torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None])
    return model.eval()


@pytest.fixture(scope="module")
def frames():
    return torch.randn(2, 2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def logits(model, x):
    with torch.no_grad():
        return model(x, 100.0)


def ours(tmp_path, cfg, model, name="ours.pt"):
    state = training_state(
        model=model,
        optimizer=None,
        scheduler=None,
        scaler=None,
        at=RunPosition(epoch=0, iteration=1, best_top1=0.0),
        rng=None,
        config=to_dict(cfg),
        class_names=NAMES,
    )
    return save_checkpoint(state, tmp_path / name)


@pytest.mark.slow
def test_every_weights_kind_gives_the_same_logits(tmp_path, frames):
    cfg = make_cfg(tmp_path, classifier="orthogonal")
    model = trained(cfg)
    want = logits(model, frames)
    sd = model.state_dict()
    visual_side = {k: v for k, v in sd.items() if k != "class_embeddings"}
    kinds = {
        "ours": ours(tmp_path, cfg, model),
        "run folder": tmp_path / "run",
        "original (DDP prefix)": tmp_path / "orig.pt",
        "converted": tmp_path / "conv.pt",
        "bare state dict": tmp_path / "bare.pt",
    }
    (tmp_path / "run").mkdir()
    ours(tmp_path / "run", cfg, model, "model_best.pt")
    torch.save(
        {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in visual_side.items()}},
        kinds["original (DDP prefix)"],
    )
    save_checkpoint(convert_original(torch.load(kinds["original (DDP prefix)"]), "orig"), kinds["converted"])
    torch.save(sd, kinds["bare state dict"])
    for kind, path in kinds.items():
        # files without a config need one; ours carry theirs
        loaded = load_model(path, cfg=None if kind in ("ours", "run folder") else cfg)
        got = logits(loaded.model, frames)
        if kind in ("original (DDP prefix)", "converted"):
            # no class embeddings inside: the config's classifier (seeded orthogonal) makes them
            want_kind = logits(_with_rows(model, build_model(cfg, NAMES).class_embeddings), frames)
            torch.testing.assert_close(got, want_kind, rtol=0, atol=1e-5, msg=kind)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=kind)
            assert loaded.class_names == NAMES, kind


def _with_rows(model, rows):
    import copy

    m = copy.deepcopy(model)
    m.set_class_embeddings(rows)
    return m


def test_reordered_or_partial_names_pick_rows_by_name(tmp_path, frames):
    cfg = make_cfg(tmp_path, classifier="orthogonal")
    model = trained(cfg)
    path = ours(tmp_path, cfg, model)
    want = logits(model, frames)
    order = [2, 0, 3, 1]
    got = load_model(path, class_names=[NAMES[i] for i in order])
    torch.testing.assert_close(logits(got.model, frames), want[:, order], rtol=0, atol=1e-5)
    sub = load_model(path, class_names=[NAMES[3], NAMES[1]])
    torch.testing.assert_close(logits(sub.model, frames), want[:, [3, 1]], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "network,why",
    [
        ({"classifier": "orthogonal"}, "classifier is `orthogonal`"),
        ({"classifier": "random"}, "classifier is `random`"),
        ({"classifier": "text", "fix_text": False}, "trained"),
        ({"classifier": "text"}, "random weights"),
    ],
)
def test_new_names_refused_where_meaningless(tmp_path, network, why):
    cfg = make_cfg(tmp_path, **network)
    path = ours(tmp_path, cfg, trained(cfg))
    with pytest.raises(UserError, match=why) as err:
        load_model(path, class_names=["cat", "dog", "fish"])
    assert str(err.value).startswith(str(path)) and "cat" in str(err.value)


def test_new_names_embedded_by_pretrained_text_encoder(tmp_path, frames):
    """With real (here: saved) text weights a zero-shot class list gets text embeddings."""
    weights = tmp_path / "clip.pt"
    torch.save(clip.create_clip("tiny", "none", num_frames=2).state_dict(), weights)
    cfg = make_cfg(tmp_path, classifier="text", pretrained=str(weights))
    path = ours(tmp_path, cfg, trained(cfg))
    new = ["cat", "dog", "fish"]
    loaded = load_model(path, class_names=new)
    expected = build_model(cfg, new).class_embeddings
    torch.testing.assert_close(loaded.model.class_embeddings, expected)
    assert loaded.class_names == new


def test_legacy_checkpoint_names_come_from_its_config_csv(tmp_path):
    """Checkpoints written before class names were stored: the stored config's label CSV names the rows."""
    cfg = make_cfg(tmp_path, classifier="orthogonal")
    model = trained(cfg)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, tmp_path / "old.pt")
    assert open_weights(tmp_path / "old.pt").class_names() == NAMES
    again = load_model(tmp_path / "old.pt", class_names=NAMES[::-1])
    torch.testing.assert_close(again.model.class_embeddings, model.class_embeddings.flip(0))


def test_bad_inputs_are_one_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, classifier="orthogonal")
    path = ours(tmp_path, cfg, trained(cfg))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"network": {"arch": "tiny"}}))
    cases = {
        tmp_path / "missing.pt": "weights file not found",
        tmp_path / "cfg.yaml": "not a PyTorch checkpoint.*YAML",
        tmp_path: "folder without model_best.pt or last_model.pt",
    }
    for bad, message in cases.items():
        with pytest.raises(UserError, match=message):
            load_model(bad)
    torch.save({"model_state_dict": trained(cfg).state_dict()}, tmp_path / "noconfig.pt")
    with pytest.raises(UserError, match="holds no config.*--config"):
        load_model(tmp_path / "noconfig.pt")
    with pytest.raises(UserError, match="repeat"):
        load_model(path, class_names=[NAMES[0], NAMES[0]])
    with pytest.raises(UserError, match="sim_header"):
        load_model(path, cfg=make_cfg(tmp_path, classifier="orthogonal", sim_header="LSTM"))


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="Python objects besides tensors"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
