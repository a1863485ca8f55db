"""The documentation site builds with `mkdocs build --strict` (a broken link, anchor or API
reference fails), and every registered method has an API entry generated from its docstring."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

from fattr.registry import METHODS
from tests.run.conftest import ROOT

DOCS = ROOT / "docs"


def entries() -> dict[str, object]:
    """Every `::: dotted.path` of the pages, resolved to the object it documents."""
    found = {}
    for page in DOCS.rglob("*.md"):
        for dotted in re.findall(r"^::: (\S+)$", page.read_text(), flags=re.M):
            module, _, name = dotted.rpartition(".")
            found[dotted] = getattr(importlib.import_module(module), name)
    return found


def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "methods" / "gradient" / "index.html").read_text()
    assert 'id="fattr.gradient.integrated_gradients.integrated_gradients"' in page
    assert "gausslegendre" in page  # the docstring's text, not only a heading
    for image in ("digits_attributions", "quickstart", "resnet18", "vit"):
        assert (tmp_path / "gallery" / f"{image}.png").stat().st_size > 1000


def test_every_method_has_an_api_entry():
    documented = entries().values()
    missing = [n for n, info in METHODS.items() if not any(o is info.build for o in documented)]
    assert not missing, f"no ::: entry in docs/ for {missing}"


def test_readme_is_one_screen_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 60
    links = re.findall(r"\]\((?!https?:)([^)#]+)", readme)
    assert links and all((ROOT / link).exists() for link in links), links
