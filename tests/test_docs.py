"""The README stays short, every docs page is in the site, the configuration reference names every
key of the schema, and the site builds with `mkdocs build --strict`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from charlm.config import Config

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def load_hook():
    """docs/hooks/config_reference.py, imported by path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "hooks" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages(nav: list) -> list[str]:
    return [p for item in nav for v in item.values() for p in (nav_pages(v) if isinstance(v, list) else [v])]


def schema_keys() -> list[tuple[str, str, object]]:
    """(section, key, FieldInfo) for every key of every section of the schema."""
    return [
        (name, key, field)
        for name, section in Config.model_fields.items()
        for key, field in section.annotation.model_fields.items()
    ]


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 260, f"README.md has {lines} lines; move detail into docs/"


def test_every_page_is_in_the_nav():
    nav = nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for pattern in ("*.md", "*.ipynb") for p in DOCS.rglob(pattern))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


def test_config_reference_names_every_key():
    reference = load_hook().render_reference(Config)
    missing = [f"{name}.{key}" for name, key, _ in schema_keys() if f"| `{name}.{key}` |" not in reference]
    assert not missing, f"keys missing from the configuration reference: {missing}"
    undescribed = [f"{name}.{key}" for name, key, field in schema_keys() if not (field.description or "").strip()]
    assert not undescribed, f"schema keys without a Field(description=...): {undescribed}"


def test_config_reference_rows_show_type_default_and_range():
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in load_hook().render_reference(Config).splitlines()
        if line.startswith("| `")
    }
    assert "one of `lstm`, `gru`" in rows["model.cell"]
    assert "| number | `0.0` | `>= 0`, `< 1` |" in rows["model.dropout"]
    assert "`null`" in rows["train.time_budget"] and "string or null" in rows["train.time_budget"]
    assert '`["console", "jsonl"]`' in rows["train.loggers"]


def test_configuration_page_keeps_its_marker():
    hook = load_hook()
    assert hook.MARKER in (DOCS / hook.PAGE).read_text(encoding="utf-8")


@pytest.mark.e2e
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    reference = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert all(f"{name}.{key}" in reference for name, key, _ in schema_keys())
