"""The README and the pages under docs/: every relative link reaches a file, and its #anchor a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target), with an optional "title" after the target.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def _prose(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their line numbers."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, spaces to '-', punctuation but '-' and '_' dropped."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading counts by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(path.read_text()):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of a page whose file, or whose anchor in that file, does not exist."""
    broken = []
    for number, line in _prose(path.read_text()):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if _EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where}: no heading with that anchor in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, "\n".join(broken)


def test_the_pages_are_there_and_the_readme_links_to_each() -> None:
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {"README.md", "configuration.md", "operations.md", "performance.md", "contract.md", "plugins.md"} <= names
    readme = (ROOT / "README.md").read_text()
    for name in sorted(names - {"README.md"}):
        assert f"(docs/{name}" in readme, f"README.md does not link to docs/{name}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Errors, failures and shutdown", "errors-failures-and-shutdown"),
        ("Heads: masks, rerank, entities", "heads-masks-rerank-entities"),
        ("The access log's cost", "the-access-logs-cost"),
        ("`torch.compile` and `trace_id`", "torchcompile-and-trace_id"),
        ("Run a fleet", "run-a-fleet"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## Two words\n\n```sh\n# not a heading\n[x](nowhere.md)\n```\n")
    page = tmp_path / "b.md"
    page.write_text(
        "See [ok](a.md#two-words), [self](#b), [web](https://example.com/x#y) and `[code](nowhere.md)`.\n\n"
        "# B\n\n[gone](missing.md) [bad anchor](a.md#not-a-heading) [code heading](a.md#not-a-heading-1)\n"
    )
    assert broken_links(page, tmp_path) == [
        "b.md:5: missing.md: no such file",
        "b.md:5: a.md#not-a-heading: no heading with that anchor in a.md",
        "b.md:5: a.md#not-a-heading-1: no heading with that anchor in a.md",
    ]
