"""The README stays a front page, and no link in the user documentation points nowhere.

Checked on README.md and every docs/*.md: the README is at most 250 lines; every relative link
(`[text](path)`, `![alt](path)`, `[ref]: path`) names a file inside the repository, and its
`#anchor`, if any, names a heading of that file (GitHub's heading ids); external links are
https. Links inside code (fenced blocks, `inline`) are text, not links, and are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out: list[tuple[int, str]] = []
    fence = ""
    for n, line in enumerate(text.splitlines(), start=1):
        m = _FENCE.match(line)
        if m:
            if not fence:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = ""
            continue
        if not fence:
            out.append((n, line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for n, raw in prose_lines(text):
        line = _INLINE_CODE.sub("", raw)  # `[x](y)` in code is text, not a link
        found += [(n, m.group(1)) for m in _LINK.finditer(line)]
        ref = _REF_DEF.match(line)
        if ref:
            found.append((n, ref.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's heading id: markup and punctuation dropped, lowercased, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading id of a page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for _, line in prose_lines(text):
        ids.update(_HTML_ID.findall(line))
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        ids.add(base if k == 0 else f"{base}-{k}")
    return ids


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each link of `page`, as 'page:line: target: reason'."""
    problems: list[str] = []
    text = page.read_text(encoding="utf-8")
    for n, target in links(text):
        where = f"{page.relative_to(root)}:{n}: {target}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            if not target.startswith("https://"):
                problems.append(f"{where}: external links must be https")
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page.resolve()
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            if dest.suffix != ".md" or not dest.is_file():
                problems.append(f"{where}: anchor on a file that is not markdown")
            elif unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading with id #{anchor} in {dest.name}")
    return problems


def test_readme_is_a_front_page() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail to docs/ (max 250)"


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def linked_pages(page: Path) -> set[Path]:
    """Markdown files inside the repository that `page` links to."""
    out = set()
    for _, target in links(page.read_text(encoding="utf-8")):
        path_part = target.partition("#")[0]
        if path_part and not re.match(r"^[a-z][a-z0-9+.-]*:", path_part, re.IGNORECASE):
            dest = (page.parent / unquote(path_part)).resolve()
            if dest.suffix == ".md" and dest.is_file() and dest.is_relative_to(ROOT):
                out.add(dest)
    return out


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen: set[Path] = set()
    todo = [README.resolve()]
    while todo:
        page = todo.pop()
        if page not in seen:
            seen.add(page)
            todo += linked_pages(page) - seen
    orphans = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in seen]
    assert orphans == [], f"no link path from README.md reaches these docs pages: {orphans}"


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The checks above can fail: a missing file, a bad anchor, a link out of the repo."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Readme\n", encoding="utf-8")
    page = tmp_path / "docs" / "probe.md"
    page.write_text(
        "# A title: with `code`, punctuation!\n\n## Same\n\n## Same\n\n"
        "[ok](#a-title-with-code-punctuation) [ok](#same-1) [ok](../README.md)\n"
        "[missing](nope.md) [bad anchor](#nowhere) [outside](../../x.md) [http](http://x.org)\n"
        "```\n[in code](nope.md)\n```\n`[inline](nope.md)`\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 2)[1] for p in problems] == [
        "nope.md",
        "#nowhere",
        "../../x.md",
        "http://x.org",
    ]
    assert slug("The event log (SEE)") == "the-event-log-see"
    assert slug("`mrl run`: one machine") == "mrl-run-one-machine"


def test_the_python_imports_docs_log_md_names_exist() -> None:
    """docs/log.md's "Reading and writing from Python" imports, as written there."""
    from mrl_actors.see import Consumer, EventLog, FoldApplier, LogConfig, OwnedWriter
    from mrl_actors.see.access import open_log

    assert all((Consumer, EventLog, FoldApplier, LogConfig, OwnedWriter, open_log))
