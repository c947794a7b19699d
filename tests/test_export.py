"""app.export: the self-contained `.pt`, TorchScript and ONNX exports of the whole classifier.

Parity with PyTorch (max |logit difference| <= 1e-4, onnxruntime run directly on the file) for a
Transf, a meanP and a `network.tm: tsm` model; predict.py and test.py give the same answers with the
checkpoint and its three exports; bad inputs are one clear error; `modules.convert --config` makes
a file predict.py runs without a config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from app.export import export
from app.load_weights import load_model, open_weights
from datasets.transforms import normalize
from modules.model_builder import build_model
from utils.checkpoint import RunPosition, save_checkpoint, training_state
from utils.config import resolve, to_config, to_dict
from utils.errors import UserError

# torch >= 2.9 marks TorchScript (jit.trace/script/save/load) deprecated; it still works and is tested here
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]
ROOT = Path(__file__).resolve().parents[1]
NAMES = ["red circle moving left", "blue square growing", "green triangle rotating", "yellow square moving up"]


def _cfg(base: Path, **network) -> dict:
    labels = base / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(NAMES)))
    return {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 4,
            "input_size": 112,
            "scale_size": 128,
            "batch_size": 4,
            "workers": 0,
            "label_list": str(labels),
        },
        "network": {"arch": "tiny", "pretrained": "none", "text_cache": "", "classifier": "orthogonal", **network},
    }


def _checkpoint(base: Path, name: str, **network) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    raw = _cfg(base, **network)
    cfg = to_config(resolve(raw, name))
    torch.manual_seed(3)
    model = build_model(cfg, NAMES)
    with torch.no_grad():  # every weight away from its initialisation, so a missed key would show
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    state = training_state(
        model=model,
        optimizer=None,
        scheduler=None,
        scaler=None,
        at=RunPosition(epoch=4, iteration=9, best_top1=50.0),
        rng=None,
        config=to_dict(cfg),
        class_names=NAMES,
    )
    return save_checkpoint(state, base / f"{name}.pt")


MODELS = {
    "transf": {"sim_header": "Transf"},
    "meanp": {"sim_header": "meanP"},
    "tsm": {"sim_header": "Transf", "tm": "tsm"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    base = tmp_path_factory.mktemp("export")
    out = {}
    for name, network in MODELS.items():
        ckpt = _checkpoint(base / name, name, **network)
        files = {"ckpt": ckpt}
        for fmt, suffix in (("pt", "pt"), ("torchscript", "ts"), ("onnx", "onnx")):
            done = export(ckpt, base / name / f"{name}.{suffix}")
            assert done["format"] == fmt and done["classes"] == len(NAMES)
            files[fmt] = Path(done["path"])
        out[name] = files
    return out


def _frames(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 4, 3, 112, 112), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_and_torchscript_logits_match_pytorch(exported, name):
    import onnxruntime as ort

    files = exported[name]
    model = load_model(files["ckpt"]).model
    for batch in (1, 5):
        x = _frames(batch, batch)
        with torch.no_grad():
            want = model(normalize(x), 100.0)
            want_emb = model.encode_video(normalize(x))
        session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
        logits, emb = session.run(["logits", "embeddings"], {"frames": x.numpy()})
        assert logits.shape == (batch, len(NAMES))
        assert np.abs(logits - want.numpy()).max() <= 1e-4
        assert np.abs(emb - want_emb.numpy()).max() <= 1e-4
        scripted = torch.jit.load(str(files["torchscript"]))
        with torch.no_grad():
            ts_logits, ts_emb = scripted(x)
        assert (ts_logits - want).abs().max() <= 1e-4 and (ts_emb - want_emb).abs().max() <= 1e-4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["text4vis.json"])
    assert meta["class_names"] == NAMES and meta["num_frames"] == 4 and meta["config"]["network"]["sim_header"]


def test_exports_are_self_contained_and_load_everywhere(exported, tmp_path):
    files = exported["transf"]
    pt = torch.load(files["pt"], weights_only=True)
    assert set(pt) >= {"model", "config", "class_names", "export"} and "optimizer" not in pt and "rng" not in pt
    assert pt["epoch"] == 4 and pt["class_names"] == NAMES
    with zipfile.ZipFile(files["torchscript"]) as zf:
        assert any(n.endswith("extra/text4vis.json") for n in zf.namelist())
    x = _frames(2, 7)
    want = load_model(files["ckpt"]).model(normalize(x), 100.0)
    for fmt in ("pt", "torchscript", "onnx"):
        wf = open_weights(files[fmt])
        assert wf.kind == ("checkpoint" if fmt == "pt" else fmt)
        assert wf.class_names() == NAMES and wf.config(None).network.sim_header == "Transf"
        loaded = load_model(wf)
        assert loaded.class_names == NAMES
        feed = normalize(x) if fmt == "pt" else x
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(feed, 100.0), want, rtol=0, atol=1e-4)
        # a reordered subset of the classes is picked by name
        sub = load_model(files[fmt], class_names=[NAMES[3], NAMES[0]])
        with torch.no_grad():
            got = sub.model(normalize(x) if fmt == "pt" else x, 100.0)
        torch.testing.assert_close(got, want[:, [3, 0]], rtol=0, atol=1e-4)


def load_script(name: str):
    """Import a top-level script by path (`test` would otherwise be the standard library's package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"text4vis_{name}_script", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _predict(argv, capsys):
    import predict

    code = 0
    try:
        predict.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_same_top5_with_checkpoint_and_every_export(exported, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(1, 7):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(folder / f"img_{i:05d}.jpg")
    answers = {}
    for kind in ("ckpt", "pt", "torchscript", "onnx"):
        code, out, err = _predict(
            [
                "--weights",
                str(exported["tsm"][kind]),
                "--json",
                "--test_crops",
                "3",
                "--test_clips",
                "2",
                "--topk",
                "4",
                str(folder),
            ],
            capsys,
        )
        assert code == 0, err
        preds = json.loads(out)["results"][0]["predictions"]
        answers[kind] = ([p["class"] for p in preds], [p["probability"] for p in preds])
    for kind in ("pt", "torchscript", "onnx"):
        assert answers[kind][0] == answers["ckpt"][0], kind
        np.testing.assert_allclose(answers[kind][1], answers["ckpt"][1], atol=1e-5)
    # names the export does not hold: no text encoder inside, one clear error
    labels = tmp_path / "animals.csv"
    labels.write_text("id,name\n0,cat\n1,dog\n")
    with pytest.raises(UserError, match="cannot score the class names given \\(cat, dog\\).*no text encoder"):
        _predict(["--weights", str(exported["tsm"]["onnx"]), "--labels", str(labels), str(folder)], capsys)


def test_test_py_on_onnx_export_equals_checkpoint(exported, tmp_path):
    from datasets.synthetic import generate

    data = tmp_path / "syn"
    generate(data, classes=4, videos_per_class=1, val_videos_per_class=2, frames=8, size=64, fmt="frames", seed=1)
    opts = ["--opts", f"data.val_root={data / 'frames'}", f"data.val_list={data / 'val.txt'}"]
    test_script = load_script("test")
    for kind in ("ckpt", "onnx"):
        test_script.main(
            [
                "--weights",
                str(exported["meanp"][kind]),
                "--output",
                str(tmp_path / kind),
                "--save_predictions",
                "--device",
                "cpu",
                *opts,
            ]
        )
    a, b = np.load(tmp_path / "ckpt" / "predictions.npz"), np.load(tmp_path / "onnx" / "predictions.npz")
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    ra, rb = (json.loads((tmp_path / k / "results.json").read_text()) for k in ("ckpt", "onnx"))
    assert ra["top1_correct"] == rb["top1_correct"] and rb["weights"].endswith(".onnx")


class _Branchy(torch.nn.Module):
    """A head whose Python `if` depends on its input (here its batch size): a trace records the
    branch of the example input only."""

    def forward(self, x):
        if x.shape[0] > 1:
            return x.mean(dim=1)
        return -x.amax(dim=1)


def test_untraceable_head_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    ckpt = _checkpoint(tmp_path, "branchy", sim_header="meanP")
    import modules.model_builder

    real = modules.model_builder.build_head
    monkeypatch.setattr(
        modules.model_builder, "build_head", lambda *a, **k: _Branchy() if a[0] == "meanP" else real(*a, **k)
    )
    # traced on a batch of 2, checked on batches of 1 and 3: the batch of 1 takes the other branch
    for suffix in ("ts", "onnx"):
        out = tmp_path / f"branchy.{suffix}"
        with pytest.raises(UserError) as err:
            export(ckpt, out)
        msg = str(err.value)
        assert ("does not reproduce PyTorch" in msg and "nothing was written" in msg) or "cannot export" in msg, msg
        assert "sim_header=meanP" in msg and not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_export_requests(tmp_path, exported):
    ckpt = exported["transf"]["ckpt"]
    with pytest.raises(UserError, match="cannot tell the export format from 'model.bin'.*--format"):
        export(ckpt, tmp_path / "model.bin")
    with pytest.raises(UserError, match="--format must be one of pt, torchscript, onnx"):
        export(ckpt, tmp_path / "model.x", "tflite")
    with pytest.raises(UserError, match="already a onnx export"):
        export(exported["transf"]["onnx"], tmp_path / "again.pt")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.export",
            "--weights",
            str(ckpt),
            "--out",
            str(tmp_path / "m.x"),
            "--format",
            "tflite",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "invalid choice: 'tflite'" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "app.export", "--weights", str(ckpt), "--out", str(tmp_path / "model.bin")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: cannot tell the export format")
    # an export run with a config whose input differs from it
    raw = _cfg(tmp_path, sim_header="Transf")
    raw["data"]["num_segments"] = 8
    with pytest.raises(UserError, match="takes 4 frames of 112 px.*data.num_segments=8"):
        load_model(exported["transf"]["onnx"], cfg=to_config(resolve(raw, "t8")))
    # a TorchScript archive that is not ours (e.g. OpenAI's CLIP) is named as such
    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign))
    with pytest.raises(UserError, match="TorchScript archive without text4vis metadata"):
        open_weights(foreign)


