"""The HTML run report (app.report): what it reads, the numbers it shows, its size, the run-time
record (run_info.json), that a report failure never fails a run, and the page in a real browser
(headless Chromium: no console message, the numbers of results.json, a screenshot and a PDF).

Run folders are written with the project's own writers (MetricsLog, EvalRun.write_analysis,
utils.analysis) from generated scores, so the report reads exactly what a run leaves."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app import report
from app.report_data import load_run
from app.report_runinfo import RUN_INFO, read_run_info
from tests.test_predict import _run, demo, long_video  # noqa: F401 -- fixtures: tiny checkpoint, long video
from utils import analysis
from utils.config import dump, load_config
from utils.errors import UserError
from utils.fileio import atomic_write_text, write_csv
from utils.logger import LOGGER_NAME, MetricsLog
from utils.metrics import classification_report

ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = ROOT / "configs" / "demo" / "demo_transf.yaml"


# ----------------------------------------------------------------------------- run folders
def scores_for(labels: np.ndarray, classes: int, seed: int, skill: float = 2.5) -> torch.Tensor:
    """Softmax scores where the true class usually, not always, wins."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(labels), classes, generator=g)
    logits[torch.arange(len(labels)), torch.as_tensor(labels)] += skill
    return logits.softmax(dim=1)


def class_names(classes: int) -> list[str]:
    return [f"class {i:03d} <b>&" if i == 1 else f"class {i:03d}" for i in range(classes)]


