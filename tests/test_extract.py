"""app.extract: embeddings equal `model.encode_video`; a run killed with SIGKILL and run again writes
the same file, byte for byte, as an uninterrupted run; two processes (torchrun, gloo) write the same
rows; inputs by path (folders, videos, images) with unreadable ones listed; app.lda reads the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from utils.errors import UserError
from utils.evaluate import ViewSet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):
    from datasets.lists import read_label_csv
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("extract")
    data = base / "syn"
    generate(data, classes=4, videos_per_class=2, val_videos_per_class=3, frames=8, size=64, fmt="both", seed=2)
    cfg_d = {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 4,
            "batch_size": 2,
            "workers": 0,
            "train_root": str(data / "frames"),
            "train_list": str(data / "train.txt"),
            "val_root": str(data / "frames"),
            "val_list": str(data / "val.txt"),
            "label_list": str(data / "labels.csv"),
            "input_size": 112,
            "scale_size": 128,
        },
        "network": {
            "arch": "tiny",
            "pretrained": "none",
            "sim_header": "Transf",
            "text_cache": "",
            "classifier": "orthogonal",
        },
    }
    (base / "cfg.yaml").write_text(yaml.safe_dump(cfg_d))
    names = read_label_csv(data / "labels.csv")
    ckpt = tiny_checkpoint(cfg_d, names, base / "tiny.pt", perturb_head=True)
    return {"base": base, "data": data, "ckpt": str(ckpt), "cfg": cfg_d, "names": names}


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _extract(*args: str) -> None:
    from app.extract import main

    main(list(args))


def test_embeddings_equal_encode_video(setup, capsys):
    from app.load_weights import load_model
    from datasets import build_dataset
    from datasets.transforms import normalize
    from utils.config import resolve, to_config

    out = setup["base"] / "val.npz"
    _extract(
        "--weights",
        setup["ckpt"],
        "--config",
        str(setup["base"] / "cfg.yaml"),
        "--split",
        "val",
        "--out",
        str(out),
        "--chunk",
        "5",
        "--per_view",
        "--per_frame",
        "--device",
        "cpu",
    )
    assert "wrote" in capsys.readouterr().out
    got = np.load(out, allow_pickle=False)
    ds = build_dataset(to_config(resolve(setup["cfg"], "t")), "test")
    assert got["ids"].tolist() == [r.path for r in ds.records]
    assert got["labels"].tolist() == [r.label for r in ds.records]
    assert got["class_names"].tolist() == setup["names"] and len(got["failed_ids"]) == 0
    model = load_model(setup["ckpt"]).model
    with torch.no_grad():
        want = torch.stack([model.encode_video(normalize(ds[i][0][None]))[0] for i in range(len(ds))])
        frames = model.encode_frames(normalize(torch.stack([ds[i][0] for i in range(len(ds))]).flatten(0, 1)))
    np.testing.assert_allclose(got["embeddings"], want.numpy(), atol=1e-5, rtol=0)
    assert got["view_embeddings"].shape == (len(ds), 1, want.shape[1])
    np.testing.assert_allclose(got["view_embeddings"][:, 0], got["embeddings"], atol=1e-6)
    np.testing.assert_allclose(got["frame_embeddings"].reshape(-1, want.shape[1]), frames.numpy(), atol=1e-5)
    assert not Path(str(out) + ".parts").exists()
    import json

    meta = json.loads(str(got["meta"]))
    assert meta["format"] == "text4vis-embeddings" and meta["views"] == 1


def test_multiview_is_the_mean_of_views(setup):
    out = setup["base"] / "val6.npz"
    _extract(
        "--weights",
        setup["ckpt"],
        "--config",
        str(setup["base"] / "cfg.yaml"),
        "--split",
        "val",
        "--out",
        str(out),
        "--test_crops",
        "3",
        "--test_clips",
        "2",
        "--per_view",
        "--device",
        "cpu",
    )
    got = np.load(out)
    assert got["view_embeddings"].shape[1] == 6
    np.testing.assert_allclose(got["view_embeddings"].mean(axis=1), got["embeddings"], atol=1e-5)
    # test.py's fusion: the same embeddings it scores (predictions of test.py equal softmax of these)
    from app.load_weights import load_model
    from utils.similarity import class_probabilities

    classes = load_model(setup["ckpt"]).model.class_embeddings
    probs = class_probabilities(torch.from_numpy(got["embeddings"]), classes, 100.0)
    assert probs.shape == (12, 4)


def _cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.extract",
        "--weights",
        "SETUP",
        "--config",
        "CONFIG",
        "--split",
        "val",
        "--out",
        str(out),
        "--chunk",
        "1",
        "--batch_size",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def test_killed_run_resumes_to_the_same_file(setup):
    base = setup["base"]
    whole, resumed = base / "whole.npz", base / "resumed.npz"

    def cmd(out):
        swap = {"SETUP": setup["ckpt"], "CONFIG": str(setup["base"] / "cfg.yaml")}
        return [swap.get(c, c) for c in _cmd(out, "--per_view")]

    proc = subprocess.run(cmd(whole), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = Path(str(resumed) + ".parts")
    run = subprocess.Popen(
        cmd(resumed), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("chunk-*.npz"))) < 4 and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    done = sorted(p.name for p in parts.glob("chunk-*.npz"))
    assert 4 <= len(done) < 12, done  # killed mid-way
    assert not resumed.exists()
    proc = subprocess.run(cmd(resumed), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(done)} already done (resuming)" in proc.stdout
    assert resumed.read_bytes() == whole.read_bytes()
    got = np.load(resumed)
    assert len(got["ids"]) == len(set(got["ids"].tolist())) == 12  # no duplicate, no missing row
    assert not parts.exists()


def test_two_processes_write_the_same_rows(setup):
    out1, out2 = setup["base"] / "one.npz", setup["base"] / "two.npz"
    _extract(
        "--weights",
        setup["ckpt"],
        "--config",
        str(setup["base"] / "cfg.yaml"),
        "--split",
        "val",
        "--out",
        str(out1),
        "--chunk",
        "2",
        "--device",
        "cpu",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "app.extract",
            "--weights",
            setup["ckpt"],
            "--config",
            str(setup["base"] / "cfg.yaml"),
            "--split",
            "val",
            "--out",
            str(out2),
            "--chunk",
            "2",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = np.load(out1), np.load(out2)
    assert a["ids"].tolist() == b["ids"].tolist() and a["labels"].tolist() == b["labels"].tolist()
    np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=1e-5, rtol=0)
    assert "2 process(es)" in proc.stdout


def test_inputs_by_path_and_unreadable_ones(setup, tmp_path, capsys):
    from PIL import Image

    data = setup["data"]
    videos = sorted((data / "videos").rglob("*.mp4"))[:2]
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for v in videos:
        (folder / "sub" / v.name).write_bytes(v.read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video" * 20)
    frame_dir = sorted((data / "frames").glob("*/*"))[0]
    image = tmp_path / "still.png"
    Image.open(next(frame_dir.glob("*.jpg"))).save(image)
    out = tmp_path / "paths.npz"
    with pytest.raises(SystemExit) as ended:  # the file is written, then the failure is a non-zero exit
        _extract(
            "--weights", setup["ckpt"], str(folder), str(frame_dir), str(image), "--out", str(out), "--device", "cpu"
        )
    assert ended.value.code == 1
    captured = capsys.readouterr()
    got = np.load(out)
    ids = got["ids"].tolist()
    assert ids == [str(folder / "sub" / v.name) for v in videos] + [str(frame_dir), str(image)]
    assert got["labels"].tolist() == [-1] * 4
    assert got["failed_ids"].tolist() == [str(folder / "broken.mp4")]
    assert "broken.mp4" in got["failed_errors"][0]
    summary = captured.err.rstrip().splitlines()[-1]
    assert summary.startswith(f"1 of 5 inputs failed: {folder / 'broken.mp4'} (")
    assert summary.endswith(f"(no row in {out}: listed in failed_ids, failed_errors)")
    assert "extract: 5/5 inputs in" in captured.err  # progress per input (plain lines: not a terminal)
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        _extract("--weights", setup["ckpt"], str(image), "--out", str(out), "--device", "cpu")
    with pytest.raises(UserError, match="give the inputs one way"):
        _extract("--weights", setup["ckpt"], "--out", str(tmp_path / "none.npz"))
    with pytest.raises(UserError, match="input not found"):
        _extract("--weights", setup["ckpt"], str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "n.npz"))


def test_resume_with_other_settings_is_refused(setup, tmp_path):
    out = tmp_path / "e.npz"
    parts = Path(str(out) + ".parts")
    from app.extract import main

    parts.mkdir()
    (parts / "manifest.json").write_text('{"chunk": 99}')
    args = ["--weights", setup["ckpt"], "--config", str(setup["base"] / "cfg.yaml"), "--split", "val"]
    args += ["--out", str(out), "--device", "cpu"]
    with pytest.raises(UserError, match="holds parts of a run with other settings.*chunk"):
        main(args)
    main([*args, "--overwrite"])
    assert out.exists() and not parts.exists()


def test_lda_fits_from_extracted_features(setup, capsys):
    out = setup["base"] / "train.npz"
    _extract(
        "--weights",
        setup["ckpt"],
        "--config",
        str(setup["base"] / "cfg.yaml"),
        "--split",
        "train",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    from app.lda import main as lda_main

    lda_out = setup["base"] / "lda.pt"
    lda_main(["--features", str(out), "--out", str(lda_out)])
    directions = torch.load(lda_out, weights_only=True)
    assert directions.shape == (4, 256)
    assert "from 8 videos" in capsys.readouterr().out


def test_lda_features_with_transforms_deferred_to_the_device(setup, capsys):
    """`data.transform_device: cuda` defers the clip transform out of the loader; the LDA tool's own
    pass must apply it (here on the CPU device): the same features as the plain pipeline."""
    from app.lda import extract_features
    from utils.config import resolve, to_config

    plain = to_config(resolve(setup["cfg"], "t"))
    deferred = to_config(resolve(setup["cfg"], "t", ["data.transform_device=cuda"]))
    emb, labels = extract_features(plain, setup["ckpt"])
    emb_d, labels_d = extract_features(deferred, setup["ckpt"])
    assert emb.shape == (8, 256) and torch.equal(labels_d, labels)
    assert capsys.readouterr().err.count("lda features: 8/8 videos in ") == 2  # progress (utils.progress)
    torch.testing.assert_close(emb_d, emb, rtol=0, atol=1e-5)


class _Numbered(torch.utils.data.Dataset):
    """Item i: a clip filled with i, label i % 2; item 3 cannot be read."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int):
        if index == 3:
            raise UserError("cannot read input 3")
        return torch.full((1, 3, 2, 2), index, dtype=torch.uint8), index % 2, index


