"""Disassembler: :class:`vm.program.Program` -> detvm assembly, in canonical form.

The output is exactly what :func:`compiler.text.parse` reads, and
``disassemble(parse(disassemble(p))) == disassemble(p)``. Canonical form:

* header: ``model``, ``semantics``, ``meta`` pairs sorted by key, then ``symbol`` declarations
  sorted by name;
* body in tensor-id order: an input/const is printed at its id, an instruction (in program
  order) at the id of its first output; a declaration an instruction needs earlier is pulled
  forward. For programs built by Builder or parse the ids therefore round-trip exactly;
* every instruction carries its result types (``%y : [1, 4] p8 = ...``), attributes sorted,
  only those that differ from the op's default;
* constants as flat C-order values, 16 per line when they do not fit on one;
* ``output`` last.
"""
from __future__ import annotations

from vm.listing import instruction_text, quote, ref, type_text
from vm.program import Program

PER_LINE = 16
def disassemble(program: Program) -> str:
    """The canonical assembly text of ``program`` (ends with a newline)."""
    lines = [f"model {quote(program.name)}", f"semantics {program.semantics}"]
    lines += [f"meta {quote(k)} = {quote(program.metadata[k])}" for k in sorted(program.metadata)]
    lines += [f"symbol {s} <= {program.symbols[s]}" for s in sorted(program.symbols)]
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
