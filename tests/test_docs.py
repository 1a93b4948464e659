"""Every document the code and the docs cite exists in the repository.

Cited: a ``docs/...`` path or a ``*.md`` file in a docstring or comment of gnbench/, experiments/
or benchmarks/, or anywhere in README.md and docs/*.md; in those two also every repository path
(``gnbench/...``, ``tests/...``, ``launch/...``, ...) and every Markdown link. Paths resolve from
the repository root (a link in docs/ also from its own folder) and must stay inside it. Not
citations: outputs (under git-ignored folders such as ``runs/``, or the bare name of a file
gnbench writes, :data:`OUTPUT_NAMES`) and ``<placeholder>/`` paths, which the regular
expressions never match whole.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("gnbench", "experiments", "benchmarks")
TEXT_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_START = r"(?<![\w/.<>@-])"  # Not the tail of a longer path, a placeholder or an address.
MD_PATH = re.compile(_START + r"((?:\.\./)*[\w.-]+(?:/[\w.-]+)*\.md)\b")
DOCS_PATH = re.compile(_START + r"(docs/[\w./-]*\w)")
REPO_PATH = re.compile(_START + r"((?:gnbench|tests|launch|experiments|benchmarks)/[\w./-]*\w)")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
OUTPUT_NAMES = {"report.md", "ladder_row.md"}  # What gnbench report and ladder write.


def _ignored_folders() -> set[str]:
    """Top-level folders .gitignore names (``/runs/`` -> ``runs``): outputs, not documents."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    return {line.strip("/") for line in lines if line.startswith("/") and line.endswith("/")}


IGNORED = _ignored_folders()


def docstrings_and_comments(path: Path) -> str:
    """The docstrings and comments of a Python file (string literals of code left out)."""
    source = path.read_text()
    parts = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def citations() -> list[tuple[str, str, list[Path]]]:
    """``(citing file, cited path, candidate locations)`` of every citation."""
    out = []

    def add(where: Path, cited: str, bases: list[Path]) -> None:
        if cited.split("/")[0] in IGNORED or "://" in cited or cited in OUTPUT_NAMES:
            return
        out.append((str(where.relative_to(REPO)), cited, [b / cited for b in bases]))

    for folder in CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            text = docstrings_and_comments(path)
            for cited in sorted(set(MD_PATH.findall(text)) | set(DOCS_PATH.findall(text))):
                add(path, cited, [REPO])
    for path in TEXT_FILES:
        text = path.read_text()
        bases = [REPO] if path.parent == REPO else [REPO, path.parent]
        found = set(MD_PATH.findall(text)) | set(DOCS_PATH.findall(text))
        found |= set(REPO_PATH.findall(text)) | set(MD_LINK.findall(text))
        for cited in sorted(found):  # Sorted: every pytest-xdist worker collects one order.
            add(path, cited, bases)
    return out


CITATIONS = citations()


def test_citations_are_found():
    cited = {c for _, c, _ in CITATIONS}
    # The walk sees the citations it must: docstrings (METHOD.md) and the docs' own links.
    assert "docs/METHOD.md" in cited and "docs/guarantees.md" in cited and "METHOD.md" in cited
    assert not any(c.startswith(("runs/", "reports/")) for c in cited)


@pytest.mark.parametrize(
    "where, cited, candidates", CITATIONS, ids=[f"{w}:{c}" for w, c, _ in CITATIONS]
)
def test_cited_file_exists_in_the_repository(where, cited, candidates):
    inside = [p.resolve() for p in candidates if p.resolve().is_relative_to(REPO)]
    assert any(p.exists() for p in inside), f"{where} cites {cited}, which is not in the repository"


def test_a_missing_or_outside_citation_would_fail():
    # The patterns catch the citations this test exists for (a sibling folder's FACTS.md, a
    # missing doc) and skip outputs and placeholders.
    text = "see ../shared/FACTS.md and docs/DESIGN.md; writes runs/x/report.md, <folder>/report.md"
    want = {"../shared/FACTS.md", "docs/DESIGN.md", "runs/x/report.md"}
    assert set(MD_PATH.findall(text)) == want
    assert DOCS_PATH.findall(text) == ["docs/DESIGN.md"]
    outside = (REPO / "../shared/FACTS.md").resolve()
    assert not outside.is_relative_to(REPO)  # Never accepted, even where it exists.
    assert {"runs", "reports"} <= IGNORED  # runs/x/report.md is an output: skipped.
