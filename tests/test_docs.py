"""README.md and docs/: every link resolves inside the repository (a user's clone has nothing
beside it), every docs page is reachable from the README, and the README stays the short page."""

from __future__ import annotations

import re

from conftest import DOCS, ROOT

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")


def links(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    return LINK.findall(text)


def test_every_link_resolves_in_the_repository():
    seen = 0
    for page in DOCS:
        for target in links(page):
            seen += 1
            assert "://" not in target and not target.startswith(("/", "mailto:")), (page.name, target)
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            assert resolved.is_relative_to(ROOT) and resolved.is_file(), (page.name, target)
            if anchor:
                headings = re.findall(r"(?m)^#+ (.+)$", resolved.read_text(encoding="utf-8"))
                slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
                assert anchor in slugs, (page.name, target)
    assert seen >= 15


def test_every_docs_page_is_linked_from_the_readme_and_nothing_points_outside():
    readme = ROOT / "README.md"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(readme)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert len(pages) >= 10
    assert set(pages) <= linked, sorted(p.name for p in set(pages) - linked)
    for page in DOCS:
        assert "../shared" not in page.read_text(encoding="utf-8"), page.name
    assert len(readme.read_text(encoding="utf-8").splitlines()) < 200


def test_no_page_names_a_file_a_users_clone_does_not_have():
    """The README and docs/ stand on their own: none names the team's specification files, which
    live outside the repository (a user's clone has only what is here)."""
    outside = re.compile(r"\b(?:INPUTS|OUTPUTS|TAXONOMY|STYLE|DEVELOPERS)\.md\b|shared/(?:docs|realdata)")
    for page in DOCS:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            assert not outside.search(line), f"{page.name}:{number}: {line.strip()}"
