"""Every write failure is one line naming the path and the cause, and leaves nothing half-written
(issue 20, item 5): a full disk (a real tmpfs: ENOSPC at torch.save, at the .npz writer, at the
tar writer), a read-only folder (a tmpfs remounted read-only: root ignores chmod) and an output
path under a regular file, through the real entry points as subprocesses. The mounts need root;
without it these tests are skipped, saying so."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from utils.fileio import TEMP_SUFFIX

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NO_SPACE = "No space left on device"
READ_ONLY = "Read-only file system"


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run(
        [*prefix, sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line naming every needle."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


@contextlib.contextmanager
def tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at `folder`, unmounted afterwards (skips the test without root)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {folder} (needs root): {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Write a filler file so that about `leave` bytes stay free on `folder`'s file system."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config):
    """Frames, a config, a run stopped after epoch 0 of 2 (to resume), its checkpoint's size."""
    from datasets.synthetic import generate

    base = tmp_path_factory.mktemp("writefail")
    data = base / "syn"
    generate(data, classes=3, videos_per_class=2, val_videos_per_class=1, frames=6, size=48, fmt="frames", seed=2)
    cfg = tiny_config(data, solver={"epochs": 2, "lr": 1e-3}, logging={"print_freq": 1})
    cfg_path = base / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = base / "run"
    proc = run("train.py", "--config", str(cfg_path), "--output", str(run_dir), "--stop_after_epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (base / "afile").write_text("a regular file")
    return {
        "base": base,
        "data": data,
        "cfg": str(cfg_path),
        "run": run_dir,
        "ckpt": str(run_dir / "last_model.pt"),
        "ckpt_size": (run_dir / "last_model.pt").stat().st_size,
        "video": str(next((data / "frames").glob("*/*"))),
    }


def test_full_disk(setup, tmp_path):
    size = setup["ckpt_size"]
    # train: a 20 MB tmpfs holds the log, config and metrics, not the checkpoint (~40 MB)
    assert size > 20 * 2**20, size
    with tmpfs(tmp_path / "fs", 20 * 2**20) as fs:
        line = one_line(
            run("train.py", "--config", setup["cfg"], "--output", str(fs / "run")),
            str(fs / "run"),
            ".pt: No space",
            NO_SPACE,
        )
        assert "unexpected pos" not in line
        assert not temporaries(fs)
        assert not [p for p in (fs / "run").glob("*.pt")]  # no half-written checkpoint
    # a resumed run: the checkpoint of epoch 1 cannot be written; that of epoch 0 stays as it was
    with tmpfs(tmp_path / "fs2", 3 * size) as fs:
        shutil.copytree(setup["run"], fs / "run")
        before = (fs / "run" / "last_model.pt").read_bytes()
        fill(fs, size // 2)
        one_line(
            run("train.py", "--config", setup["cfg"], "--output", str(fs / "run"), "--opts", "resume=auto"),
            str(fs / "run" / "last_model.pt"),
            NO_SPACE,
            "the previous version is unchanged",
        )
        assert (fs / "run" / "last_model.pt").read_bytes() == before
        assert not temporaries(fs)
    # extract (.npz parts), export (torch.save), shards (tar writer) on a full disk
    with tmpfs(tmp_path / "fs3", 2**20) as fs:
        (fs / "s").mkdir()
        fill(fs, 0)
        one_line(
            run("-m", "app.extract", "--weights", setup["ckpt"], setup["video"], "--out", str(fs / "e.npz")),
            str(fs / "e.npz"),
            NO_SPACE,
        )
        one_line(run("-m", "app.export", "--weights", setup["ckpt"], "--out", str(fs / "m.pt")), "m.pt", NO_SPACE)
        shards = ["-m", "datasets.shards", str(setup["data"] / "train.txt"), "--root", str(setup["data"] / "frames")]
        one_line(run(*shards, "--out", str(fs / "s" / "train")), str(fs / "s" / "train-000000.tar"), NO_SPACE)
        assert sorted(p.name for p in fs.rglob("*") if p.is_file()) == ["filler"]  # nothing half-written


def test_read_only_folder(setup, tmp_path):
    with tmpfs(tmp_path / "fs", 2**30) as fs:
        shutil.copytree(setup["run"], fs / "run")
        read_only(fs)
        cases = {
            "train": ["train.py", "--config", setup["cfg"], "--output", str(fs / "new")],
            "resume": ["train.py", "--config", setup["cfg"], "--output", str(fs / "run"), "--opts", "resume=auto"],
            "test": ["test.py", "--config", setup["cfg"], "--weights", setup["ckpt"], "--output", str(fs / "t")],
            "extract": ["-m", "app.extract", "--weights", setup["ckpt"], setup["video"], "--out", str(fs / "e.npz")],
            "export": ["-m", "app.export", "--weights", setup["ckpt"], "--out", str(fs / "m.pt")],
            "shards": [
                "-m",
                "datasets.shards",
                str(setup["data"] / "train.txt"),
                "--root",
                str(setup["data"] / "frames"),
                "--out",
                str(fs / "s" / "train"),
            ],
            "results": ["-m", "app.results", str(setup["run"]), "--md", str(fs / "table.md")],
        }
        for name, cmd in cases.items():
            line = one_line(run(*cmd), str(fs), READ_ONLY)
            assert "Errno" not in line, (name, line)


def test_permission_denied(setup, tmp_path):
    """A folder without write permission: root ignores modes, so the entry points run as root
    without the capability that overrides them (setpriv)."""
    unprivileged = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    probe = subprocess.run([*unprivileged, "touch", str(locked / "probe")], capture_output=True, text=True)
    if probe.returncode == 0 or "Permission denied" not in probe.stderr:
        pytest.skip(f"cannot drop the capability that overrides file modes with setpriv: {probe.stderr.strip()}")
    cases = {
        "train": ["train.py", "--config", setup["cfg"], "--output", str(locked / "run")],
        "test": ["test.py", "--config", setup["cfg"], "--weights", setup["ckpt"], "--output", str(locked / "t")],
        "extract": ["-m", "app.extract", "--weights", setup["ckpt"], setup["video"], "--out", str(locked / "e.npz")],
        "export": ["-m", "app.export", "--weights", setup["ckpt"], "--out", str(locked / "m.pt")],
        "shards": [
            "-m",
            "datasets.shards",
            str(setup["data"] / "train.txt"),
            "--root",
            str(setup["data"] / "frames"),
            "--out",
            str(locked / "s" / "train"),
        ],
    }
    for name, cmd in cases.items():
        line = one_line(run(*cmd, prefix=unprivileged), str(locked), "Permission denied")
        assert "Errno" not in line, (name, line)
    assert not list(locked.iterdir())


def test_output_under_a_regular_file(setup, tmp_path):
    afile = setup["base"] / "afile"
    cause = f"{afile} is a file, not a folder"
    cases = {
        "test": ["test.py", "--config", setup["cfg"], "--weights", setup["ckpt"], "--output", str(afile / "t")],
        "extract": ["-m", "app.extract", "--weights", setup["ckpt"], setup["video"], "--out", str(afile / "e.npz")],
        "export": ["-m", "app.export", "--weights", setup["ckpt"], "--out", str(afile / "m.pt")],
        "shards": [
            "-m",
            "datasets.shards",
            str(setup["data"] / "train.txt"),
            "--root",
            str(setup["data"] / "frames"),
            "--out",
            str(afile / "train"),
        ],
        "results": ["-m", "app.results", str(setup["run"]), "--md", str(afile / "deeper" / "table.md")],
    }
    for name, cmd in cases.items():
        line = one_line(run(*cmd), cause)
        assert "File exists" not in line and "Not a directory" not in line, (name, line)
    assert afile.read_text() == "a regular file"


def test_writers_on_a_full_disk_in_process(tmp_path):
    """The atomic writer under torch.save (whose own error is 'unexpected pos'), the .npz writer and
    a text write: a WriteError naming the file and ENOSPC; the previous file stays; no temporary."""
    import torch

    from utils.checkpoint import save_checkpoint
    from utils.fileio import WriteError, atomic_write_text, write_npz

    with tmpfs(tmp_path / "fs", 2**20) as fs:
        save_checkpoint({"v": torch.ones(4)}, fs / "a.pt")
        before = (fs / "a.pt").read_bytes()
        with pytest.raises(
            WriteError, match=rf"^cannot write {fs}/a\.pt: {NO_SPACE} \(the previous version is unchanged\)$"
        ):
            save_checkpoint({"v": torch.zeros(2**19)}, fs / "a.pt")
        assert (fs / "a.pt").read_bytes() == before
        with pytest.raises(WriteError, match=rf"^cannot write {fs}/b\.npz: {NO_SPACE}$"):
            write_npz(fs / "b.npz", {"x": torch.zeros(2**19).numpy()})
        fill(fs, 0)
        with pytest.raises(WriteError, match=rf"^cannot write {fs}/c\.txt: {NO_SPACE}$"):
            atomic_write_text(fs / "c.txt", "x" * 10000)
        assert sorted(p.name for p in fs.iterdir()) == ["a.pt", "filler"]


def test_a_file_in_the_way_is_named(tmp_path):
    from utils.fileio import WriteError, atomic_write_text, make_folder

    afile = tmp_path / "afile"
    afile.write_text("x")
    cause = f"{afile} is a file, not a folder"
    with pytest.raises(WriteError, match=rf"^cannot write {afile}/deeper/m\.pt: {cause}$"):
        atomic_write_text(afile / "deeper" / "m.pt", "x")
    with pytest.raises(WriteError, match=rf"^--out {afile}: cannot create the folder: {cause}$"):
        make_folder(afile, "--out")
    assert afile.read_text() == "x"
