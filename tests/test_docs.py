"""The README and the documentation site: the site builds strictly (a broken page link or
anchor fails), and neither points outside the repository."""

import re
import subprocess
import sys
from pathlib import Path

from tests.support.project import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_site_builds_strictly(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site/architecture/index.html").is_file()


def test_links_stay_inside_the_repository():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: {target}"
        assert "../shared" not in page.read_text(), page.name


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, page.name


def test_the_readme_names_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_screen = "\n".join(text.splitlines()[:25])
    assert "make demo" in first_screen and "make test" in first_screen
    assert Path(ROOT / "docs/architecture.md").is_file()
