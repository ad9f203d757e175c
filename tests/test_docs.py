"""The documentation site builds with --strict, and its generated references cover the code they describe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.config import RunConfig
from schemas.layout import FILE_SETS, RunLayout

REPO = Path(__file__).resolve().parents[1]


def _leaf_keys(model: type[BaseModel], path: str = "") -> list[tuple[str, str]]:
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _leaf_keys(field.annotation, f"{path}.{name}" if path else name)
        else:
            keys.append((path or "top level", name))
    return keys


def test_docs_build_strict_and_references_cover_the_code(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    config_page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    # one section per config model, one row per leaf key
    sections = re.split(r"<h2 id=", config_page)
    by_section = {}
    for s in sections[1:]:
        title = re.search(r"<code>([^<]+)</code>", s).group(1)
        by_section[title] = s
    for section, key in _leaf_keys(RunConfig):
        assert section in by_section, f"no section for {section}"
        assert f"<code>{key}</code>" in by_section[section], f"{section}.{key} missing from the reference"
    layout_page = (tmp_path / "site" / "reference" / "layout" / "index.html").read_text()
    for cls in (RunLayout, *FILE_SETS):
        assert f"<code>{cls.__name__}</code>" in layout_page, cls.__name__
        public = [n for n, m in vars(cls).items() if not n.startswith("_") and n != "marker"
                  and (isinstance(m, (property, staticmethod)) or callable(m))]
        assert public, cls.__name__
        for name in public:
            assert f"<code>{name}</code>" in layout_page, f"{cls.__name__}.{name}"


def test_readme_links_point_at_docs_pages_that_exist():
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (REPO / link).exists(), link