def test_onnx_file_without_metadata_is_refused(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2).eval(), (torch.randn(1, 3),), str(path), dynamo=True, verbose=False)
    with pytest.raises(UserError, match="an export without text4vis metadata"):
        open_weights(path)


def test_convert_with_config_is_self_contained(tmp_path, capsys):
    """modules.convert --config: predict.py needs no --config for its output, and says so."""
    from modules import convert

    _run = _predict
    base = tmp_path / "m"
    ckpt = torch.load(_checkpoint(base, "orig", sim_header="Transf"), weights_only=True)
    original = {
        "epoch": 7,
        "model_state_dict": {f"module.{k}": v for k, v in ckpt["model"].items() if k != "class_embeddings"},
    }
    torch.save(original, tmp_path / "original.pt")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(ckpt["config"]))
    convert.main([str(tmp_path / "original.pt"), str(tmp_path / "bare.pt")])
    assert "weights only: give predict.py / test.py --config" in capsys.readouterr().out
    convert.main([str(tmp_path / "original.pt"), str(tmp_path / "full.pt"), "--config", str(cfg_path)])
    said = capsys.readouterr().out
    assert "4 class names and embeddings" in said and "need no other file" in said
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    assert full["class_names"] == NAMES and full["epoch"] == 7 and "optimizer" not in full
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(image)
    code, out_full, _ = _run(["--weights", str(tmp_path / "full.pt"), "--json", str(image)], capsys)
    assert code == 0
    code, out_bare, _ = _run(
        ["--weights", str(tmp_path / "bare.pt"), "--config", str(cfg_path), "--json", str(image)], capsys
    )
    assert code == 0
    full_preds, bare_preds = (json.loads(o)["results"][0]["predictions"] for o in (out_full, out_bare))
    assert [p["class"] for p in full_preds] == [p["class"] for p in bare_preds]
    np.testing.assert_allclose(
        [p["probability"] for p in full_preds], [p["probability"] for p in bare_preds], rtol=1e-4, atol=1e-6
    )
    with pytest.raises(UserError, match="holds no config"):
        _run(["--weights", str(tmp_path / "bare.pt"), str(image)], capsys)


def test_missing_export_extra_is_one_clear_line(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path, "m", sim_header="meanP")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(UserError, match=r"ONNX export needs .* \(onnxscript is missing\).*pip install -e"):
        export(ckpt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "x.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")
    with pytest.raises(UserError, match=r"x.onnx is an ONNX file: running it needs onnxruntime \(pip install -e"):
        open_weights(tmp_path / "x.onnx")
    # the TorchScript and .pt exports need nothing more
    assert export(ckpt, tmp_path / "m.ts")["format"] == "torchscript"
