"""The README and docs/ stay a guide: short README, every relative link and anchor resolves, every
`make` target they name exists, and `make help` lists every target the Makefile has."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").rglob("*.md"))
README_MAX_LINES = 400
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
MAKE_TARGET = re.compile(r"(?:^|[\s(])make ([a-z][a-z0-9-]*)")


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z]+:", target)]


def code_text(page: Path) -> str:
    text = page.read_text()
    return "\n".join(FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text)))


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.name}: links that do not resolve: {broken}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_named_make_targets_exist(page):
    named = set(MAKE_TARGET.findall(code_text(page)))
    assert page != README or named, "the README names no make target"
    assert not named - makefile_targets(), f"{page.name} names targets the Makefile lacks"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_page_is_reachable_and_links_back(page):
    if page.parent.name == "upstream":
        return  # reports to upstream projects: self-contained on purpose
    assert any(Path(t.partition("#")[0]).name == "README.md" for t in relative_links(page)), "no link back"
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert page.resolve() in linked, f"README does not link {page.name}"


def test_make_help_lists_every_target():
    out = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == makefile_targets()
    assert all(len(line.split(None, 1)) == 2 for line in out.splitlines() if line.strip()), "a target without a line"
