"""app.results: the model-zoo table (Markdown and CSV) from results files and run folders, with
multiply-adds counted by torch's FLOP counter and checked against a hand count for ViT-B/32."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import torch
import yaml

import clip
from app.results import collect_rows, count_macs, main, markdown, model_cost
from utils.config import resolve, to_config
from utils.errors import UserError


def vit_macs(image=224, patch=32, width=768, layers=12, mlp=3072, embed=512) -> int:
    """Multiply-adds of a CLIP ViT on one image, by hand: patch embedding, per block the QKV, output
    and MLP projections of every token and the two attention products, then the final projection."""
    n = (image // patch) ** 2
    tokens = n + 1
    patch_embed = n * width * 3 * patch * patch
    per_block = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
    return patch_embed + layers * per_block + width * embed


def test_vit_b32_multiply_adds_match_the_hand_count():
    visual = clip.create_clip("ViT-B/32", "none").visual
    macs = count_macs(visual, torch.zeros(1, 3, 224, 224))
    assert macs == vit_macs()
    assert abs(macs / 4.4e9 - 1) < 0.02  # the 4.4 G multiply-adds papers quote for ViT-B/32


def test_model_cost_is_frames_times_the_frame_plus_the_head():
    cfg = to_config(resolve({"data": {"num_segments": 8}, "network": {"arch": "ViT-B/32", "sim_header": "meanP"}}, "t"))
    gmacs, params = model_cost(cfg)
    assert gmacs == pytest.approx(8 * vit_macs() / 1e9 + 512 * 2 / 1e9, rel=1e-9)  # + the 2 class logits
    visual = clip.create_clip("ViT-B/32", "none").visual
    assert params == pytest.approx((sum(p.numel() for p in visual.parameters()) + 1) / 1e6)  # + logit_scale


@pytest.fixture()
def runs(tmp_path):
    cfg = {
        "data": {"dataset": "syn", "num_segments": 2, "input_size": 112},
        "network": {"arch": "tiny", "pretrained": "none", "sim_header": "Transf", "classifier": "orthogonal"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    test = {
        "config": str(tmp_path / "cfg.yaml"),
        "weights": str(tmp_path / "a" / "model_best.pt"),
        "dataset": "syn",
        "arch": "tiny",
        "view_layout": "2x3x2",
        "views": 6,
        "top1": 97.91666666666667,
        "top5": 100.0,
        "opts": [],
    }
    zs = {
        "config": str(tmp_path / "cfg.yaml"),
        "weights": "k400.pt",
        "dataset": "syn",
        "arch": "tiny",
        "view_layout": "2x1x1",
        "views": 1,
        "protocols": ["full", "half", "splits"],
        "full_classes": {"top1": 51.123456789},
        "half_classes": {"top1_mean": 66.6, "top1_std": 3.3333333},
        "splits": {"top1_mean": 49.5, "top1_std": 1.25},
        "opts": [],
    }
    for name, res in (("a/test_3x2", test), ("zs", zs)):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    run = tmp_path / "b"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.csv").write_text("epoch,train_loss,val_top1,val_top5\n0,1.0,50.0,90.0\n1,0.5,75.5,99.0\n2,0.4,,\n")
    return tmp_path, test, zs


def test_table_rows_equal_the_results_files(runs, capsys):
    tmp_path, test, zs = runs
    main(
        [
            str(tmp_path / "a"),
            str(tmp_path / "zs" / "results.json"),
            str(tmp_path / "b"),
            "--md",
            str(tmp_path / "t.md"),
            "--csv",
            str(tmp_path / "t.csv"),
        ]
    )
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [r["run"] for r in rows] == ["a", "k400", "b"]
    assert float(rows[0]["top1"]) == test["top1"] and float(rows[0]["top5"]) == test["top5"]
    assert rows[0]["views"] == "2x3x2" and rows[0]["training"] == "CE, orthogonal classifier frozen"
    assert float(rows[1]["zs_full_top1"]) == zs["full_classes"]["top1"]
    assert float(rows[1]["zs_half_top1_std"]) == zs["half_classes"]["top1_std"]
    assert float(rows[2]["top1"]) == 75.5 and rows[2]["kind"] == "val (epoch 1)" and rows[2]["views"] == "2x1x1"
    gmacs, params = model_cost(to_config(resolve(yaml.safe_load((tmp_path / "cfg.yaml").read_text()), "t")))
    assert float(rows[0]["gflops_per_view"]) == gmacs and float(rows[0]["params_m"]) == params
    table = (tmp_path / "t.md").read_text()
    assert table == capsys.readouterr().out
    assert "| a | test | syn | tiny | Transf | CE, orthogonal classifier frozen | 2x3x2 | 97.92 | 100.00 |" in table
    assert "51.12 |" in table and "66.60 ± 3.33" in table and "49.50 ± 1.25" in table
    assert f"{gmacs:.2f} × 6" in table and "mAP" not in table


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        collect_rows([tmp_path / "nope"])
    with pytest.raises(UserError, match="no results.json below it"):
        collect_rows([tmp_path])
    assert markdown([]).startswith("|")


def test_a_folder_is_searched_at_any_depth(runs, capsys):
    """`python -m app.results exp/`: every results.json below (nested at any depth) and every
    training run folder below without one (its best validation); a run without any validation
    yet is left out with a note, a folder with neither is a one-line error."""
    tmp_path, test, _ = runs
    deep = tmp_path / "exp" / "k400" / "ViT-B-32"
    shutil.copytree(tmp_path / "b", deep / "run1")  # a run folder, two levels below
    shutil.copytree(tmp_path / "b", deep / "run2")  # a run folder holding a test's results
    (deep / "run2" / "test_3x2").mkdir()
    shutil.copy(tmp_path / "a" / "test_3x2" / "results.json", deep / "run2" / "test_3x2" / "results.json")
    shutil.copytree(tmp_path / "zs", tmp_path / "exp" / "test" / "ucf" / "w_8x1x1_zs-full_0123abcd")
    (deep / "run3").mkdir()  # a run that has not validated yet
    (deep / "run3" / "config.yaml").write_text((tmp_path / "b" / "config.yaml").read_text())
    (deep / "run3" / "metrics.csv").write_text("epoch,train_loss,val_top1,val_top5\n0,1.0,,\n")
    rows = collect_rows([tmp_path / "exp"])
    assert [(r["source"], r["kind"]) for r in rows] == [
        (str(deep / "run2" / "test_3x2" / "results.json"), "test"),
        (str(tmp_path / "exp" / "test" / "ucf" / "w_8x1x1_zs-full_0123abcd" / "results.json"), "zero-shot"),
        (str(deep / "run1" / "metrics.csv"), "val (epoch 1)"),
    ]
    assert rows[0]["top1"] == test["top1"] and rows[2]["top1"] == 75.5
    assert f"note: left out {deep / 'run3'}: {deep / 'run3'}/metrics.csv has no validation row yet" in (
        capsys.readouterr().err
    )
    with pytest.raises(UserError, match="metrics.csv has no validation row yet"):
        collect_rows([deep / "run3"])  # named itself: an error
    (deep / "run1" / "results.json").write_text("{not json")
    with pytest.raises(UserError, match="run1/results.json: not a readable results file"):
        collect_rows([tmp_path / "exp"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="no results.json below it and no training run folder"):
        collect_rows([tmp_path / "empty"])
