"""First-divergence search: where do two runs of the same model part?

:func:`diff` runs a model on several executors (contexts) and :func:`diff_receipt` compares a
run with a receipt (vm/receipt.py). Both trace every instruction's output hashes (vm/audit.py),
find the first instruction whose hashes differ, then run again keeping only that
instruction's values, and report the first differing element with both values. Memory stays
that of one run plus one instruction's outputs. A divergence that does not reproduce on the
second run is reported as such (an executor that is not deterministic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import receipt as receipts
from .audit import Output, Trace, trace
from .errors import TrapError
from .listing import instruction_text
from .loader import load


@dataclass
class Divergence:
    """The first instruction whose output differs between two runs ``sides`` (labels)."""

    index: int
    text: str
    op: str
    attrs: dict
    inputs: list[dict]
    outputs: list[dict]
    sides: tuple[str, str]
    output: str = ""
    element: tuple[int, ...] | None = None
    flat: int | None = None
    values: tuple[int | None, int | None] = (None, None)
    hashes: tuple[str | None, str | None] = (None, None)
    note: str = ""

    def to_dict(self) -> dict:
        return {"index": self.index, "instruction": self.text, "op": self.op,
                "attrs": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in self.attrs.items()},
                "inputs": self.inputs, "outputs": self.outputs, "sides": list(self.sides),
                "output": self.output,
                "element": None if self.element is None else list(self.element),
                "flat": self.flat, "values": list(self.values), "hashes": list(self.hashes),
                "note": self.note}


@dataclass
class Report:
    """``agree`` when every run gave the same trace; else ``divergence`` (None when the runs
    differ only in their instruction count, e.g. a receipt of another model)."""

    sides: list[str]
    roots: dict[str, str | None]
    agree: bool
    divergence: Divergence | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"agree": self.agree, "sides": self.sides, "roots": self.roots,
                "divergence": None if self.divergence is None else self.divergence.to_dict(),
                "problems": self.problems}


def diff(source: Any, inputs: Any, contexts: Sequence, labels: Sequence[str] | None = None,
         limits=None) -> Report:
    """Run ``source`` (a path, .dvm bytes or Program) on each of ``contexts`` (vm.Context, at
    least two) and report the first instruction where any run differs from the first one."""
    if len(contexts) < 2:
        raise TrapError("diff needs at least two executors")
    labels = list(labels or (str(c.device_type) for c in contexts))
    models = [load(source, ctx, limits) for ctx in contexts]
    traces = [trace(m, inputs, strict=False) for m in models]
    roots = dict(zip(labels, (t.root for t in traces)))
    for k in range(1, len(traces)):
        index = _first_index(traces[0], traces[k])
        if index is not None:
            sides = (labels[0], labels[k])
            kept = [trace(m, inputs, keep=(index,), strict=False) for m in (models[0], models[k])]
            div = _divergence(models[0].program, index, sides, kept[0], kept[1])
            return Report(labels, roots, False, div)
    return Report(labels, roots, True)


def diff_receipt(model, inputs: Any, receipt: dict, label: str = "") -> Report:
    """Compare a run of ``model`` with ``receipt``; the receipt needs its per-instruction
    hashes (level ``hashes`` or ``full``) to name the first differing instruction, and its
    values (level ``full``) to give the other side of the first differing element."""
    mine = label or model.ctx.device_type
    sides = [mine, "receipt"]
    tr = trace(model, inputs, strict=False)
    verdict = receipts.compare(receipt, tr)
    roots = {mine: tr.root, "receipt": receipt["trace"]["root"]}
    if verdict.match:
        return Report(sides, roots, True)
    if verdict.first is None:
        return Report(sides, roots, False, problems=verdict.problems)
    kept = trace(model, inputs, keep=(verdict.first,), strict=False)
    step = next(s for s in receipt["trace"]["instructions"] if s["index"] == verdict.first)
    theirs = _entry_from_receipt(step, receipt["trace"]["level"] == "full")
    div = _divergence(model.program, verdict.first, (mine, "receipt"), kept, theirs)
    return Report(sides, roots, False, div, verdict.problems)


def _first_index(a: Trace, b: Trace) -> int | None:
    for x, y in zip(a.entries, b.entries):
        if [o.sha256 for o in x.outputs] != [o.sha256 for o in y.outputs]:
            return x.index
    return None


class _Side:
    """One side's outputs of the divergent instruction: hashes, problems, values (or None)."""

    def __init__(self, outputs):
        self.outputs = outputs


def _entry_from_receipt(step: dict, with_data: bool) -> _Side:
    return _Side([Output(o["name"], tuple(o["shape"]), o["dtype"], o["sha256"],
                         values=receipts.data_of(o) if with_data else None)
                  for o in step["outputs"]])


def _divergence(program, index: int, sides, a, b) -> Divergence:
    """Describe instruction ``index`` and the first element where ``a`` and ``b`` (traces
    keeping ``index``, or receipt sides) differ."""
    ins = program.code[index]
    t = program.tensors
    info = lambda ids: [{"name": t[i].name, "shape": list(t[i].shape),
                         "precision": t[i].precision} for i in ids]
    div = Divergence(index, instruction_text(program, ins), ins.op, dict(ins.attrs),
                     info(ins.inputs), info(ins.outputs), tuple(sides))
    outs_a, outs_b = _outputs_at(a, index), _outputs_at(b, index)
    for oa, ob in zip(outs_a, outs_b):
        if (oa.sha256, oa.problem) == (ob.sha256, ob.problem):
            continue
        div.output, div.hashes = oa.name, (oa.sha256, ob.sha256)
        div.note = "; ".join(f"{side}: {o.problem}" for side, o in zip(sides, (oa, ob))
                             if o.problem)
        if ob.values is None:
            div.note = div.note or "the receipt holds hashes only (level full gives values)"
            return div
        return _first_element(div, oa.values, ob.values)
    div.note = "the outputs differed in the first run but not in the second: an executor is " \
               "not deterministic"
    return div


def _outputs_at(side, index: int):
    if isinstance(side, _Side):
        return side.outputs
    return next(e.outputs for e in side.entries if e.index == index)


def _first_element(div: Divergence, a: np.ndarray, b: np.ndarray) -> Divergence:
    """Fill in the first element where ``a`` and ``b`` differ, with both values."""
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    if flat_a.shape != flat_b.shape:
        div.note = f"shapes differ: {list(a.shape)} and {list(b.shape)}"
        return div
    where = np.flatnonzero(flat_a != flat_b)
    if where.size == 0:
        div.note = div.note or "the values are equal (the hashes differ in dtype or shape)"
        return div
    k = int(where[0])
    div.flat, div.element = k, tuple(int(i) for i in np.unravel_index(k, a.shape))
    div.values = (int(flat_a[k]), int(flat_b[k]))
    return div
