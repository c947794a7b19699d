"""Every `docs/<page>.md#<anchor>` cited in code, configs and docs names a heading that exists,
with GitHub's anchor rule (lower case, punctuation dropped, spaces to hyphens)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_LINK = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
MD_LINK = re.compile(r"\]\(([\w-]+\.md)?#([\w-]+)\)")


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def cited_links() -> list[tuple[str, str, str]]:
    """(citing file, page, anchor) for every link to a docs anchor."""
    links = []
    sources = [
        p
        for d in ("app", "bench", "clip", "datasets", "modules", "utils", "tests", "configs", "scripts")
        for p in (ROOT / d).rglob("*")
        if p.suffix in {".py", ".yaml", ".sh"}
    ]
    sources += list(ROOT.glob("*.py")) + [ROOT / "README.md"]
    for path in sources:
        for page, anchor in CODE_LINK.findall(path.read_text(encoding="utf-8")):
            links.append((str(path.relative_to(ROOT)), page, anchor))
    for path in (ROOT / "docs").glob("*.md"):
        for page, anchor in MD_LINK.findall(path.read_text(encoding="utf-8")):
            links.append((str(path.relative_to(ROOT)), page or path.name, anchor))
    return links


def test_slug_follows_github_rule():
    assert slug("Zero-shot: `test_zeroshot.py`, every protocol in one command") == (
        "zero-shot-test_zeroshotpy-every-protocol-in-one-command"
    )
    assert slug("Few-shot (`data.shot: K`)") == "few-shot-datashot-k"


def test_every_cited_docs_anchor_exists():
    links = cited_links()
    assert len(links) >= 25  # the docstrings' citations are found at all
    pages: dict[str, set[str]] = {}
    missing = []
    for source, page, anchor in links:
        path = ROOT / "docs" / page
        if page not in pages:
            pages[page] = anchors(path) if path.exists() else set()
        if anchor not in pages[page]:
            missing.append(f"{source}: docs/{page}#{anchor}")
    assert not missing, "\n".join(missing)
