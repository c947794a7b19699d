"""Guards of training (issue 20): argument ranges refused before anything runs, a non-finite loss
or gradient that stops the run with one line (or is skipped within `solver.skip_nonfinite`),
resume rules, and the signals of the training loop (the ETA, the `--stop_after_epochs` line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lda_shrinkage_2_is_refused_at_argument_parsing():
    proc = subprocess.run(
        [sys.executable, "-m", "app.lda", "--features", "missing.npz", "--out", "x.pt", "--shrinkage", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --shrinkage: '2' is not a number in [0, 1], 'auto' or 'none'" in proc.stderr


@pytest.mark.parametrize("value", ["-0.1", "1.01", "nan", "inf", "abc"])
def test_lda_shrinkage_out_of_range(value, capsys):
    from app.lda import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--features", "missing.npz", "--out", "x.pt", "--shrinkage", value])
    assert exit_info.value.code == 2
    assert f"argument --shrinkage: '{value}' is not a number in [0, 1]" in capsys.readouterr().err


def test_lda_shrinkage_values():
    from app.lda import shrinkage_arg

    assert shrinkage_arg("0") == 0.0 and shrinkage_arg("1") == 1.0 and shrinkage_arg("0.25") == 0.25
    assert shrinkage_arg("auto") == "auto" and shrinkage_arg("none") is None
