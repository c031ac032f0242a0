"""The documentation site (mkdocs.yml, docs/) builds with `mkdocs build --strict`, and the strict
build fails on what a reader would trip over: a link to a missing page or heading, an API
reference to an object that was renamed. Every public dataset class is in the API reference, and
the README's links (outside the site) reach files and headings that exist."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    # never with --quiet: it hides the warnings that --strict counts, and the build then passes
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=project,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly(tmp_path):
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "api" / "pmg.html").exists()


@pytest.mark.parametrize(
    ("page", "text", "named"),
    [
        ("getting-started.md", "[a page](no-such-page.md)", "no-such-page.md"),
        ("getting-started.md", "[a heading](protocol.md#no-such-heading)", "no-such-heading"),
        ("api/pmg.md", "::: pmg_kedro.components.method.pmg.RenamedPMG", "RenamedPMG"),
    ],
    ids=["missing-page", "missing-anchor", "renamed-api-object"],
)
def test_a_broken_reference_fails_the_strict_build(tmp_path, page, text, named):
    """A copy of the site with one broken reference added: the strict build exits non-zero and
    names it."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    for name in ("mkdocs.yml", "BENCHMARKS.md"):
        shutil.copy(ROOT / name, project / name)
    (project / "src").symlink_to(ROOT / "src")
    broken = project / "docs" / page
    broken.write_text(broken.read_text() + f"\n\n{text}\n")

    done = _build(project, tmp_path / "site")
    assert done.returncode != 0, f"the strict build passed with {text!r} in {page}"
    assert named in done.stdout + done.stderr


def _public_classes(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")}


def test_every_public_dataset_class_is_in_the_api_reference():
    reference = (ROOT / "docs" / "api" / "datasets.md").read_text()
    package = ROOT / "src" / "pmg_kedro" / "datasets"
    missing = sorted(
        f"pmg_kedro.datasets.{module.stem}.{name}"
        for module in package.glob("*.py")
        for name in _public_classes(module)
        if f"::: pmg_kedro.datasets.{module.stem}.{name}" not in reference
    )
    assert not missing, f"add to docs/api/datasets.md: {missing}"


def _headings(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slugify(h, "-") for h in re.findall(r"^#+\s+(.+?)\s*$", text, re.M)}


def _reaches(target: str) -> bool:
    path, _, anchor = target.partition("#")
    page = ROOT / path
    return page.is_file() and (not anchor or anchor in _headings(page))


def test_the_readme_links_reach_files_and_headings_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r'src="([^"]+)"', readme)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to no page of the documentation"
    broken = [target for target in local if not _reaches(target)]
    assert not broken, f"README.md links to what does not exist: {broken}"