def make_training(folder: Path, *, epochs: int = 6, classes: int = 6, seed: int = 0, lr: float = 5e-4) -> Path:
    """A training run folder as train.py leaves it: config.yaml, source config, metrics.csv (and
    curves.png) through MetricsLog, best_val_per_class.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config(DEMO_CFG, ["solver.epochs=" + str(epochs), f"solver.lr={lr}", f"data.num_classes={classes}"])
    atomic_write_text(folder / "config.yaml", dump(cfg))
    shutil.copy(DEMO_CFG, folder / "source_demo_transf.yaml")
    log = MetricsLog(folder)
    log.plot = lambda: None  # type: ignore[method-assign]  # curves.png (matplotlib) is not read by the report
    rng = np.random.default_rng(seed)
    best = -1.0
    for e in range(epochs):
        top1 = min(100.0, 30 + 10 * e + float(rng.uniform(-4, 4)))
        best = max(best, top1)
        wait = 0.02 + 0.01 * e
        log.epoch(
            {
                "epoch": e,
                "iteration": 12 * (e + 1),
                "train_loss": f"{2.0 * 0.8**e + seed * 0.1:.6f}",
                "lr": f"{lr * (e + 1) / epochs:.6e}",
                "lr_visual": f"{lr * 0.1 * (e + 1) / epochs:.6e}",
                "clips_per_s": "6.400",
                "epoch_time_s": "30.00",
                "val_top1": f"{top1:.3f}",
                "val_top5": f"{min(100.0, top1 + 20):.3f}",
                "best_top1": f"{best:.3f}",
                "data_wait_s": f"{wait:.4f}",
                "step_s": "0.5000",
                "data_wait_frac": f"{wait / 0.5:.4f}",
            }
        )
    labels = np.repeat(np.arange(classes), 4)
    summary = analysis.class_analysis(scores_for(labels, classes, seed), labels, class_names(classes))
    k = min(5, classes)
    rows = [{"epoch": 3, **{key: ("" if v is None else v) for key, v in c.items()}} for c in summary["per_class"]]
    write_csv(
        folder / "best_val_per_class.csv",
        rows,
        ["epoch", "index", "name", "support", "top1_correct", "top1", f"top{k}"],
    )
    return folder


def make_results(folder: Path, *, classes: int = 6, per_class: int = 5, seed: int = 1, skill: float = 2.5) -> dict:
    """A test.py results folder: results.json and the per-class files of EvalRun.write_analysis."""
    from app.eval_run import EvalRun

    folder.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(classes), per_class)
    scores = scores_for(labels, classes, seed, skill)
    run = object.__new__(EvalRun)  # the real writer, without a model or data
    run.class_names, run.output = class_names(classes), folder
    run.dataset = SimpleNamespace(records=[SimpleNamespace(path=f"video_{i}") for i in range(len(labels))])
    out = SimpleNamespace(labels=torch.as_tensor(labels), indices=torch.arange(len(labels)))
    run.write_analysis(out, scores)  # type: ignore[arg-type]
    results = {
        "config": str(DEMO_CFG),
        "weights": str(folder / "model_best.pt"),
        "dataset": "demo",
        "arch": "tiny",
        "num_classes": classes,
        "frames": 4,
        "test_crops": 3,
        "test_clips": 2,
        "views": 6,
        "view_layout": "4x3x2",
        "dense": False,
        "fuse": "embeddings",
        "precision": "fp32",
        "world_size": 1,
        "device": "cpu",
        "opts": [],
        **classification_report(scores, torch.as_tensor(labels)),
        "seconds": 3.0,
        "seconds_per_video": 3.0 / len(labels),
    }
    atomic_write_text(folder / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def make_zeroshot(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    half = [
        {
            "seed": s,
            "classes": [0, 1],
            "num_videos": 10,
            "top1": 50.0 + s,
            "top5": 100.0,
            "mean_class_accuracy": 50.0 + s,
            "classes_without_videos": 0,
        }
        for s in range(3)
    ]
    splits = [
        {
            "split": f"val_rgb_split_{i}.txt",
            "list": "x",
            "label_list": "y",
            "num_classes": 4,
            "videos_from": "own pass",
            "num_videos": 8,
            "top1": 40.0 + 10 * i,
            "top5": 90.0,
            "mean_class_accuracy": 40.0,
        }
        for i in (1, 2, 3)
    ]
    res = {
        "config": "zs.yaml",
        "weights": "w.pt",
        "dataset": "ucf101",
        "arch": "tiny",
        "num_classes": 4,
        "view_layout": "4x1x1",
        "views": 1,
        "protocols": ["full", "half", "splits"],
        "templates": ["a video of {}."],
        "eval_logit_scale": 100.0,
        "full_classes": {"top1": 62.5, "top5": 100.0, "num_videos": 16},
        "half_classes": {
            "repeats": 3,
            "classes_per_split": 2,
            "selection": "seeded",
            "top1_mean": 51.0,
            "top1_std": float(np.std([50, 51, 52])),
            "top5_mean": 100.0,
            "top5_std": 0.0,
            "splits": half,
        },
        "splits": {
            "top1_mean": 60.0,
            "top1_std": float(np.std([50, 60, 70])),
            "top5_mean": 90.0,
            "top5_std": 0.0,
            "per_split": splits,
        },
    }
    atomic_write_text(folder / "results.json", json.dumps(res))
    return res


def make_timeline(folder: Path) -> Path:
    from app.timeline import write_timeline

    names = ["walking", "running", "jumping"]
    windows = []
    for i in range(8):
        top = [1, 1, 0, 0, 2, 2, 2, 1][i]
        preds = [{"rank": 1, "index": top, "class": names[top], "probability": 0.5 + 0.05 * i}]
        preds += [{"rank": 2, "index": (top + 1) % 3, "class": names[(top + 1) % 3], "probability": 0.3 - 0.02 * i}]
        windows.append(
            {
                "index": i,
                "start_frame": 30 * i,
                "end_frame": 30 * i + 60,
                "start_s": i * 1.0,
                "end_s": i * 1.0 + 2.0,
                "predictions": preds,
            }
        )
    tl = {
        "input": "clip.mp4",
        "num_frames": 270,
        "fps": 30.0,
        "duration_s": 9.0,
        "window": {"frames": 60, "seconds": 2.0, "given": "2s"},
        "stride": {"frames": 30, "seconds": 1.0, "given": "1s"},
        "views": "8x1x1",
        "windows": windows,
    }
    return write_timeline(tl, folder, "clip")[0]


# ----------------------------------------------------------------------------- the page as data
class Page(HTMLParser):
    """Every element with a data-key (its data-value and text), the sortable tables' rows, the
    external references and the ids of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.keyed: list[tuple[str, str | None, str]] = []
        self.refs: list[str] = []
        self.ids: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._open: list[list] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        for name in ("src", "href", "xlink:href"):
            if a.get(name) and not a[name].startswith("#"):
                self.refs.append(a[name])
        if "data-key" in a:
            self._open.append([a["data-key"], a.get("data-value"), [], tag])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        for entry in self._open:
            entry[2].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][3] == tag:
            key, value, text, _ = self._open.pop()
            self.keyed.append((key, value, "".join(text).strip()))
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def values(self, key: str) -> list[tuple[float, str]]:
        return [(float(v), t) for k, v, t in self.keyed if k == key and v is not None]


