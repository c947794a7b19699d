"""predict.py end to end on generated videos (mp4) and frame folders, and its bad-input messages.

The checkpoint is made in a fixture, cheaply enough for a CPU test: a tiny randomly initialised
model (meanP head) whose visual projection is fitted by ridge regression so that the training
videos' embeddings point at their classes' text embeddings (a linear probe), then saved in our
checkpoint format with its config. The four classes used differ in colour and shape (the
generated dataset's classes 0, 2, 4, 6), which such a probe separates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import predict
from utils.errors import UserError

pytestmark = pytest.mark.slow

KEEP = [0, 2, 4, 6]  # red circle moving left, blue square growing, green triangle rotating cw, yellow square moving up


def _cfg_dict(root: Path, sub: Path, **network) -> dict:
    return {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 4,
            "batch_size": 16,
            "workers": 0,
            "train_root": str(root / "frames"),
            "val_root": str(root / "frames"),
            "train_list": str(sub / "train.txt"),
            "val_list": str(sub / "val.txt"),
            "label_list": str(sub / "labels.csv"),
            "input_size": 112,
            "scale_size": 128,
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "None", "text_cache": "", **network},
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import yaml
    from PIL import Image

    from datasets import build_dataset, build_loader, normalize
    from datasets.lists import read_label_csv
    from datasets.synthetic import generate, write_mp4
    from modules.model_builder import build_model
    from utils.checkpoint import save_checkpoint
    from utils.config import resolve, to_config, to_dict

    base = tmp_path_factory.mktemp("predict")
    root, sub = base / "syn", base / "sub"
    sub.mkdir()
    generate(root, classes=8, videos_per_class=40, val_videos_per_class=6, frames=8, size=64, fmt="frames", seed=0)
    names = [line.split(",", 1)[1] for line in (root / "labels.csv").read_text().splitlines()[1:]]
    (sub / "labels.csv").write_text("id,name\n" + "".join(f"{i},{names[c]}\n" for i, c in enumerate(KEEP)))
    for split in ("train", "val"):
        rows = [line.split() for line in (root / f"{split}.txt").read_text().splitlines()]
        (sub / f"{split}.txt").write_text(
            "".join(f"{p} {n} {KEEP.index(int(y))}\n" for p, n, y in rows if int(y) in KEEP)
        )
    cfg_d = _cfg_dict(root, sub)
    cfg = to_config(resolve(cfg_d, "demo"))
    (base / "demo.yaml").write_text(yaml.safe_dump(cfg_d))
    class_names = read_label_csv(sub / "labels.csv")

    model = build_model(cfg, class_names).eval()
    width = model.visual.proj.shape[0]
    with torch.no_grad():
        model.visual.proj.copy_(torch.eye(width))  # encode_video then returns the pre-projection features
        feats, labels = [], []
        # The training videos with the test pipeline (no augmentation: the fit is deterministic).
        fit_cfg = to_config(resolve(cfg_d, "demo", [f"data.val_list={sub / 'train.txt'}"]))
        for x, y, _ in build_loader(build_dataset(fit_cfg, "test"), 16, 0, train=False):
            feats.append(model.encode_video(normalize(x).reshape(x.shape[0], 4, 3, 112, 112)))
            labels.append(y)
        f, y = torch.cat(feats).double(), torch.cat(labels)
        target = F.normalize(model.class_embeddings.double(), dim=-1)[y]
        proj = torch.linalg.solve(f.T @ f + 0.1 * torch.eye(width, dtype=torch.double), f.T @ target)
        model.visual.proj.copy_(proj.float())
    ckpt = base / "demo.pt"
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, ckpt)

    # A few validation videos as mp4 too (from their frames).
    val_rows = [line.split() for line in (sub / "val.txt").read_text().splitlines()]
    videos = []
    for rel, n, label in val_rows[::6]:
        frames = [
            np.asarray(Image.open(root / "frames" / rel / f"img_{i:05d}.jpg").convert("RGB"))
            for i in range(1, int(n) + 1)
        ]
        path = base / "videos" / f"{rel.replace('/', '_')}.mp4"
        write_mp4(path, frames)
        videos.append((str(path), int(label)))
    folders = [(str(root / "frames" / rel), int(label)) for rel, _, label in val_rows]
    return {
        "base": base,
        "cfg": str(base / "demo.yaml"),
        "ckpt": str(ckpt),
        "names": class_names,
        "videos": videos,
        "folders": folders,
        "root": root,
        "sub": sub,
        "cfg_dict": cfg_d,
    }


def load_script(name: str):
    """Import a top-level script by path (`test` would otherwise be the standard library's package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"text4vis_{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv, capsys):
    code = 0
    try:
        predict.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_top1_correct_for_most_validation_videos(demo, capsys):
    inputs = [p for p, _ in demo["folders"]] + [p for p, _ in demo["videos"]]
    truth = [y for _, y in demo["folders"]] + [y for _, y in demo["videos"]]
    code, out, _ = _run(["--config", demo["cfg"], "--weights", demo["ckpt"], "--json", "--topk", "2", *inputs], capsys)
    assert code == 0
    res = json.loads(out)["results"]
    assert [r["input"] for r in res] == inputs
    top1 = [r["predictions"][0]["index"] for r in res]
    assert all(len(r["predictions"]) == 2 for r in res)
    correct = sum(p == t for p, t in zip(top1, truth, strict=True))
    assert correct / len(truth) > 0.6, (top1, truth)
    for r in res:  # probabilities are a softmax over the 4 classes, sorted
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert [p["rank"] for p in r["predictions"]] == [1, 2]
        assert all(p["class"] == demo["names"][p["index"]] for p in r["predictions"])
    # mp4s (re-encoded from the frames, so slightly different pixels) mostly agree with their folders
    pred = dict(zip(inputs, top1, strict=True))
    pairs = list(zip([v for v, _ in demo["videos"]], [p for p, _ in demo["folders"]][::6], strict=True))
    assert sum(pred[v] == pred[f] for v, f in pairs) >= len(pairs) / 2


def test_matches_test_py_predictions(demo, tmp_path, capsys):
    """predict.py and test.py run the same pipeline: same top-1 and probabilities per video."""
    test_script = load_script("test")
    short = tmp_path / "val5.txt"
    short.write_text("".join((demo["sub"] / "val.txt").read_text().splitlines(keepends=True)[:5]))
    test_script.main(
        [
            "--config",
            demo["cfg"],
            "--weights",
            demo["ckpt"],
            "--output",
            str(tmp_path),
            "--save_predictions",
            "--test_crops",
            "3",
            "--test_clips",
            "2",
            "--opts",
            f"data.val_list={short}",
        ]
    )
    saved = np.load(tmp_path / "predictions.npz")
    capsys.readouterr()
    folders = [p for p, _ in demo["folders"]][:5]
    code, out, _ = _run(
        [
            "--config",
            demo["cfg"],
            "--weights",
            demo["ckpt"],
            "--json",
            "--topk",
            "4",
            "--test_crops",
            "3",
            "--test_clips",
            "2",
            *folders,
        ],
        capsys,
    )
    assert code == 0
    for i, r in enumerate(json.loads(out)["results"]):
        probs = np.zeros(4)
        for p in r["predictions"]:
            probs[p["index"]] = p["probability"]
        np.testing.assert_allclose(probs, saved["scores"][i], rtol=1e-4, atol=1e-5)


def test_bad_inputs_reported_and_others_processed(demo, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    empty_dir = tmp_path / "empty_frames"
    empty_dir.mkdir()
    good = demo["videos"][0][0]
    inputs = [str(broken), good, str(tmp_path / "missing.mp4"), str(empty_dir), demo["folders"][0][0]]
    code, out, err = _run(["--config", demo["cfg"], "--weights", demo["ckpt"], *inputs], capsys)
    assert code == 1
    assert good in out and demo["folders"][0][0] in out and "1. " in out
    assert str(broken) in err and "missing.mp4" in err and "no image files" in err
    assert "Traceback" not in err
    summary = err.rstrip().splitlines()[-1]  # the last line says which inputs failed
    assert summary.startswith(f"3 of 5 inputs failed: {broken} (") and f", {tmp_path / 'missing.mp4'} (" in summary
    assert summary.endswith(f", {empty_dir} (no image files (.jpg, .jpeg, .png, .bmp, .webp) in this folder)")
    code, out, _ = _run(["--config", demo["cfg"], "--weights", demo["ckpt"], "--json", *inputs], capsys)
    res = json.loads(out)["results"]
    assert [("error" in r) for r in res] == [True, False, True, True, False]


def test_config_from_checkpoint_and_reordered_class_names(demo, tmp_path, capsys):
    """A reordered subset of the training classes is scored by name: the probabilities of the two
    classes keep their ratio whatever the CSV's order (the original relabelled rows by position)."""
    video = demo["videos"][0][0]
    full = _run(["--weights", demo["ckpt"], "--json", video], capsys)[1]
    p_full = {p["class"]: p["probability"] for p in json.loads(full)["results"][0]["predictions"]}
    labels = tmp_path / "new.csv"
    labels.write_text("id,name\n0,yellow square moving up\n1,red circle moving left\n")
    code, out, _ = _run(["--weights", demo["ckpt"], "--labels", str(labels), "--json", video], capsys)
    assert code == 0
    p_sub = {p["class"]: p["probability"] for p in json.loads(out)["results"][0]["predictions"]}
    a, b = "yellow square moving up", "red circle moving left"
    assert set(p_sub) == {a, b}
    assert p_sub[a] / p_sub[b] == pytest.approx(p_full[a] / p_full[b], rel=1e-4)


def test_new_class_names_on_random_text_weights_refused(demo, tmp_path):
    labels = tmp_path / "animals.csv"
    labels.write_text("id,name\n0,cat\n1,dog\n2,fish\n")
    with pytest.raises(UserError, match="cannot score the class names given \\(cat, dog, fish\\).*random weights"):
        predict.main(["--weights", demo["ckpt"], "--labels", str(labels), demo["videos"][0][0]])


def test_missing_weights(demo, capsys):
    with pytest.raises(UserError, match="weights file not found: .*nope.pt"):
        predict.main(["--config", demo["cfg"], "--weights", str(demo["base"] / "nope.pt"), demo["videos"][0][0]])


def test_wrong_architecture_lists_keys(demo, tmp_path):
    cfg = dict(demo["cfg_dict"], network=dict(demo["cfg_dict"]["network"], sim_header="Transf"))
    import yaml

    path = tmp_path / "transf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError) as err:
        predict.main(["--config", str(path), "--weights", demo["ckpt"], demo["videos"][0][0]])
    assert "missing keys" in str(err.value) and "fusion_model." in str(err.value)


def test_label_csv_mismatch_with_trainable_classifier(demo, tmp_path, tiny_checkpoint):
    import yaml

    cfg_d = dict(demo["cfg_dict"], network=dict(demo["cfg_dict"]["network"], fix_text=False))
    cfg_path = tmp_path / "trainable.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_d))
    ckpt = tiny_checkpoint(cfg_d, demo["names"], tmp_path / "trainable.pt", save_names=False)
    labels = tmp_path / "three.csv"
    labels.write_text("id,name\n0,a\n1,b\n2,c\n")
    with pytest.raises(UserError, match="cannot score the class names given.*rows were trained"):
        predict.main(["--config", str(cfg_path), "--weights", str(ckpt), "--labels", str(labels), demo["videos"][0][0]])


# ----------------------------------------------------------------------------- timelines, images, --opts


@pytest.fixture(scope="module")
def long_video(demo):
    """A 60 s mp4 (10 fps) of six 10 s segments, each one of the model's classes doing its motion."""
    from datasets.synthetic import class_list, render_video, write_mp4

    classes = class_list(8)
    rng = np.random.default_rng(5)
    order = [0, 1, 2, 3, 0, 1]  # labels of the 4-class model (KEEP[label] in the generated set)
    frames = []
    for label in order:
        frames += render_video(classes[KEEP[label]], 100, 64, rng)
    path = demo["base"] / "long60.mp4"
    write_mp4(path, frames, fps=10)
    return str(path), order


def test_window_timeline_covers_a_60s_video(demo, long_video, tmp_path, capsys):
    path, order = long_video
    code, out, err = _run(
        [
            "--weights",
            demo["ckpt"],
            "--window",
            "4s",
            "--stride",
            "2s",
            "--topk",
            "3",
            "--json",
            "--out",
            str(tmp_path),
            path,
        ],
        capsys,
    )
    assert code == 0, err
    tl = json.loads(out)["results"][0]
    assert tl["num_frames"] == 600 and tl["fps"] == pytest.approx(10.0) and tl["duration_s"] == pytest.approx(60.0)
    wins = tl["windows"]
    assert wins[0]["start_frame"] == 0 and wins[-1]["end_frame"] == 600 and wins[-1]["end_s"] == pytest.approx(60.0)
    assert all(b["start_frame"] <= a["end_frame"] for a, b in zip(wins, wins[1:], strict=False))  # no gap
    assert all(w["end_frame"] - w["start_frame"] == 40 and len(w["predictions"]) == 3 for w in wins)
    assert all([p["rank"] for p in w["predictions"]] == [1, 2, 3] for w in wins)
    assert len(wins) == 29
    # windows inside one segment mostly name that segment's class
    inside = [
        (w, order[w["start_frame"] // 100]) for w in wins if w["start_frame"] // 100 == (w["end_frame"] - 1) // 100
    ]
    right = sum(w["predictions"][0]["index"] == label for w, label in inside)
    assert right / len(inside) >= 0.6, (right, len(inside))
    files = {Path(f).name for f in tl["files"]}
    assert files == {"long60.timeline.json", "long60.timeline.csv", "long60.timeline.png"}
    rows = (tmp_path / "long60.timeline.csv").read_text().splitlines()
    assert rows[0].startswith("window,start_frame,end_frame,start_s,end_s,top1,top1_prob") and len(rows) == 30
    assert json.loads((tmp_path / "long60.timeline.json").read_text())["windows"] == wins
    assert (tmp_path / "long60.timeline.png").stat().st_size > 5000
    assert "long60.mp4: 8/29 windows (28 %)" in err and "long60.mp4: 29/29 windows in" in err  # progress on stderr


def test_window_in_frames_text_output_and_bad_windows(demo, long_video, tmp_path, capsys):
    path, _ = long_video
    code, out, err = _run(["--weights", demo["ckpt"], "--window", "100f", "--out", str(tmp_path), path], capsys)
    assert code == 0, err
    assert "6 windows of 10 s" in out and "50.00 -   60.00 s" in out
    code, out, err = _run(
        ["--weights", demo["ckpt"], "--window", "90s", "--out", str(tmp_path / "b"), path, demo["folders"][0][0]],
        capsys,
    )
    assert code == 1
    assert "--window 90s is 900 frames, longer than the input's 600 frames" in err and "Traceback" not in err
    assert "frame rate is unknown" in err  # the frame folder: seconds need --fps
    assert err.rstrip().splitlines()[-1].startswith(f"2 of 2 inputs failed: {path} (--window 90s is 900 frames")
    code, out, err = _run(
        [
            "--weights",
            demo["ckpt"],
            "--window",
            "4f",
            "--fps",
            "8",
            "--out",
            str(tmp_path / "c"),
            demo["folders"][0][0],
        ],
        capsys,
    )
    assert code == 0 and "windows of 0.5 s" in out
    with pytest.raises(UserError, match="--window 'x': give seconds"):
        predict.main(["--weights", demo["ckpt"], "--window", "x", path])
    with pytest.raises(UserError, match="--stride needs --window"):
        predict.main(["--weights", demo["ckpt"], "--stride", "2s", path])


def test_image_is_a_one_frame_clip(demo, tmp_path, capsys):
    from PIL import Image

    first = sorted(Path(demo["folders"][0][0]).glob("*.jpg"))[0]
    image = tmp_path / "still.png"
    Image.open(first).convert("RGB").save(image)
    folder = tmp_path / "one_frame"
    folder.mkdir()
    Image.open(first).convert("RGB").save(folder / "img_00001.png")
    code, out, err = _run(["--weights", demo["ckpt"], "--json", "--test_crops", "3", str(image), str(folder)], capsys)
    assert code == 0, err
    a, b = json.loads(out)["results"]
    assert a["predictions"] == b["predictions"]  # the image = a one-frame video of it
    code, _, err = _run(["--weights", demo["ckpt"], "--window", "2f", str(image)], capsys)
    assert code == 1 and "an image has no timeline" in err


def test_opts_do_not_swallow_the_inputs(demo, capsys):
    video = demo["videos"][0][0]
    code, out, err = _run(["--weights", demo["ckpt"], "--json", "--opts", "data.batch_size=2", "seed=3", video], capsys)
    assert code == 0, err
    assert [r["input"] for r in json.loads(out)["results"]] == [video]
