"""The package layering, checked on the source: no import goes upward, no import cycles.

Layers (DESIGN.md): ``ops`` imports nothing of ours; ``vm`` only ``ops``; ``compiler`` and
``verify`` only ``vm`` and ``ops`` (not each other); the command line (``detvm``) and the
seed-style APIs (``vm.runtime``, ``vm.ndarray``, ``vm.lite``, ...) sit on top. Every import
statement counts, at module level or inside a function. Where a lower layer needs a higher one
it offers an extension point (vm/plugins.py) and the higher one registers itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ops", "vm", "compiler", "verify", "detvm")
TOP = ("detvm", "vm.runtime", "vm.ndarray", "vm.lite", "vm.accl", "vm.acl", "vm.neuropod")
"""The top layer: the CLI and the seed-style APIs (thin layers over vm.Model)."""
LAYER = {"ops": 0, "vm": 1, "compiler": 2, "verify": 2}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def layer(module: str) -> int:
    if any(module == t or module.startswith(t + ".") for t in TOP):
        return 3
    return LAYER[module.split(".")[0]]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:      # `import a.b.c` of a package a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_every_package_is_seen():
    assert {m.split(".")[0] for m in GRAPH} == set(PACKAGES)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    mine = layer(module)
    for target in sorted(GRAPH[module]):
        theirs = layer(target)
        assert theirs < mine or (theirs == mine and (
            mine == 3 or target.split(".")[0] == module.split(".")[0])), \
            f"{module} (layer {mine}) imports {target} (layer {theirs})"


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: none larger than one."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