def check_numbers(page: Page, results: dict) -> None:
    """The headline numbers on the page equal results.json, and are shown rounded to 2 decimals."""
    for key in ("top1", "top5", "mean_class_accuracy"):
        shown = page.values(key)
        assert shown, key
        for value, text in shown:
            assert value == results[key] and text.startswith(f"{results[key]:.2f}"), (key, value, text)
    assert page.values("num_videos")[0][0] == results["num_videos"]
    assert page.values("views")[0][0] == results["views"]


# ----------------------------------------------------------------------------- tests
def test_training_and_test_page_shows_the_numbers_of_the_files(tmp_path):
    run = make_training(tmp_path / "run")
    res = make_results(run / "test_3x2")
    path = report.write_report([run])
    assert path == run / "report.html"
    text = path.read_text()
    page = Page(text)
    check_numbers(page, res)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    best = max(rows, key=lambda r: float(r["val_top1"]))
    assert page.values("best_val_top1")[0][0] == float(best["val_top1"])
    assert f"best: epoch {best['epoch']}, {float(best['val_top1']):.2f} %" in text  # the mark on the curves
    assert page.values("epochs")[0][0] == len(rows)
    # the per-class table: one row per class of analysis.json, top-1 equal to it, the most confused class of
    # confusion.npz
    a = json.loads((run / "test_3x2" / "analysis.json").read_text())
    conf = np.load(run / "test_3x2" / "confusion.npz")["counts"]
    table = next(t for t in page.tables if t and t[0][:2] == ["#", "class"] and "most confused" in t[0][-1])
    assert len(table) - 1 == len(a["per_class"]) == 6
    for row, c in zip(table[1:], a["per_class"], strict=True):
        assert int(row[0]) == c["index"] and row[1] == c["name"] and int(row[2]) == c["support"]
        assert row[3] == f"{c['top1']:.2f}"
        off = conf[c["index"]].copy()
        off[c["index"]] = 0
        if off.max():
            assert row[-1].startswith(f"{c['name'] if False else class_names(6)[int(off.argmax())]} ({off.max()},")
        else:
            assert row[-1] == "—"
    assert "class 001 &lt;b&gt;&amp;" in text and "<b>&" not in text  # names from files are escaped
    pairs = next(t for t in page.tables if t and t[0][0] == "true class")
    assert len(pairs) - 1 == len(a["most_confused_pairs"])
    assert [pairs[1][0], pairs[1][1], int(pairs[1][2])] == [
        a["most_confused_pairs"][0]["true_name"],
        a["most_confused_pairs"][0]["predicted_name"],
        a["most_confused_pairs"][0]["count"],
    ]
    # the confusion matrix: all 6 classes, counts written in the cells
    assert text.count('class="diag"') == 6
    # the data-wait bars: the share of waiting of every epoch
    for r in rows:
        assert f">{100 * float(r['data_wait_s']) / float(r['step_s']):.0f}%<" in text
    assert page.refs == []  # nothing outside the file


