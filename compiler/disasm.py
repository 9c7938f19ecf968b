"""Disassembler: :class:`vm.program.Program` -> detvm assembly, in canonical form.

The output is exactly what :func:`compiler.text.parse` reads, and
``disassemble(parse(disassemble(p))) == disassemble(p)``. Canonical form:

* header: ``model``, ``semantics``, then ``meta`` pairs sorted by key;
* body in tensor-id order: an input/const is printed at its id, an instruction (in program
  order) at the id of its first output; a declaration an instruction needs earlier is pulled
  forward. For programs built by Builder or parse the ids therefore round-trip exactly;
* every instruction carries its result types (``%y : [1, 4] p8 = ...``), attributes sorted,
  only those that differ from the op's default;
* constants as flat C-order values, 16 per line when they do not fit on one;
* ``output`` last.
"""
from __future__ import annotations

import re
from typing import Any

import ops
from ops.base import REQUIRED
from vm.program import Program

PER_LINE = 16
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_ESCAPE = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def quote(s: str) -> str:
    """``s`` as a STRING token: escapes for \\ and ", \\n, \\t, \\u{hex} for other unprintables."""
    out = [_ESCAPE.get(c) or (c if c.isprintable() else f"\\u{{{ord(c):x}}}") for c in s]
    return '"' + "".join(out) + '"'


def ref(program: Program, tid: int) -> str:
    """``%name`` / ``@name`` (quoted when the name is not a plain identifier)."""
    t = program.tensors[tid]
    sigil = "@" if t.kind == "const" else "%"
    return sigil + (t.name if _PLAIN.match(t.name) else quote(t.name))


def type_text(shape, precision: int) -> str:
    return f"[{', '.join(map(str, shape))}] p{precision}"


def attr_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(str(int(x)) for x in v) + "]"
    return str(int(v))


def disassemble(program: Program) -> str:
    """The canonical assembly text of ``program`` (ends with a newline)."""
    lines = [f"model {quote(program.name)}", f"semantics {program.semantics}"]
    lines += [f"meta {quote(k)} = {quote(program.metadata[k])}" for k in sorted(program.metadata)]
    lines.append("")
    lines += _body(program)
    lines.append("")
    lines.append("output " + ", ".join(ref(program, i) for i in program.outputs))
    return "\n".join(lines) + "\n"


def _body(program: Program) -> list[str]:
    decls = [i for i, t in enumerate(program.tensors) if t.kind in ("input", "const")]
    done: set[int] = set()
    lines: list[str] = []

    def declare(i: int) -> None:
        if i not in done:
            done.add(i)
            lines.append(_declaration(program, i))

    for ins in program.code:
        first = min(ins.outputs, default=len(program.tensors))
        for i in decls:
            if i < first:
                declare(i)
        for i in ins.inputs:
            if i in decls and i not in done:
                declare(i)
        lines.append(instruction_text(program, ins))
    for i in decls:
        declare(i)
    return lines


def _declaration(program: Program, tid: int) -> str:
    t = program.tensors[tid]
    head = f"{t.kind} {ref(program, tid)} : {type_text(t.shape, t.precision)}"
    if t.kind == "input":
        return head
    values = [str(v) for v in program.consts[tid].reshape(-1).tolist()]
    if len(values) <= PER_LINE:
        return f"{head} = [{', '.join(values)}]"
    rows = [", ".join(values[k:k + PER_LINE]) for k in range(0, len(values), PER_LINE)]
    return f"{head} = [\n    " + ",\n    ".join(rows) + "\n]"


def instruction_text(program: Program, ins) -> str:
    """One instruction as the parser reads it (also quoted by error messages)."""
    results = ", ".join(f"{ref(program, i)} : "
                        + type_text(program.tensors[i].shape, program.tensors[i].precision)
                        for i in ins.outputs)
    text = f"{results} = {ins.op}"
    if ins.inputs:
        text += " " + ", ".join(ref(program, i) for i in ins.inputs)
    attrs = _non_default(ins.op, ins.attrs)
    if attrs:
        text += " {" + ", ".join(f"{k}={attr_text(v)}" for k, v in sorted(attrs.items())) + "}"
    return text


def _non_default(op_name: str, attrs) -> dict:
    op = ops.get(op_name)
    if op is None:
        return dict(attrs)
    defaults = {a.name: a.default for a in op.attrs}
    return {k: v for k, v in attrs.items()
            if defaults.get(k, REQUIRED) is REQUIRED or defaults[k] != v}
