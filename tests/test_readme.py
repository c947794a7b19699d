"""Every command shown in the README refers to files that exist and uses only options the tool
accepts (a dry run through each tool's --help)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _shell_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split(" # ", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _commands() -> list[list[str]]:
    """(tool, args...) for each python/bash invocation, with environment assignments dropped."""
    cmds = []
    for line in _shell_lines():
        for part in re.split(r";|&&|\bdo\b|\bdone\b", line):
            words = [w for w in shlex.split(part) if not re.match(r"^[A-Z_]+=", w)]
            for i, w in enumerate(words):
                if w in ("python", "bash") and i + 1 < len(words):
                    cmds.append(words[i:])
                    break
    return cmds


COMMANDS = _commands()


@cache
def _help(target: tuple[str, ...]) -> str:
    res = subprocess.run(
        [sys.executable, *target, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert res.returncode == 0, f"{' '.join(target)} --help failed:\n{res.stderr[-2000:]}"
    return res.stdout


def test_readme_shows_commands() -> None:
    tools = {c[1] for c in COMMANDS}
    for expected in ("scripts/run_demo.sh", "scripts/run_tests.sh", "train.py", "test.py", "predict.py"):
        assert expected in tools


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[:3]))
def test_readme_command_is_real(cmd: list[str]) -> None:
    runner, args = cmd[0], cmd[1:]
    if runner == "bash":
        assert (ROOT / args[0]).is_file(), f"README runs a missing script: {args[0]}"
        return
    target = tuple(args[:2]) if args[0] == "-m" else (args[0],)
    rest = args[len(target) :]
    if target[0] != "-m":
        assert (ROOT / target[0]).is_file(), f"README runs a missing file: {target[0]}"
    helptext = _help(target)
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            assert re.search(re.escape(flag) + r"(?![\w-])", helptext), (
                f"`{' '.join(cmd)}`: {flag} is not an option of {' '.join(target)}"
            )
        if word.startswith("configs/") and word.endswith(".yaml"):
            assert (ROOT / word).is_file(), f"README names a missing config: {word}"
