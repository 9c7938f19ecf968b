"""The CVM facts a program keeps in its metadata, so a .dvm imported from CVM keeps them.

Keys (all values are strings): ``cvm.compat`` ("none" or "cvm"), ``cvm.version``,
``cvm.postprocess``, ``cvm.storage_id`` (comma-separated, one per CVM entry),
``cvm.storage_size``, ``cvm.gas``, ``cvm.output_precision`` (CVM's inferred precision of each
output: its output byte width) and, for the compat-mode input quirk, ``cvm.bad_input_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

from vm.errors import InvalidError

COMPAT_MODES = ("none", "cvm")
PREFIX = "cvm."


@dataclass(frozen=True)
class Facts:
    """What CVM's API reports about a model, besides what the program itself says."""

    compat: str
    version: str
    postprocess: str
    storage_ids: tuple[int, ...]
    storage_size: int
    gas: int
    output_precisions: tuple[int, ...]
    bad_input_size: int | None = None

    def to_metadata(self) -> dict[str, str]:
        meta = {"cvm.compat": self.compat, "cvm.version": self.version,
                "cvm.postprocess": self.postprocess,
                "cvm.storage_id": _join(self.storage_ids),
                "cvm.storage_size": str(self.storage_size), "cvm.gas": str(self.gas),
                "cvm.output_precision": _join(self.output_precisions)}
        if self.bad_input_size is not None:
            meta["cvm.bad_input_size"] = str(self.bad_input_size)
        return meta


def check_compat(compat: str | None) -> str:
    """``None`` -> "none"; "cvm" stays; anything else is an error."""
    mode = "none" if compat is None else compat
    if mode not in COMPAT_MODES:
        raise InvalidError(f"unknown compat mode {compat!r} (None or 'cvm')")
    return mode


def _join(values) -> str:
    return ",".join(map(str, values))


def split_ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")) if text else ()
