"""scripts/run_demo.sh end to end with one short epoch: data generation (and regeneration when the
demo's data arguments change), training, the multi-view test and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _demo(tmp_path: Path, data: Path, out: str, **env: str) -> str:
    run_env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEMO_DATA": str(data),
        "DEMO_OUT": str(tmp_path / out),
        "DEMO_OPTS": "solver.epochs=1 data.num_segments=2 data.workers=0",
        **env,
    }
    mode = run_env.pop("DEMO_ARGS", "transf")
    proc = subprocess.run(
        ["bash", "scripts/run_demo.sh", mode], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_demo_script_trains_tests_and_regenerates_only_on_change(tmp_path):
    data = tmp_path / "demo"
    first = _demo(tmp_path, data, "run1")
    assert "[demo] generating the synthetic dataset" in first
    assert (data / "labels.csv").read_text().splitlines()[1:] == [
        "0,red circle moving left",
        "1,red circle moving right",
        "2,blue square growing",
        "3,blue square shrinking",
        "4,green triangle moving up",
        "5,green triangle moving down",
    ]
    assert len((data / "val.txt").read_text().splitlines()) == 6 * 16
    result = json.loads((tmp_path / "run1" / "transf" / "test_3x2" / "results.json").read_text())
    assert result["views"] == 6 and result["num_classes"] == 6 and 0.0 <= result["top1"] <= 100.0
    assert "Text4Vis offline demo" in first and f"{result['top1']:.1f} % top-1" in first
    for folder in (tmp_path / "run1" / "transf", tmp_path / "run1" / "transf" / "test_3x2"):
        page = (folder / "report.html").read_text()
        assert f"{result['top1']:.2f}" in page and "<script src" not in page  # the demo's own numbers, offline

    labels_before = (data / "labels.csv").stat().st_mtime_ns
    few = tmp_path / "few.txt"  # the second run is about the data step: it trains and tests on 6 videos
    few.write_text("".join((data / "val.txt").read_text().splitlines(keepends=True)[::16]))
    opts = f"solver.epochs=1 data.num_segments=2 data.workers=0 data.train_list={few} data.val_list={few}"
    second = _demo(tmp_path, data, "run2", DEMO_OPTS=opts)
    assert "generating" not in second and (data / "labels.csv").stat().st_mtime_ns == labels_before

    third = _demo(tmp_path, data, "run3", DEMO_MOTIONS="fade,light,scale")
    assert "[demo] generating the synthetic dataset" in third
    assert "red circle fading in" in (data / "labels.csv").read_text()


def test_demo_compare_trains_both_paradigms_and_the_table_equals_their_results(tmp_path):
    """`run_demo.sh compare`: the frozen-classifier model (CE) and the contrastive one (NCE, text
    tower trained), each tested multi-view; the side-by-side table equals their results.json."""
    import csv

    out = _demo(tmp_path, tmp_path / "demo", "cmp", DEMO_ARGS="compare")
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [r["run"] for r in rows] == ["transf", "nce"]
    for row, name in zip(rows, ("transf", "nce"), strict=True):
        res = json.loads((tmp_path / "cmp" / name / "test_3x2" / "results.json").read_text())
        assert float(row["top1"]) == res["top1"] and float(row["top5"]) == res["top5"]
        assert row["views"] == res["view_layout"] == "2x3x2" and int(row["num_views"]) == 6
        assert float(row["gflops_per_view"]) > 0 and float(row["params_m"]) > 0
    assert [r["training"] for r in rows] == ["CE, orthogonal classifier frozen", "NCE, text tower trained"]
    assert rows[0]["gflops_per_view"] == rows[1]["gflops_per_view"]  # same video model, same cost
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert table in out
    compare_page = (tmp_path / "cmp" / "compare.html").read_text()
    assert all(f"{float(row['top1']):.2f}" in compare_page for row in rows)
    ckpt = torch.load(tmp_path / "cmp" / "nce" / "model_best.pt", weights_only=True)
    assert any(k.startswith("text.") for k in ckpt["model"])
