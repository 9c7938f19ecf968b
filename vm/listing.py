"""The assembly spelling of names, types, attributes and one instruction.

Error messages quote instructions in the same text the assembler reads (compiler/text.py) and
the disassembler writes (compiler/disasm.py), which builds whole listings from these pieces.
"""
from __future__ import annotations

import re
from typing import Any

from ops.base import REQUIRED

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_ESCAPE = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def quote(s: str) -> str:
    """``s`` as a STRING token: escapes for \\ and ", \\n, \\t, \\u{hex} for other unprintables."""
    out = [_ESCAPE.get(c) or (c if c.isprintable() else f"\\u{{{ord(c):x}}}") for c in s]
    return '"' + "".join(out) + '"'


def ref(program, tid: int) -> str:
    """``%name`` / ``@name`` (quoted when the name is not a plain identifier)."""
    t = program.tensors[tid]
    sigil = "@" if t.kind == "const" else "%"
    return sigil + (t.name if _PLAIN.match(t.name) else quote(t.name))


def type_text(shape, precision: int) -> str:
    return f"[{', '.join(map(str, shape))}] p{precision}"


def attr_text(v: Any, items: int | None = None) -> str:
    """An attribute value as the parser reads it; a list cut after ``items`` entries (for
    error messages: ``[1, 2, ...]`` does not parse)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (tuple, list)):
        more = ", ..." if items is not None and len(v) > items else ""
        v = v[:items] if more else v
        return "[" + ", ".join(x if isinstance(x, str) else str(int(x)) for x in v) + more + "]"
    return str(int(v))


def instruction_text(program, ins, items: int | None = None) -> str:
    """One instruction as the parser reads it (also quoted by error messages: with ``items``,
    lists are cut after that many entries)."""
    results = ", ".join(f"{ref(program, i)} : "
                        + type_text(program.tensors[i].shape, program.tensors[i].precision)
                        for i in ins.outputs)
    text = f"{results} = {ins.op}"
    if ins.inputs:
        text += " " + ", ".join(ref(program, i) for i in ins.inputs)
    attrs = _non_default(program.op(ins), ins.attrs)
    if attrs:
        text += " {" + ", ".join(f"{k}={attr_text(v, items)}"
                                 for k, v in sorted(attrs.items())) + "}"
    return text


def _non_default(op, attrs) -> dict:
    if op is None:
        return dict(attrs)
    defaults = {a.name: a.default for a in op.attrs}
    return {k: v for k, v in attrs.items()
            if defaults.get(k, REQUIRED) is REQUIRED or defaults[k] != v}
