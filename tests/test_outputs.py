"""No output is overwritten by accident (app.outputs): the default results folders of test.py,
test_zeroshot.py and `predict.py --window` differ whenever the evaluation differs (--opts, another
list, templates, protocol, window), the same evaluation again uses the same folder, and an explicit
--output / --out that already holds results is refused before anything is loaded unless
--overwrite."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from utils.errors import UserError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"text4vis_{name}_outputs", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):

    from datasets.lists import read_label_csv
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("outputs")
    data = base / "syn"
    generate(data, classes=4, videos_per_class=1, val_videos_per_class=1, frames=8, size=48, fmt="frames", seed=3)
    cfg_d = {
        "seed": 0,
        "data": {
            "dataset": "syn",
            "num_segments": 2,
            "batch_size": 4,
            "workers": 0,
            "val_root": str(data / "frames"),
            "val_list": str(data / "val.txt"),
            "label_list": str(data / "labels.csv"),
            "input_size": 112,
            "scale_size": 128,
        },
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "None", "text_cache": ""},
        "logging": {"print_freq": 0},
    }
    cfg_path = base / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_d))
    names = read_label_csv(data / "labels.csv")
    ckpt = tiny_checkpoint(cfg_d, names, base / "tiny.pt", save_names=False)
    half = base / "half.txt"
    half.write_text("".join((data / "val.txt").read_text().splitlines(keepends=True)[:2]))
    return {"base": base, "data": data, "cfg": str(cfg_path), "ckpt": str(ckpt), "half": str(half)}


def folders(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("results.json")}


def test_default_results_folders_differ_when_the_evaluation_does(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test, zeroshot = load_script("test"), load_script("test_zeroshot")
    common = ["--config", setup["cfg"], "--weights", setup["ckpt"], "--device", "cpu", "--no_analysis"]
    test.main(common)
    (first,) = folders(tmp_path)
    assert first.parent == Path("exp/test/tiny").resolve() and first.name.startswith("tiny_2x1x1_")
    assert "test: 4/4 videos in " in (first / "log.txt").read_text()  # progress lines in the log (no terminal)
    assert len(first.name) == len("tiny_2x1x1_") + 8
    seen = {first}
    for opts in (
        ["network.templates=a photo of {}."],  # another template
        [f"data.val_list={setup['half']}"],  # another list
        ["data.val_list=" + setup["half"], "network.templates=a photo of {}."],
    ):
        test.main([*common, "--opts", *opts])
        new = folders(tmp_path) - seen
        assert len(new) == 1, opts  # a folder of its own
        seen |= new
    test.main([*common, "--test_crops", "3"])  # other views: the readable part says so
    assert any(p.name.startswith("tiny_2x3x1_") for p in folders(tmp_path) - seen)
    seen = folders(tmp_path)
    before = json.loads((first / "results.json").read_text())
    test.main([*common, "--opts", "data.workers=0", "logging.print_freq=5"])  # speed only: the same evaluation
    assert folders(tmp_path) == seen
    assert json.loads((first / "results.json").read_text())["top1"] == before["top1"]
    assert "holds the results of the same evaluation" in (first / "log.txt").read_text()

    zeroshot.main(common[:-1])  # same config, weights and views: not test.py's folder
    zeroshot.main([*common[:-1], "--protocol", "full"])
    zs = folders(tmp_path) - seen
    assert sorted(p.name[: -len("_12345678")] for p in zs) == ["tiny_2x1x1_zs-full", "tiny_2x1x1_zs-full-half"]
    assert all("full_classes" in json.loads((p / "results.json").read_text()) for p in zs)
    assert all("zero-shot: 4/4 videos in " in (p / "log.txt").read_text() for p in zs)


def test_explicit_output_holding_results_is_refused_unless_overwrite(setup, tmp_path, monkeypatch):
    test = load_script("test")
    out = tmp_path / "mine"
    args = ["--config", setup["cfg"], "--weights", setup["ckpt"], "--device", "cpu", "--output", str(out)]
    test.main(args)
    first = json.loads((out / "results.json").read_text())
    (out / "predictions.npz").write_bytes(b"from an earlier run")

    import app.eval_run

    def no_loading(*_a, **_k):
        raise AssertionError("the weights were opened before the refusal")

    monkeypatch.setattr(app.eval_run, "open_weights", no_loading)
    with pytest.raises(UserError) as err:
        test.main(args)
    msg = str(err.value)
    assert msg.startswith(f"--output {out} already holds results (results.json, predictions.npz, analysis.json")
    assert "--overwrite" in msg and "\n" not in msg
    with pytest.raises(UserError, match="already holds results"):
        load_script("test_zeroshot").main(args)
    monkeypatch.undo()
    test.main([*args, "--overwrite", "--no_analysis"])
    assert json.loads((out / "results.json").read_text())["top1"] == first["top1"]
    assert not (out / "predictions.npz").exists()  # nothing of the earlier run stays beside the new results
    assert not (out / "analysis.json").exists()
    empty = tmp_path / "only_a_log"
    empty.mkdir()
    (empty / "log.txt").write_text("a run that failed\n")
    test.main([*args[:-1], str(empty), "--no_analysis"])  # no results in it: not refused
    assert (empty / "results.json").is_file()


def test_predict_timelines_get_a_folder_per_setting(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predict = load_script("predict")
    video = sorted(p.parent for p in (setup["data"] / "frames").rglob("img_00001.jpg"))[0]
    other = tmp_path / "elsewhere" / video.name  # another input with the same name
    shutil.copytree(video, other)
    base = ["--weights", setup["ckpt"], "--device", "cpu", "--window", "4f"]

    def timelines() -> list[Path]:
        return sorted(Path("exp/predict").rglob("*.timeline.json"))

    predict.main([*base, str(video)])
    (one,) = timelines()
    assert one.name == f"{video.name}.timeline.json" and one.parent.name.startswith("tiny_2x1x1_w4f_")
    predict.main([*base, "--stride", "2f", str(video)])  # another stride: another folder
    assert len(timelines()) == 2 and len({p.parent for p in timelines()}) == 2
    predict.main([*base, str(video)])  # the same again: replaced in place
    assert len(timelines()) == 2
    predict.main([*base, str(other)])  # same settings, another input of the same name: kept apart
    names = sorted(p.name for p in one.parent.glob("*.timeline.json"))
    assert names == [f"{video.name}.timeline.json", f"{video.name}_2.timeline.json"]
    inputs = {json.loads(p.read_text())["input"] for p in one.parent.glob("*.timeline.json")}
    assert inputs == {str(video), str(other)}

    out = tmp_path / "mine"
    predict.main([*base, "--out", str(out), str(video)])
    with pytest.raises(UserError, match=f"--out {out} already holds results \\({video.name}.timeline.json"):
        predict.main([*base, "--out", str(out), str(video)])
    predict.main([*base, "--out", str(out), "--overwrite", str(video)])
    with pytest.raises(UserError, match="--out needs --window"):
        predict.main(["--weights", setup["ckpt"], "--out", str(out), str(video)])


def test_export_out_is_refused_when_it_exists(tmp_path):
    from app import export

    out = tmp_path / "model.pt"
    out.write_bytes(b"an earlier export")
    with pytest.raises(UserError, match=f"--out {out} already exists: pass --overwrite"):  # before the weights
        export.main(["--weights", str(tmp_path / "missing.pt"), "--out", str(out)])
    with pytest.raises(UserError, match="weights file not found"):
        export.main(["--weights", str(tmp_path / "missing.pt"), "--out", str(out), "--overwrite"])
    assert out.read_bytes() == b"an earlier export"


def test_lda_out_is_refused_when_it_exists(tmp_path):
    from app import lda

    out = tmp_path / "lda.pt"
    out.write_bytes(b"earlier")
    with pytest.raises(UserError, match=f"--out {out} already exists: pass --overwrite"):
        lda.main(["--features", str(tmp_path / "not_read.npz"), "--out", str(out)])
    with pytest.raises(UserError, match="not_read.npz: not an embeddings file"):  # --overwrite: goes on
        lda.main(["--features", str(tmp_path / "not_read.npz"), "--out", str(out), "--overwrite"])
