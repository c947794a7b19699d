"""test.py, test_zeroshot.py, scripts/run_test.sh and utils.summarize end to end on generated data
with a tiny random model: one process and two processes (torchrun, gloo) give the same numbers on
an odd number of videos; results.json holds what the docs say; bad inputs give one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from utils.errors import UserError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 7  # one validation video each: 7 videos, odd on purpose


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"text4vis_{name}_script", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):

    from datasets.lists import read_label_csv
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("evalscripts")
    data = base / "syn"
    generate(
        data, classes=NUM_CLASSES, videos_per_class=1, val_videos_per_class=1, frames=8, size=64, fmt="frames", seed=3
    )
    cfg_d = {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 4,
            "batch_size": 2,
            "workers": 1,
            "val_root": str(data / "frames"),
            "val_list": str(data / "val.txt"),
            "label_list": str(data / "labels.csv"),
            "input_size": 112,
            "scale_size": 128,
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "text_cache": ""},
        "logging": {"print_freq": 1},
    }
    cfg_path = base / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_d))
    names = read_label_csv(data / "labels.csv")
    ckpt = tiny_checkpoint(cfg_d, names, base / "tiny.pt", seed=1, perturb_head=True, save_names=False)
    return {"base": base, "cfg": str(cfg_path), "ckpt": str(ckpt), "cfg_dict": cfg_d}


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_one_and_two_processes_agree(setup, capsys):
    out1 = setup["base"] / "one"
    load_script("test").main(
        [
            "--config",
            setup["cfg"],
            "--weights",
            setup["ckpt"],
            "--test_crops",
            "3",
            "--test_clips",
            "2",
            "--output",
            str(out1),
            "--save_predictions",
            "--metric",
            "map",
            "--device",
            "cpu",
        ]
    )
    out2 = setup["base"] / "two"
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "run_test.sh"),
            setup["cfg"],
            setup["ckpt"],
            "--test_crops",
            "3",
            "--test_clips",
            "2",
            "--output",
            str(out2),
            "--save_predictions",
            "--metric",
            "map",
            "--device",
            "cpu",
        ],
        env=dict(_env(), NPROC="2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r1 = json.loads((out1 / "results.json").read_text())
    r2 = json.loads((out2 / "results.json").read_text())
    assert r1["world_size"] == 1 and r2["world_size"] == 2
    assert r1["num_videos"] == r2["num_videos"] == NUM_CLASSES
    assert r1["views"] == 6 and r1["view_layout"] == "4x3x2"
    for key in ("top1", "top5", "top1_correct", "top5_correct", "mean_class_accuracy", "mAP"):
        assert r1[key] == pytest.approx(r2[key]), key
    p1, p2 = np.load(out1 / "predictions.npz"), np.load(out2 / "predictions.npz")
    assert p1["indices"].tolist() == list(range(NUM_CLASSES))
    np.testing.assert_array_equal(p1["video_ids"], p2["video_ids"])
    np.testing.assert_allclose(p1["scores"], p2["scores"], rtol=1e-4, atol=1e-6)
    # the reported numbers are those of the saved scores
    from utils.metrics import mean_average_precision, topk_correct

    assert topk_correct(p1["scores"], p1["labels"], (1,))[1] == r1["top1_correct"]
    assert mean_average_precision(p1["scores"], p1["labels"]) == pytest.approx(r1["mAP"])

    # the per-class files: the same counts from one and two processes, each video once
    import csv

    c1, c2 = np.load(out1 / "confusion.npz"), np.load(out2 / "confusion.npz")
    np.testing.assert_array_equal(c1["counts"], c2["counts"])
    assert c1["counts"].sum() == NUM_CLASSES and np.trace(c1["counts"]) == r1["top1_correct"]
    v1, v2 = (list(csv.DictReader((o / "per_video.csv").read_text().splitlines())) for o in (out1, out2))
    key = ("id", "label", "label_name", "correct", "pred1", "label_rank")
    assert [tuple(r[k] for k in key) for r in v1] == [tuple(r[k] for k in key) for r in v2]
    assert sorted(r["id"] for r in v1) == sorted(set(r["id"] for r in v1)) and len(v1) == NUM_CLASSES
    a1, a2 = (json.loads((o / "analysis.json").read_text()) for o in (out1, out2))
    assert a1["mean_class_accuracy"] == pytest.approx(r1["mean_class_accuracy"])
    assert [c["top1_correct"] for c in a1["per_class"]] == [c["top1_correct"] for c in a2["per_class"]]
    for o in (out1, out2):
        assert (o / "confusion.png").stat().st_size > 5000 and (o / "per_class_accuracy.png").stat().st_size > 5000

    # utils.summarize over the two runs
    from utils.summarize import main as summarize_main
    from utils.summarize import summarize

    s = summarize([out1 / "results.json", out2 / "results.json"])
    assert s["top1"]["mean"] == pytest.approx(r1["top1"]) and s["top1"]["std"] == pytest.approx(0.0, abs=1e-9)
    assert "num_videos" not in s and "seconds" not in s
    summarize_main([str(out1 / "results.json"), str(out2 / "results.json")])
    assert "top1" in capsys.readouterr().out


def test_zeroshot_results(setup):
    out = setup["base"] / "zs"
    load_script("test_zeroshot").main(
        [
            "--config",
            setup["cfg"],
            "--weights",
            setup["ckpt"],
            "--output",
            str(out),
            "--save_predictions",
            "--device",
            "cpu",
        ]
    )
    res = json.loads((out / "results.json").read_text())
    half = res["half_classes"]
    assert half["repeats"] == 10 and half["classes_per_split"] == NUM_CLASSES // 2
    for split in half["splits"]:
        np.random.seed(split["seed"])
        assert split["classes"] == sorted(np.random.permutation(NUM_CLASSES)[: NUM_CLASSES // 2].tolist())
        assert split["num_videos"] == NUM_CLASSES // 2  # one video per class
    top1 = [s["top1"] for s in half["splits"]]
    assert half["top1_mean"] == pytest.approx(np.mean(top1)) and half["top1_std"] == pytest.approx(np.std(top1))
    pred = np.load(out / "predictions.npz")
    assert res["full_classes"]["top1_correct"] == int((pred["scores"].argmax(1) == pred["labels"]).sum())
    from utils.summarize import load_results

    flat = load_results(out / "results.json")
    assert "half_classes.top1_mean" in flat and "full_classes.top1" in flat


def _cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_missing_and_corrupt_weights_are_one_line(setup, tmp_path):
    proc = _cli("test.py", "--config", setup["cfg"], "--weights", str(tmp_path / "none.pt"))
    assert proc.returncode == 1
    assert "error: weights file not found" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt.pt is not a PyTorch checkpoint"):
        load_script("test").main(["--config", setup["cfg"], "--weights", str(bad), "--output", str(tmp_path / "o")])


def test_other_architecture_names_differing_keys(setup, tmp_path):
    cfg = dict(setup["cfg_dict"], network=dict(setup["cfg_dict"]["network"], sim_header="None"))
    path = tmp_path / "meanp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError) as err:
        load_script("test_zeroshot").main(
            ["--config", str(path), "--weights", setup["ckpt"], "--output", str(tmp_path / "o")]
        )
    msg = str(err.value)
    assert "unexpected keys" in msg and "fusion_model." in msg and len(msg) < 2000


def test_original_layout_checkpoint_gives_the_same_results(setup, tmp_path):
    """The original's layout: {'epoch', 'model_state_dict' with 'module.' prefixes, no class
    embeddings (they come from the label CSV), 'optimizer_state_dict'}."""
    import torch

    ours = torch.load(setup["ckpt"], map_location="cpu", weights_only=True)["model"]
    original = {
        "epoch": 29,
        "optimizer_state_dict": {},
        "model_state_dict": {f"module.{k}": v for k, v in ours.items() if k != "class_embeddings"},
    }
    path = tmp_path / "original_layout.pt"
    torch.save(original, path)
    test_script = load_script("test")
    for name, weights in (("ours", setup["ckpt"]), ("orig", str(path))):
        test_script.main(
            [
                "--config",
                setup["cfg"],
                "--weights",
                weights,
                "--output",
                str(tmp_path / name),
                "--save_predictions",
                "--device",
                "cpu",
            ]
        )
    a, b = np.load(tmp_path / "ours" / "predictions.npz"), np.load(tmp_path / "orig" / "predictions.npz")
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-7)


def test_probabilities_use_the_fixed_scale_100(setup, tmp_path):
    """The saved probabilities are softmax(100 · cos(video, class)) computed by hand, whatever the
    model's learned logit_scale (here exp(0) = 1: the argmax is the same, the probabilities not)."""
    import torch
    import torch.nn.functional as F

    from datasets import build_dataset
    from datasets.lists import read_label_csv
    from datasets.transforms import normalize
    from modules.model_builder import build_model
    from utils.checkpoint import save_checkpoint
    from utils.config import resolve, to_config

    state = torch.load(setup["ckpt"], map_location="cpu", weights_only=True)["model"]
    state["logit_scale"] = torch.tensor(0.0)
    ckpt = save_checkpoint({"model": state, "config": setup["cfg_dict"]}, tmp_path / "scale1.pt")
    load_script("test").main(
        [
            "--config",
            setup["cfg"],
            "--weights",
            str(ckpt),
            "--output",
            str(tmp_path / "o"),
            "--save_predictions",
            "--device",
            "cpu",
        ]
    )
    saved = np.load(tmp_path / "o" / "predictions.npz")

    cfg = to_config(resolve(setup["cfg_dict"], "t"))
    model = build_model(cfg, read_label_csv(cfg.data.label_list))
    model.load_state_dict(state)
    model.eval()
    dataset = build_dataset(cfg, "test")
    expected = []
    with torch.no_grad():
        for i in range(len(dataset)):
            clip = dataset[i][0]
            video = model.encode_video(normalize(clip.reshape(1, 4, *clip.shape[1:])))
            cos = F.normalize(video, dim=-1) @ F.normalize(model.class_embeddings, dim=-1).t()
            expected.append(torch.softmax(100.0 * cos, dim=-1)[0])
    assert saved["indices"].tolist() == list(range(len(dataset)))
    np.testing.assert_allclose(saved["scores"], torch.stack(expected).numpy(), rtol=1e-4, atol=1e-6)
    assert float(saved["scores"].max()) > 0.5  # far from softmax(1 · cos), which stays near uniform


