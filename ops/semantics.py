"""Semantics versions: the rules each op follows under each version of the integer semantics.

A model names its semantics version in its header (docs/format.md); the decoder, the validator
and every executor look its ops up in that version's op set, so models made under different
versions load and run side by side, each with its own rules, forever.

Version 1 is the op set the op modules register (ops/registry.py). A later version is declared
with :func:`declare` as its predecessor with some ops replaced: an ``OpDef`` of the same name
and opcode whose rules differ (a rounding fixed, a bound tightened). Only the changed ops are
written down; every other op is inherited. :data:`CURRENT` is the version new programs get
(compiler/builder.py, the assembly's default).

Executors that hold prepared knowledge of version 1's ops (the CPU fusion pass) ask
:func:`changed` and run a changed op through its own declared rules instead.
"""
from __future__ import annotations

import threading
from typing import Mapping

from .base import OpDef
from .registry import BY_OPCODE, REGISTRY

BASE = 1
"""The version whose op set is the registry itself."""
CURRENT = 1
"""The version new programs are built with."""
_CHANGES: dict[int, dict[str, OpDef]] = {BASE: {}}
_LOCK = threading.Lock()


def versions() -> tuple[int, ...]:
    """Every version this detvm implements, oldest first."""
    return tuple(sorted(_CHANGES))


def known(version) -> bool:
    return isinstance(version, int) and version in _CHANGES


def declare(version: int, changes: Mapping[str, OpDef]) -> None:
    """Declare ``version`` as version ``version - 1`` with the ops in ``changes`` replaced.

    Each replacement keeps the name and opcode of the op it replaces (files name ops by opcode)
    and is a complete ``OpDef`` (every rule, its own doc).
    """
    with _LOCK:
        if version in _CHANGES:
            raise ValueError(f"semantics version {version} is already declared")
        if version - 1 not in _CHANGES:
            raise ValueError(f"semantics version {version} needs version {version - 1} first")
        for name, op in changes.items():
            old = REGISTRY.get(name)
            if old is None or not isinstance(op, OpDef):
                raise ValueError(f"version {version}: {name!r} does not replace a known op")
            if (op.name, op.opcode) != (old.name, old.opcode):
                raise ValueError(f"version {version}: the op replacing {name!r} must keep its "
                                 f"name and opcode {old.opcode}")
        _CHANGES[version] = dict(changes)


def forget(version: int) -> None:
    """Remove the newest declared ``version`` (tools and tests that declare experimental ones)."""
    with _LOCK:
        if version == BASE or version != max(_CHANGES):
            raise ValueError(f"only the newest declared version above {BASE} can be forgotten")
        del _CHANGES[version]


def get(name: str, version: int | None = None) -> OpDef | None:
    """The op ``name`` under ``version`` (default :data:`CURRENT`); None if unknown."""
    if (CURRENT if version is None else version) == BASE:    # the registry itself: one lookup
        return REGISTRY.get(name)
    op = _override(version, lambda changes: changes.get(name))
    return op if op is not None else REGISTRY.get(name)


def by_opcode(opcode: int, version: int | None = None) -> OpDef | None:
    """The op with ``opcode`` under ``version`` (default :data:`CURRENT`); None if unknown."""
    base = BY_OPCODE.get(opcode)
    if base is None:
        return None
    return get(base.name, version)


def changed(version: int) -> frozenset[str]:
    """Names of the ops whose rules under ``version`` differ from version 1's."""
    return frozenset(name for v in range(BASE + 1, version + 1)
                     for name in _CHANGES.get(v, {}))


def _override(version: int | None, pick) -> OpDef | None:
    v = CURRENT if version is None else version
    if v not in _CHANGES:
        raise KeyError(f"semantics version {v} is not implemented (known: "
                       f"{', '.join(map(str, versions()))})")
    while v > BASE:
        op = pick(_CHANGES[v])
        if op is not None:
            return op
        v -= 1
    return None