def test_one_loader_serves_every_chunk_and_no_batch_crosses_a_chunk(monkeypatch):
    from types import SimpleNamespace

    import app.extract as ex

    made, seen = [], []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, *a, **k):
            made.append(1)
            super().__init__(*a, **k)

    def encode(model, clips, view_set, **_):
        seen.append(clips[:, 0, 0, 0, 0].tolist())
        return clips.float().flatten(1)[:, :4].unsqueeze(1), None  # (B, 1 view, 4)

    monkeypatch.setattr(ex, "DataLoader", CountingLoader)
    monkeypatch.setattr(ex, "encode_views_frames", encode)
    args = SimpleNamespace(batch_size=2, workers=1, per_view=False, per_frame=False, precision="fp32")
    data = ex.Guarded(_Numbered(), [i % 2 for i in range(7)], (1, 3, 2, 2))
    chunks = [(0, [0, 1, 2]), (1, [3, 4, 5]), (2, [6])]
    counted: list[int] = []
    out = list(
        ex.run_chunks(
            None,
            data,
            chunks,
            args,
            ViewSet(1, 1, torch.device("cpu"), None),
            progress=counted.append,
        )
    )
    assert made == [1]
    assert counted == [2, 1, 2, 1, 1]  # every input once, per batch ([3, 4]: the failed one too)
    assert seen == [[0, 1], [2], [4], [5], [6]]  # batches of 2 that stop at each chunk's end; 3 failed
    assert [c for c, _ in out] == [0, 1, 2]
    parts = {c: a for c, a in out}
    assert parts[1]["index"].tolist() == [4, 5] and parts[1]["failed_index"].tolist() == [3]
    assert "cannot read input 3" in str(parts[1]["failed_errors"][0])
    assert parts[0]["labels"].tolist() == [0, 1, 0] and parts[2]["embeddings"].tolist() == [[6.0] * 4]