def test_zeroshot_every_protocol_in_one_report_and_official_splits(setup, tmp_path):
    """--protocol all: full + half + splits in one results.json. Two list splits come from the full
    pass by path; a config split with its own classes (as K600's) gets its own pass and equals a
    plain full-class run of that config; two processes give the same numbers."""
    data = setup["base"] / "syn"
    lines = (data / "val.txt").read_text().splitlines()
    (tmp_path / "split_a.txt").write_text("\n".join(lines[0::2]) + "\n")
    (tmp_path / "split_b.txt").write_text("\n".join(lines[1::2]) + "\n")
    names = (data / "labels.csv").read_text().splitlines()[1:]
    keep = [3, 4, 5]
    (tmp_path / "labels_c.csv").write_text(
        "id,name\n" + "".join(f"{i},{names[c].split(',', 1)[1]}\n" for i, c in enumerate(keep))
    )
    (tmp_path / "split_c.txt").write_text(
        "".join(
            f"{line.rsplit(' ', 1)[0]} {keep.index(int(line.rsplit(' ', 1)[1]))}\n"
            for line in lines
            if int(line.rsplit(" ", 1)[1]) in keep
        )
    )
    cfg_c = {
        **setup["cfg_dict"],
        "data": {
            **setup["cfg_dict"]["data"],
            "val_list": str(tmp_path / "split_c.txt"),
            "label_list": str(tmp_path / "labels_c.csv"),
        },
    }
    (tmp_path / "split_c.yaml").write_text(yaml.safe_dump(cfg_c))
    splits = [str(tmp_path / "split_a.txt"), str(tmp_path / "split_b.txt"), str(tmp_path / "split_c.yaml")]
    args = [
        "--config",
        setup["cfg"],
        "--weights",
        setup["ckpt"],
        "--protocol",
        "all",
        "--splits",
        *splits,
        "--device",
        "cpu",
    ]
    zs = load_script("test_zeroshot")
    zs.main([*args, "--output", str(tmp_path / "one"), "--save_predictions"])
    res = json.loads((tmp_path / "one" / "results.json").read_text())
    assert res["protocols"] == ["full", "half", "splits"] and res["templates"] == ["a video of a person {}."]
    assert {"full_classes", "half_classes", "splits"} <= set(res)
    per = res["splits"]["per_split"]
    assert [s["videos_from"] for s in per] == ["subset of the full pass"] * 2 + ["own pass"]
    assert [s["num_videos"] for s in per] == [4, 3, 3] and [s["num_classes"] for s in per] == [7, 7, 3]
    pred = np.load(tmp_path / "one" / "predictions.npz")
    correct = dict(zip(pred["video_ids"].tolist(), (pred["scores"].argmax(1) == pred["labels"]).tolist(), strict=True))
    for s, part in zip(per[:2], (lines[0::2], lines[1::2]), strict=True):
        assert s["top1"] == pytest.approx(100.0 * np.mean([correct[ln.split(" ")[0]] for ln in part]))
    zs.main(
        [
            "--config",
            str(tmp_path / "split_c.yaml"),
            "--weights",
            setup["ckpt"],
            "--protocol",
            "full",
            "--output",
            str(tmp_path / "c"),
            "--device",
            "cpu",
        ]
    )
    alone = json.loads((tmp_path / "c" / "results.json").read_text())["full_classes"]
    assert per[2]["top1"] == alone["top1"] and per[2]["top5"] == alone["top5"]
    top1 = [s["top1"] for s in per]
    assert res["splits"]["top1_mean"] == pytest.approx(np.mean(top1))
    assert res["splits"]["top1_std"] == pytest.approx(np.std(top1))

    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "run_test_zeroshot.sh"),
            setup["cfg"],
            setup["ckpt"],
            *args[4:],
            "--output",
            str(tmp_path / "two"),
        ],
        env=dict(_env(), NPROC="2", PYTHON=sys.executable),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2
    for a, b in zip(per, two["splits"]["per_split"], strict=True):
        assert (a["num_videos"], a["top1"], a["top5"]) == (b["num_videos"], b["top1"], b["top5"])
    assert two["full_classes"]["top1"] == res["full_classes"]["top1"]

    no_splits = _cli(
        "test_zeroshot.py",
        "--config",
        setup["cfg"],
        "--weights",
        setup["ckpt"],
        "--protocol",
        "full",
        "splits",
        "--output",
        str(tmp_path / "x"),
        "--opts",
        f"data.val_list={tmp_path / 'missing.txt'}",  # refused before the data (and the model) is loaded
    )
    assert no_splits.returncode == 1 and "no official splits are known for data.dataset 'syn'" in no_splits.stderr
    assert "Traceback" not in no_splits.stderr
