"""The distribution ships every package of the source tree and the shipped models."""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="pyproject.toml is read with Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
TOP = ("vm", "ops", "compiler", "verify", "detvm")


def test_every_package_is_in_the_distribution():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in TOP for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    models = ROOT / "vm" / "models"
    shipped = {p.suffix for p in models.iterdir() if p.is_file()}
    patterns = {pattern.lstrip("*") for pattern in config["package-data"]["vm.models"]}
    assert shipped <= patterns, f"model files not shipped: {sorted(shipped - patterns)}"
