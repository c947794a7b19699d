"""bench/identity.py: the behaviour fingerprint is deterministic and its comparison names what differs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.identity import diff, sampling_table

ROOT = Path(__file__).resolve().parents[1]


def test_sampling_table_is_deterministic_and_holds_known_indices():
    a, b = sampling_table(), sampling_table()
    assert a == b
    assert a["val_n300_T8_seg"] == [0, 37, 75, 112, 150, 187, 225, 262]
    assert a["plan_256x340_c3"][1] == [
        [[8, 0, 112, 112], False],
        [[8, 56, 112, 112], False],
        [[8, 28, 112, 112], False],
    ]


def test_diff_names_each_difference_by_its_path():
    a = {"metrics": [{"epoch": "0", "loss": "1.0"}], "onnx": {"logits": [0.1, 0.2]}}
    b = {"metrics": [{"epoch": "0", "loss": "1.5"}], "onnx": {"logits": [0.1, 0.2]}, "extra": 1}
    assert diff(a, a) == []
    assert diff(a, b) == ["/extra: only in second", "/metrics[0]/loss: 1.0 != 1.5"]


def test_compare_exit_status(tmp_path):
    base = {"sampling": {"x": [1, 2]}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({"sampling": {"x": [1, 3]}}))
    cmd = [sys.executable, str(ROOT / "bench" / "identity.py"), "compare", str(tmp_path / "a.json")]
    assert subprocess.run([*cmd, str(tmp_path / "a.json")], capture_output=True).returncode == 0
    proc = subprocess.run([*cmd, str(tmp_path / "b.json")], capture_output=True, text=True)
    assert proc.returncode == 1 and "/sampling/x[1]: 2 != 3" in proc.stdout
