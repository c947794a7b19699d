"""Generate the table of docs/map.md: every module of the project, its one job (the first sentence
of its docstring) and who imports it, read from the code itself so the map cannot drift silently.

    .venv/bin/python bench/code_map.py            # rewrite the table in docs/map.md
    .venv/bin/python bench/code_map.py --check    # exit 1 when a module is missing from the map

`--check` (run by tests/test_code_map.py) only compares the set of modules, so editing a docstring
does not fail the suite; adding, renaming or removing a module without regenerating the map does.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "clip", "datasets", "modules", "app", "bench")
START, END = "<!-- code-map:start -->", "<!-- code-map:end -->"
MAX_CALLERS = 6


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, packages bottom layer first, then the scripts at the top."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            if path.name != "__init__.py":
                found[f"{package}.{path.stem}"] = path
    for path in sorted(root.glob("*.py")):
        found[path.name] = path
    return found


def one_job(path: Path) -> str:
    """First sentence of the module docstring, on one line, cut at its first top-level colon when
    long ('(no docstring)' when there is none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        return "(no docstring)"
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.match(r"(.+?(?<!e\.g)(?<!i\.e)(?<!vs)\.)(\s|$)", paragraph)
    sentence = match.group(1) if match else paragraph
    if len(sentence) > 100:
        depth, ticks = 0, False
        for i, char in enumerate(sentence):
            ticks ^= char == "`"
            depth += (char in "([") - (char in ")]")
            if char == ":" and depth == 0 and not ticks and sentence[i + 1 : i + 2] == " ":
                sentence = sentence[:i]
                break
    sentence = re.sub(r"\s*\(docs/[^)]*\)", "", sentence).rstrip(":")  # the link is one click away
    return sentence.replace("|", "\\|")


def reexports(root: Path = ROOT) -> dict[str, str]:
    """`package.name` -> the submodule that defines it, for names a package's __init__.py re-exports
    (`from .x import name`, or a lazy table of "package.module" strings)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        init = root / package / "__init__.py"
        if not init.exists():
            continue
        for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for alias in node.names:
                    found[f"{package}.{alias.asname or alias.name}"] = f"{package}.{node.module}"
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    target = value.value if isinstance(value, ast.Constant) else None
                    if isinstance(key, ast.Constant) and isinstance(target, str) and target.startswith(f"{package}."):
                        found[f"{package}.{key.value}"] = target
    return found


def imported_modules(path: Path, names: set[str], aliases: dict[str, str]) -> set[str]:
    """The project modules (among `names`) that the file imports: submodules of `from pkg import x`,
    relative imports and names re-exported by a package (`aliases`) included."""
    found: set[str] = set()
    package = path.parent.name
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in PACKAGES:
            full = f"{node.value.id}.{node.attr}"  # `import clip` ... `clip.create_clip(...)`
            found.add(aliases.get(full, full))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"{package}.{base}" if base else package
            found.add(base)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(aliases.get(full, full))
    return {name for name in found if name in names}


def callers(root: Path = ROOT) -> dict[str, list[str]]:
    """Module -> the modules and scripts that import it (tests not counted)."""
    files = module_files(root)
    names = {n for n in files if not n.endswith(".py")}
    aliases = reexports(root)
    by_module: dict[str, list[str]] = {n: [] for n in files}
    for importer, path in files.items():
        for name in sorted(imported_modules(path, names, aliases)):
            if name != importer:
                by_module[name].append(importer)
    return by_module


def render(root: Path = ROOT) -> str:
    """The markdown table, between its markers."""
    rows = [START, "", "| module | its one job | imported by |", "|---|---|---|"]
    files = module_files(root)
    used_by = callers(root)
    for name, path in files.items():
        users = used_by[name]
        shown = ", ".join(f"`{u}`" for u in users[:MAX_CALLERS])
        if len(users) > MAX_CALLERS:
            shown += f" and {len(users) - MAX_CALLERS} more"
        rel = path.relative_to(root).as_posix()
        rows.append(f"| [`{name}`](../{rel}) | {one_job(path)} | {shown or '(entry point or tool)'} |")
    rows += ["", END]
    return "\n".join(rows)


def mapped_modules(text: str) -> set[str]:
    """The module names listed in the table of a docs/map.md text."""
    table = text.split(START, 1)[-1].split(END, 1)[0]
    return set(re.findall(r"^\| \[`([\w.]+)`\]", table, flags=re.MULTILINE))


def check(root: Path = ROOT) -> list[str]:
    """One line per module missing from the map, or listed but gone."""
    text = (root / "docs" / "map.md").read_text(encoding="utf-8")
    listed, present = mapped_modules(text), set(module_files(root))
    problems = [f"{name}: not in docs/map.md" for name in sorted(present - listed)]
    problems += [f"{name}: in docs/map.md but no such module" for name in sorted(listed - present)]
    return problems


def write(root: Path = ROOT) -> None:
    path = root / "docs" / "map.md"
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + render(root) + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a module is missing from docs/map.md")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("regenerate with: .venv/bin/python bench/code_map.py", file=sys.stderr)
        return 1 if problems else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