def test_missing_and_damaged_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a training run folder"):
        load_run(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{ not json")
    with pytest.raises(UserError, match=r"bad/results.json: not valid JSON"):
        load_run(bad)


def test_four_hundred_classes_stay_under_two_megabytes_with_the_confused_block(tmp_path):
    res = make_results(tmp_path / "k400", classes=400, per_class=5, skill=1.5)
    path = report.write_report([tmp_path / "k400"])
    size = path.stat().st_size
    assert size < 2 * 2**20, size
    text = path.read_text()
    page = Page(text)
    check_numbers(page, res)
    conf = np.load(tmp_path / "k400" / "confusion.npz")["counts"]
    block = analysis.confused_block(conf, 30)
    assert f"the {len(block)} classes of the most confused pairs (of 400" in text
    assert text.count('class="diag"') == len(block)  # the block's diagonal only
    table = next(t for t in page.tables if t and "most confused" in t[0][-1])
    assert len(table) - 1 == 400


def test_a_hundred_classes_show_the_whole_matrix(tmp_path):
    make_results(tmp_path / "r", classes=100, per_class=3)
    text = report.write_report([tmp_path / "r"]).read_text()
    conf = np.load(tmp_path / "r" / "confusion.npz")["counts"]
    assert "all 100 classes" in text and text.count('class="diag"') == 100
    assert text.count("<rect") >= int((conf > 0).sum())  # every non-empty cell drawn


def test_zero_shot_and_timeline_sections(tmp_path):
    zs = make_zeroshot(tmp_path / "zs")
    tl_path = make_timeline(tmp_path / "pred")
    text = report.write_report([tmp_path / "zs", tl_path], out=tmp_path / "both.html").read_text()
    page = Page(text)
    assert page.values("zs_full_top1")[0][0] == zs["full_classes"]["top1"]
    half = zs["half_classes"]
    value, shown = page.values("zs_half_classes_top1_mean")[0]
    assert value == half["top1_mean"] and shown == f"{half['top1_mean']:.2f} ± {half['top1_std']:.2f}"
    assert f"{zs['splits']['top1_mean']:.2f} ± {zs['splits']['top1_std']:.2f}" in text
    seeds = next(t for t in page.tables if t and t[0][0] == "seed")
    assert [float(r[2]) for r in seeds[1:]] == [s["top1"] for s in half["splits"]]
    # the timeline: one band segment per window, a row per window with its classes, keys in order of appearance
    tl = json.loads(tl_path.read_text())
    windows = next(t for t in page.tables if t and t[0][0] == "window")
    assert len(windows) - 1 == len(tl["windows"]) == 8
    assert windows[1][3] == f"running ({100 * tl['windows'][0]['predictions'][0]['probability']:.1f})"
    assert "<b>1</b>&nbsp;running" in text and "<b>2</b>&nbsp;walking" in text and "<b>3</b>&nbsp;jumping" in text
    # a timeline file alone: its own page next to it
    assert report.default_out([tl_path]) == tmp_path / "pred" / "clip.report.html"


def test_several_runs_side_by_side(tmp_path):
    a = make_training(tmp_path / "transf", seed=0)
    b = make_training(tmp_path / "nce", seed=3, lr=1e-3)
    ra, rb = make_results(a / "test_3x2", seed=1), make_results(b / "test_3x2", seed=2, skill=1.0)
    out = tmp_path / "compare.html"
    text = report.write_report([a, b], out=out).read_text()
    page = Page(text)
    compare = next(t for t in page.tables if t and t[0][0] == "run")
    assert [r[0] for r in compare[1:]] == ["transf", "nce"]
    top1 = compare[0].index("top-1 (%)")
    assert [float(r[top1]) for r in compare[1:]] == [round(ra["top1"], 2), round(rb["top1"], 2)]
    assert [r[compare[0].index("model")] for r in compare[1:]] == ["tiny, Transf"] * 2
    assert text.count('<section class="run"') == 2
    assert "validation top-1 of every run" in text and text.count('<ul class="legend"><li><svg class="swatch"') >= 3


class _Records(logging.Handler):
    """The records of one logger, whatever handlers earlier tests left on it or on the root."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records = []


def test_after_run_records_the_invocation_and_never_raises(tmp_path, monkeypatch):
    run = make_training(tmp_path / "run")
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "c.yaml", "--opts", "solver.epochs=2"])
    logger = logging.getLogger(LOGGER_NAME)
    monkeypatch.setattr(logger, "level", logging.INFO)
    caplog = _Records()
    logger.addHandler(caplog)
    try:
        _after_run_checks(run, caplog)
    finally:
        logger.removeHandler(caplog)


def _after_run_checks(run: Path, caplog: _Records) -> None:
    assert report.after_run(run, "train.py", True) == run / "report.html"
    assert [r.getMessage() for r in caplog.records] == [
        f"report: {run / 'report.html'} (one offline page: open it in a browser)"
    ]
    info = read_run_info(run)
    assert info is not None
    inv = info["invocations"][0]
    assert inv["command"] == "python train.py --config c.yaml --opts solver.epochs=2"
    assert (
        inv["git"]["commit"]
        == subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert inv["versions"]["torch"] == torch.__version__.split("+")[0] or inv["versions"]["torch"] == torch.__version__
    assert inv["started"] <= inv["ended"]
    text = (run / "report.html").read_text()
    assert "python train.py --config c.yaml --opts solver.epochs=2" in text and inv["git"]["commit"][:12] in text
    # a second invocation (a resumed run) is appended; logging.report false records it but writes no page
    (run / "report.html").unlink()
    caplog.clear()
    assert report.after_run(run, "train.py", False) is None and caplog.records == []
    assert len(read_run_info(run)["invocations"]) == 2 and not (run / "report.html").exists()  # type: ignore[index]
    # a damaged folder: one warning line, no exception
    (run / "metrics.csv").write_bytes(b"\xff\xfe\x00bad")
    assert report.after_run(run, "train.py", True) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    line = caplog.records[0].getMessage()
    assert line.startswith("report: not written (UserError: ") and f"python -m app.report {run}" in line
    assert "\n" not in line


def test_torchrun_invocation_is_recorded_as_torchrun(monkeypatch):
    from app.report_runinfo import launcher

    assert launcher({}) == ["python"]
    assert launcher({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}) == ["torchrun", "--nproc_per_node=4"]
    assert launcher({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}) == ["torchrun", "--nnodes=2", "--nproc_per_node=4"]


def test_cli_writes_the_page_and_names_bad_input(tmp_path):
    run = make_training(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "app.report", str(run), "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"report: {tmp_path / 'r.html'} (") and (tmp_path / "r.html").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "app.report", str(tmp_path / "missing")], capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and f"not found: {tmp_path / 'missing'}" in bad.stderr


# ----------------------------------------------------------------------------- in a real browser
def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    path = chromium()
    if path is None:
        if os.environ.get("TEXT4VIS_CI") == "1":
            pytest.fail("TEXT4VIS_CI=1 but no chromium on PATH: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on PATH (scripts/setup_env.sh --with-browser installs it)")
    return path


def headless(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run with its own profile; console messages go to stderr."""
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_messages(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_the_page_in_headless_chromium(tmp_path, browser):
    """Opened from disk: no console message, the DOM holds results.json's numbers, the sort button
    sorts, a screenshot at laptop width and a PDF."""
    run = make_training(tmp_path / "run")
    res = make_results(run / "test_3x2", classes=12, per_class=4)
    path = report.write_report([run])
    url = path.resolve().as_uri()

    dom = headless(browser, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == []
    page = Page(dom.stdout)
    check_numbers(page, res)
    assert page.refs == []

    # the sorting script: a copy of the page that clicks "top-1 (%)" of the per-class table once
    sorted_page = tmp_path / "sorted.html"
    click = (
        "<script>var t=document.querySelector('table.per-class');"
        "Array.from(t.tHead.rows[0].cells).find(c=>c.textContent.startsWith('top-1')).querySelector('button').click();"
        "</script></body>"
    )
    sorted_page.write_text(path.read_text().replace("</body>", click))
    dom2 = headless(browser, tmp_path, "--dump-dom", sorted_page.as_uri())
    assert console_messages(dom2) == []
    table = next(t for t in Page(dom2.stdout).tables if t and "most confused" in t[0][-1])
    shown = [float(r[3]) for r in table[1:]]
    a = json.loads((run / "test_3x2" / "analysis.json").read_text())
    assert shown == sorted(round(c["top1"], 2) for c in a["per_class"])
    assert 'aria-sort="ascending"' in dom2.stdout

    shot = tmp_path / "report.png"
    proc = headless(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert proc.returncode == 0 and shot.stat().st_size > 20_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = tmp_path / "report.pdf"
    proc = headless(browser, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url)
    assert proc.returncode == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
    assert 2 <= pages <= 30, pages
    keep = os.environ.get("TEXT4VIS_REPORT_SHOTS")  # to look at them: a folder to copy them to
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for f in (shot, pdf, path):
            shutil.copy(f, Path(keep) / f.name)


def test_console_errors_are_caught(tmp_path, browser):
    """The console check itself: a page with a script error is seen."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    proc = headless(browser, tmp_path, "--dump-dom", bad.as_uri())
    assert any("notDefined is not defined" in m for m in console_messages(proc))


@pytest.mark.slow
def test_train_and_test_end_with_their_report(tmp_path, monkeypatch):
    """The real entry points: train.py (1 epoch of the tiny model) and test.py leave report.html and
    run_info.json; with logging.report false only run_info.json."""
    import test as test_script
    import train
    from datasets.synthetic import generate
    from tests.test_train_recipe import write_config

    data = tmp_path / "data"
    generate(data, classes=4, videos_per_class=2, val_videos_per_class=1, frames=8, size=64, fmt="frames", seed=0)
    cfg = write_config(tmp_path, data, epochs=1)
    argv = ["train.py", "--config", str(cfg), "--output", str(tmp_path / "run"), "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", argv)
    train.main(argv[1:])
    run = tmp_path / "run"
    page = Page((run / "report.html").read_text())
    best = max(csv.DictReader((run / "metrics.csv").open()), key=lambda r: float(r["val_top1"]))
    assert page.values("best_val_top1")[0][0] == float(best["val_top1"])
    assert read_run_info(run)["invocations"][0]["argv"] == argv  # type: ignore[index]

    test_argv = ["test.py", "--config", str(cfg), "--weights", str(run / "model_best.pt"), "--device", "cpu"]
    test_argv += ["--output", str(run / "test_1x1")]
    monkeypatch.setattr(sys, "argv", test_argv)
    test_script.main(test_argv[1:])
    res = json.loads((run / "test_1x1" / "results.json").read_text())
    check_numbers(Page((run / "test_1x1" / "report.html").read_text()), res)
    assert read_run_info(run / "test_1x1")["invocations"][0]["script"] == "test.py"  # type: ignore[index]

    off = test_argv[:-1] + [str(tmp_path / "quiet"), "--opts", "logging.report=false"]
    monkeypatch.setattr(sys, "argv", off)
    test_script.main(off[1:])
    assert (tmp_path / "quiet" / "results.json").is_file() and (tmp_path / "quiet" / RUN_INFO).is_file()
    assert not (tmp_path / "quiet" / "report.html").exists()


@pytest.mark.slow
def test_predict_window_ends_with_a_report_of_its_timeline(tmp_path, capsys, request):
    """predict.py --window: report.html in --out, one row per window of the timeline it wrote."""
    ckpt = request.getfixturevalue("demo")["ckpt"]
    path, _ = request.getfixturevalue("long_video")
    code, out, err = _run(["--weights", ckpt, "--window", "100f", "--out", str(tmp_path), path], capsys)
    assert code == 0, err
    assert f"report: {tmp_path / 'report.html'}" in out
    tl = json.loads((tmp_path / "long60.timeline.json").read_text())
    page = Page((tmp_path / "report.html").read_text())
    windows = next(t for t in page.tables if t and t[0][0] == "window")
    assert [r[3].split(" (")[0] for r in windows[1:]] == [w["predictions"][0]["class"] for w in tl["windows"]]
    assert read_run_info(tmp_path)["invocations"][0]["script"] == "predict.py"  # type: ignore[index]


def test_best_epoch_is_the_first_highest_finite_validation(tmp_path):
    run = make_training(tmp_path / "run", epochs=3)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for row, value in zip(rows, ("nan", "40.000", "40.000"), strict=True):
        row["val_top1"] = value
    write_csv(run / "metrics.csv", rows, list(rows[0]))
    best = load_run(run).training.best_row()  # type: ignore[union-attr]
    assert best is not None and best["epoch"] == "1"
    assert "best: epoch 1, 40.00 %" in report.build([load_run(run)])
