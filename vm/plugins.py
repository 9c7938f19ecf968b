"""Extension points: what vm needs from the layers above it, without importing them.

vm sits below compiler/ and verify/ (DESIGN.md, layers) yet offers three things that live there:
the formal executor (``vm.formal()``), certificate checks (``vm.load(...,
require_certificate=True)``) and the text assembly (``vm.load("model.dvmt")``). A higher layer
provides each under a group and a name:

* by calling :func:`register` (at import, or from a test), or
* by declaring a Python entry point in the distribution's metadata (pyproject.toml,
  ``[project.entry-points."detvm.<group>"]``), loaded on first use.

=============  ==========  =============================================================
group          name        what is registered
=============  ==========  =============================================================
executors      formal      an Executor subclass, constructed with a ``vm.Context``
certificates   check       ``check(model, directory)``: raises InvalidError unless it holds
loaders        .dvmt       ``parse(text) -> Program`` for files with that suffix
=============  ==========  =============================================================
"""
from __future__ import annotations

import threading
from typing import Any

from .errors import EnvironmentFault

_REGISTERED: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def register(group: str, name: str, value: Any) -> None:
    """Provide ``value`` as ``name`` in ``group`` (replacing an earlier registration)."""
    with _LOCK:
        _REGISTERED[(group, name)] = value


def lookup(group: str, name: str) -> Any | None:
    """The value registered as ``name`` in ``group``, else the entry point declared for it
    (loaded once), else None."""
    with _LOCK:
        if (group, name) in _REGISTERED:
            return _REGISTERED[(group, name)]
    from importlib import metadata            # ~20 ms to import: only when a plugin is sought
    points = [e for e in metadata.entry_points(group=f"detvm.{group}") if e.name == name]
    if not points:
        return None
    try:
        value = points[0].load()
    except Exception as e:        # a broken installation, not the model's fault
        raise EnvironmentFault(f"cannot load the {group} plugin {name!r} "
                               f"({points[0].value}): {type(e).__name__}: {e}") from None
    with _LOCK:
        return _REGISTERED.setdefault((group, name), value)


def require(group: str, name: str, purpose: str) -> Any:
    """:func:`lookup`, or an EnvironmentFault saying what is missing for ``purpose``."""
    value = lookup(group, name)
    if value is None:
        raise EnvironmentFault(f"{purpose} is not available: no {group} plugin {name!r} is "
                               "installed (install detvm with pip, which declares it)")
    return value
