"""scripts/run_demo.sh end to end with one short epoch: data generation (and regeneration when the
demo's data arguments change), training, the multi-view test and the summary."""

from __future__ import annotations

import json
import os
import shutil
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


def _few_videos(data: Path, tmp_path: Path) -> str:
    """DEMO_OPTS that train on 12 and validate and test on 6 of the generated videos (batches of 4:
    3 steps, also for the contrastive run, which drops a short last batch)."""
    lines = (data / "val.txt").read_text().splitlines(keepends=True)
    train, val = tmp_path / "few_train.txt", tmp_path / "few_val.txt"
    train.write_text("".join(lines[::8]))
    val.write_text("".join(lines[::16]))
    sizes = "solver.epochs=1 data.num_segments=2 data.workers=0 data.batch_size=4"
    return f"{sizes} data.train_list={train} data.val_list={val}"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo as a newcomer runs it (one short epoch): it generates the data, trains and tests."""
    base = tmp_path_factory.mktemp("demo")
    return base, _demo(base, base / "demo", "run1")


def test_demo_script_trains_tests_and_regenerates_only_on_change(first_run, tmp_path):
    base, first = first_run
    data = base / "demo"
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
    result = json.loads((base / "run1" / "transf" / "test_3x2" / "results.json").read_text())
    assert result["views"] == 6 and result["num_classes"] == 6 and 0.0 <= result["top1"] <= 100.0
    assert "Text4Vis offline demo" in first and f"{result['top1']:.1f} % top-1" in first
    for folder in (base / "run1" / "transf", base / "run1" / "transf" / "test_3x2"):
        page = (folder / "report.html").read_text()
        assert f"{result['top1']:.2f}" in page and "<script src" not in page  # the demo's own numbers, offline

    labels_before = (data / "labels.csv").stat().st_mtime_ns
    second = _demo(tmp_path, data, "run2", DEMO_OPTS=_few_videos(data, tmp_path))  # about the data step
    assert "generating" not in second and (data / "labels.csv").stat().st_mtime_ns == labels_before

    other = tmp_path / "other"  # a copy, so that the data of first_run stays as it was
    shutil.copytree(data, other)
    third = _demo(tmp_path, other, "run3", DEMO_MOTIONS="fade,light,scale")
    assert "[demo] generating the synthetic dataset" in third
    assert "red circle fading in" in (other / "labels.csv").read_text()


def test_demo_compare_trains_both_paradigms_and_the_table_equals_their_results(first_run, tmp_path):
    """`run_demo.sh compare`: the frozen-classifier model (CE) and the contrastive one (NCE, text
    tower trained), each tested multi-view; the side-by-side table equals their results.json."""
    import csv

    data = first_run[0] / "demo"
    out = _demo(tmp_path, data, "cmp", DEMO_ARGS="compare", DEMO_OPTS=_few_videos(data, tmp_path))
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
    ckpt = torch.load(tmp_path / "cmp" / "nce" / "last_model.pt", weights_only=True)
    assert any(k.startswith("text.") for k in ckpt["model"])
