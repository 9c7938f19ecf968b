"""The op registry: name -> OpDef and opcode -> OpDef, filled at import by the op modules."""
from __future__ import annotations

from .base import OpDef

REGISTRY: dict[str, OpDef] = {}
BY_OPCODE: dict[int, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add ``op``; names and opcodes are unique and stable forever (they are in .dvm files)."""
    if op.name in REGISTRY:
        raise TypeError(f"op {op.name!r} registered twice")
    if op.opcode in BY_OPCODE:
        raise TypeError(f"op {op.name!r}: opcode {op.opcode} already used by "
                        f"{BY_OPCODE[op.opcode].name!r}")
    REGISTRY[op.name] = op
    BY_OPCODE[op.opcode] = op
    return op


def get(name: str) -> OpDef | None:
    return REGISTRY.get(name)


def by_opcode(opcode: int) -> OpDef | None:
    return BY_OPCODE.get(opcode)


def all_ops() -> list[OpDef]:
    """Every registered op, by opcode."""
    return [BY_OPCODE[k] for k in sorted(BY_OPCODE)]
