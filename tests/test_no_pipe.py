"""No process from data (issue 20, item 1): a `pipe:` URL, which webdataset runs as a shell command,
never runs when it comes from a shard index, a YAML config or a checkpoint's stored config, in any
entry point (train, test, zero-shot, predict, extract, lda, results, export); the refusal is one
line naming the source, the URL and the flag. Only a URL the command line gives, with
--allow-pipe, is opened. Every case runs the real entry point as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GOPEN_REWRITE"):
        env.pop(key, None)
    return env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line naming every needle."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config, tiny_checkpoint):
    """Frames, their shards (+ copies of the indexes with absolute shard paths, which an index read
    through a pipe: command needs), a good config and checkpoint, and an evil config and checkpoint
    whose data sources are `pipe:touch MARKER`."""

    from datasets.lists import read_label_csv
    from datasets.shards import ShardLayout, write_shards
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("nopipe")
    data = base / "syn"
    generate(data, classes=3, videos_per_class=2, val_videos_per_class=1, frames=6, size=48, fmt="frames", seed=1)
    shards = base / "shards"
    for split in ("train", "val"):
        index = write_shards(
            str(data / f"{split}.txt"),
            str(data / "frames"),
            str(shards / split),
            labels=str(data / "labels.csv"),
            layout=ShardLayout(maxcount=2),
            progress=False,
        )
        for s in index["shardlist"]:
            s["url"] = str(shards / s["url"])
        (shards / f"abs_{split}.json").write_text(json.dumps(index))
    cfg = tiny_config(
        None,
        solver={"epochs": 1, "lr": 1e-3},
        logging={"print_freq": 1},
        format="shards",
        train_shards=str(shards / "train.json"),
        val_shards=str(shards / "val.json"),
        label_list=str(data / "labels.csv"),
    )
    marker = base / "pipe_ran"
    evil = {
        **cfg,
        "data": {**cfg["data"], "train_shards": f"pipe:touch {marker}", "val_shards": f"pipe:touch {marker}"},
    }
    (base / "good.yaml").write_text(yaml.safe_dump(cfg))
    (base / "evil.yaml").write_text(yaml.safe_dump(evil))
    names = read_label_csv(data / "labels.csv")
    tiny_checkpoint(cfg, names, base / "good.pt")
    tiny_checkpoint(evil, names, base / "evil.pt")  # the same weights (same seed), pipe: URLs in its config
    video = next((data / "frames").glob("*/*"))
    yield {"base": base, "shards": shards, "marker": marker, "video": str(video)}
    assert not marker.exists()


def test_pipe_urls_in_a_shard_index_never_run(setup, tmp_path):
    marker = tmp_path / "ran"
    index = json.loads((setup["shards"] / "val.json").read_text())
    url = f"pipe:touch {marker}"
    index["shardlist"][0]["url"] = url
    piped = tmp_path / "piped.json"
    piped.write_text(json.dumps(index))
    good = str(setup["base"] / "good.yaml")
    # the flag covers the command line only, never an index
    train = ["train.py", "--config", good, "--output", str(tmp_path / "t"), "--allow-pipe"]
    one_line(run(*train, "--opts", f"data.val_shards={piped}"), str(piped), url, "--allow-pipe")
    test = ["test.py", "--config", good, "--weights", str(setup["base"] / "good.pt"), "--output", str(tmp_path / "o")]
    one_line(run(*test, "--opts", f"data.val_shards={piped}"), str(piped), url, "--allow-pipe")
    assert not marker.exists()


def test_pipe_urls_in_a_config_file_never_run(setup, tmp_path):
    evil, good_pt = str(setup["base"] / "evil.yaml"), str(setup["base"] / "good.pt")
    url = f"pipe:touch {setup['marker']}"
    cases = {
        "train": ["train.py", "--config", evil, "--output", str(tmp_path / "t")],
        "test": ["test.py", "--config", evil, "--weights", good_pt, "--output", str(tmp_path / "o")],
        "zero-shot": ["test_zeroshot.py", "--config", evil, "--weights", good_pt, "--output", str(tmp_path / "z")],
        "lda": ["-m", "app.lda", "--config", evil, "--weights", good_pt, "--out", str(tmp_path / "lda.pt")],
    }
    for name, cmd in cases.items():  # with the flag: a YAML file is not the command line
        line = one_line(run(*cmd, "--allow-pipe"), f"{evil}: data.train_shards", url, "--allow-pipe")
        assert "config file" in line, (name, line)
    assert not setup["marker"].exists()
    assert not (tmp_path / "lda.pt").exists() and not (tmp_path / "t").exists()  # refused before any output


def test_a_checkpoints_stored_config_never_names_the_data(setup, tmp_path):
    evil_pt = str(setup["base"] / "evil.pt")
    out = tmp_path / "o"
    for cmd in (
        ["test.py", "--weights", evil_pt, "--output", str(out)],
        ["test_zeroshot.py", "--weights", evil_pt, "--output", str(tmp_path / "z")],
        ["-m", "app.lda", "--weights", evil_pt, "--out", str(tmp_path / "lda.pt")],
    ):
        one_line(run(*cmd), "data.val_shards is not set", "--opts data.val_shards=", "stored config")
    one_line(
        run("-m", "app.extract", "--weights", evil_pt, "--split", "val", "--out", str(tmp_path / "e.npz")),
        "data.val_list is not set",
        "stored config",
    )
    # tools that read no data source work, and run nothing
    ok(run("predict.py", "--weights", evil_pt, setup["video"]))
    exported = tmp_path / "exported.pt"
    ok(run("-m", "app.export", "--weights", evil_pt, "--out", str(exported)))
    one_line(run("test.py", "--weights", str(exported), "--output", str(out)), "data.val_shards is not set")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"weights": evil_pt, "top1": 50.0, "top5": 100.0, "views": 1}))
    table = run("-m", "app.results", str(results))
    ok(table)
    assert "meanP" in table.stdout  # the stored config's model was read (for its cost), not its data
    assert not setup["marker"].exists()
    # the user's command line names the data: the stored config's model is evaluated on it
    ok(
        run(
            "test.py",
            "--weights",
            evil_pt,
            "--output",
            str(out),
            "--opts",
            f"data.val_shards={setup['shards']}/val.json",
        )
    )
    assert json.loads((out / "results.json").read_text())["num_videos"] == 3
    assert not setup["marker"].exists()


def test_allow_pipe_opens_a_url_of_the_command_line(setup, tmp_path):
    ran = tmp_path / "ran"
    val = f"data.val_shards=pipe:touch {ran}; cat {setup['shards'] / 'abs_val.json'}"
    good, good_pt = str(setup["base"] / "good.yaml"), str(setup["base"] / "good.pt")
    test = ["test.py", "--config", good, "--weights", good_pt, "--opts", val]
    one_line(run(*test, "--output", str(tmp_path / "no")), "data.val_shards", "--allow-pipe", "command line")
    assert not ran.exists()
    ok(run(*test, "--output", str(tmp_path / "yes"), "--allow-pipe"))
    assert ran.exists()
    assert json.loads((tmp_path / "yes" / "results.json").read_text())["num_videos"] == 3
    ran.unlink()
    train = f"data.train_shards=pipe:cat {setup['shards'] / 'abs_train.json'}"
    ok(run("train.py", "--config", good, "--output", str(tmp_path / "run"), "--allow-pipe", "--opts", train, val))
    assert ran.exists() and (tmp_path / "run" / "last_model.pt").is_file()
    ran.unlink()
    lda = tmp_path / "lda.pt"  # fitted on the training shards (6 videos of 3 classes)
    lda_train = f"data.train_shards=pipe:touch {ran}; cat {setup['shards'] / 'abs_train.json'}"
    ok(
        run(
            "-m",
            "app.lda",
            "--config",
            good,
            "--weights",
            good_pt,
            "--out",
            str(lda),
            "--allow-pipe",
            "--opts",
            lda_train,
        )
    )
    assert ran.exists() and lda.is_file()
    # a relative shard URL cannot be resolved against a command
    rel = f"data.val_shards=pipe:cat {setup['shards'] / 'val.json'}"
    one_line(
        run(
            "test.py",
            "--config",
            good,
            "--weights",
            good_pt,
            "--output",
            str(tmp_path / "r"),
            "--allow-pipe",
            "--opts",
            rel,
        ),
        "is relative",
    )


def test_stored_config_drops_the_data_sources(setup):
    """What the tools build from: the stored config without lists, roots and shard indexes, unless
    the user's --opts names them; the model and class settings stay."""
    from app.load_weights import DATA_SOURCES, open_weights
    from datasets.lists import read_label_csv

    wf = open_weights(setup["base"] / "evil.pt")
    cfg = wf.stored_config()
    assert {k: getattr(cfg.data, k) for k in DATA_SOURCES} == dict.fromkeys(DATA_SOURCES, "")
    assert cfg.data.format == "shards" and cfg.network.sim_header == "meanP" and cfg.data.label_list
    named = wf.config(None, [f"data.val_shards={setup['shards'] / 'val.json'}"])
    assert named.data.val_shards == str(setup["shards"] / "val.json") and named.data.train_shards == ""
    assert wf.class_names() == read_label_csv(setup["base"] / "syn" / "labels.csv")


def test_a_config_naming_a_pipe_is_refused_whatever_its_format():
    """An unused shard key (data.format: files) that names a command is refused too, naming the file."""
    from datasets.shard_dataset import check_sources
    from utils.config import resolve, to_config
    from utils.errors import UserError

    data = to_config(resolve({"data": {"val_shards": "pipe:touch /tmp/never"}}, "cfg.yaml")).data
    assert data.format == "files"
    with pytest.raises(UserError, match=r"^cfg\.yaml: data\.val_shards is 'pipe:touch /tmp/never'.*--allow-pipe"):
        check_sources(data, "cfg.yaml")
    check_sources(data, "cfg.yaml", allowed=["pipe:touch /tmp/never"])  # given on the command line with the flag
