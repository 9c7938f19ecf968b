"""Extension points (vm/plugins.py): vm reaches the formal executor, certificate checks and the
text assembly without importing the layers above it."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import vm
from vm import plugins
from vm.errors import EnvironmentFault

ROOT = Path(__file__).resolve().parents[1]


def fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing of ours imported yet); its stdout."""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_formal_and_text_reached_through_the_distribution_metadata():
    out = fresh("import sys, vm\n"
                "assert 'verify' not in sys.modules and 'compiler' not in sys.modules\n"
                "assert 'importlib.metadata' not in sys.modules\n"  # until a plugin is sought
                "m = vm.load('examples/lines.dvmt', vm.formal())\n"
                "print(sorted(k for k in ('verify', 'compiler') if k in sys.modules))")
    assert out == "['compiler', 'verify']"


def test_registration_wins_and_missing_plugins_are_environment_faults(monkeypatch):
    monkeypatch.setattr(plugins, "_REGISTERED", {})
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    assert plugins.lookup("executors", "formal") is None
    with pytest.raises(EnvironmentFault, match="formal executor is not available"):
        vm.load(ROOT / "vm/models/demo.dvm", vm.formal())
    with pytest.raises(EnvironmentFault, match="reading assembly text"):
        vm.load(ROOT / "examples/lines.dvmt")
    plugins.register("loaders", "dvmt", lambda text: vm.decode((ROOT / "vm/models/demo.dvm")
                                                                .read_bytes()))
    assert vm.load(ROOT / "examples/lines.dvmt").name == vm.load(ROOT / "vm/models/demo.dvm").name
