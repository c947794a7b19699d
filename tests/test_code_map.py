"""bench/code_map.py: docs/map.md lists every module of the project, and the generator reads the
importers and the one-line jobs from the code."""

import shutil
from pathlib import Path

from bench import code_map

ROOT = Path(__file__).resolve().parents[1]


def test_map_lists_every_module():
    assert code_map.check() == []
    listed = code_map.mapped_modules((ROOT / "docs" / "map.md").read_text(encoding="utf-8"))
    assert {"utils.training", "app.fit", "train.py", "bench.code_map"} <= listed


def _tree(tmp_path: Path) -> Path:
    """A two-package project: utils/a.py, app/b.py (imports utils.a two ways), top.py."""
    for package in ("utils", "app"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "utils" / "a.py").write_text('"""Adds numbers. More text here.\n\nDetails."""\n')
    (tmp_path / "app" / "b.py").write_text('"""Runs things: the long way."""\nfrom utils import a\n')
    (tmp_path / "top.py").write_text('"""The script."""\nimport utils.a\nfrom app.b import x\n')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "map.md").write_text(f"# map\n\n{code_map.START}\n{code_map.END}\ntail\n")
    return tmp_path


def test_generated_table_has_jobs_and_importers(tmp_path):
    root = _tree(tmp_path)
    assert code_map.callers(root) == {"utils.a": ["app.b", "top.py"], "app.b": ["top.py"], "top.py": []}
    code_map.write(root)
    text = (root / "docs" / "map.md").read_text()
    assert "| [`utils.a`](../utils/a.py) | Adds numbers. | `app.b`, `top.py` |" in text
    assert "| [`top.py`](../top.py) | The script. | (entry point or tool) |" in text
    assert text.startswith("# map\n") and text.endswith("tail\n")
    assert code_map.check(root) == []


def test_check_names_a_module_missing_from_the_map(tmp_path):
    root = _tree(tmp_path)
    code_map.write(root)
    (root / "app" / "c.py").write_text('"""New."""\n')
    shutil.move(root / "utils" / "a.py", root / "utils" / "renamed.py")
    assert code_map.check(root) == [
        "app.c: not in docs/map.md",
        "utils.renamed: not in docs/map.md",
        "utils.a: in docs/map.md but no such module",
    ]
