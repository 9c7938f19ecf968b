"""First-divergence search: where do two runs of the same model part?

:func:`diff` runs a model on several executors and :func:`diff_receipt` compares a run with a
receipt (vm/receipt.py). Each run is traced (vm/audit.py): instruction by instruction, or with
``fast`` on the executor's fastest path (the CPU's fused steps, the regions lowered to
onnxruntime), which computes only some intermediate tensors. The runs are compared tensor by
tensor, in program order, over the tensors both computed; the first whose hash differs is the
divergence. Its inputs agreed (they are earlier tensors, the model's inputs or constants), so
the step computing it computed differently. The runs are repeated keeping only that tensor's
values, and the first differing element is reported with both values: memory stays that of one
run plus one tensor. A difference that does not reproduce is reported as an executor that is
not deterministic. On the fast path, a step covering several instructions is re-checked
instruction by instruction, which tells a fused or lowered kernel's fault from an op's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import receipt as receipts
from .audit import Entry, Output, Trace, trace
from .errors import EnvironmentFault, TrapError
from .executors import Context
from .listing import instruction_text
from .loader import load

EXECUTORS = ("cpu", "cpu:numpy", "cpu:onnxruntime", "reference", "formal", "gpu")
"""Executor labels: a device type, and for the CPU ``:backend`` (vm.cpu(backend=...))."""


def context(label: str) -> Context:
    """The context of an executor label (:data:`EXECUTORS`; ``gpu:1`` for another device)."""
    name, _, extra = label.partition(":")
    try:
        if name == "cpu" and extra:
            return Context("cpu", 0, extra)
        return Context(name, int(extra) if extra else 0)
    except (ValueError, EnvironmentFault):
        raise TrapError(f"unknown executor {label!r} (known: {', '.join(EXECUTORS)})") from None


@dataclass
class Divergence:
    """The first tensor whose value differs between two runs ``sides`` (labels), the
    instruction computing it, and on the fast path the steps that did (``steps``)."""

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
    steps: dict[str, list[int]] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return {"index": self.index, "instruction": self.text, "op": self.op,
                "attrs": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in self.attrs.items()},
                "inputs": self.inputs, "outputs": self.outputs, "sides": list(self.sides),
                "output": self.output,
                "element": None if self.element is None else list(self.element),
                "flat": self.flat, "values": list(self.values), "hashes": list(self.hashes),
                "steps": self.steps, "note": self.note}


@dataclass
class Report:
    """``agree`` when the runs computed the same value for every tensor they both computed;
    else ``divergence`` (None when the runs differ otherwise: ``problems``)."""

    sides: list[str]
    roots: dict[str, str | None]
    agree: bool
    divergence: Divergence | None = None
    problems: list[str] = field(default_factory=list)
    compared: int = 0

    def to_dict(self) -> dict:
        return {"agree": self.agree, "sides": self.sides, "roots": self.roots,
                "compared": self.compared,
                "divergence": None if self.divergence is None else self.divergence.to_dict(),
                "problems": self.problems}


def diff(source: Any, inputs: Any, contexts: Sequence, labels: Sequence[str] | None = None,
         limits=None, fast: bool = False) -> Report:
    """Run ``source`` (a path, .dvm bytes or Program) on each of ``contexts`` (at least two)
    and report the first tensor where a run differs from the first one."""
    if len(contexts) < 2:
        raise TrapError("diff needs at least two executors")
    labels = list(labels or (str(c.device_type) for c in contexts))
    models = [load(source, ctx, limits) for ctx in contexts]
    traces = [trace(m, inputs, strict=False, fused=fast) for m in models]
    program = _program(models[0], inputs)
    roots = dict(zip(labels, (t.root for t in traces)))
    for k in range(1, len(traces)):
        name, compared = first_tensor(program, traces[0], traces[k])
        if name is not None:
            sides = (labels[0], labels[k])
            pair = (models[0], models[k])
            kept = [trace(m, inputs, keep=(name,), strict=False, fused=fast) for m in pair]
            div = _divergence(program, name, sides, kept[0], kept[1])
            if fast:
                _per_instruction(div, name, sides, pair, inputs, kept)
            return Report(labels, roots, False, div, compared=compared)
    return Report(labels, roots, True, compared=compared)


def diff_receipt(model, inputs: Any, receipt: dict, label: str = "",
                 fast: bool = False) -> Report:
    """Compare a run of ``model`` with ``receipt``: its per-instruction hashes (level
    ``hashes``) name the first differing tensor, its values (level ``full``) give the other
    side of the first differing element; a receipt of level ``root`` is compared by its
    outputs and root only."""
    mine = label or str(model.ctx)
    sides = [mine, "receipt"]
    tr = trace(model, inputs, strict=False, fused=fast)
    roots = {mine: tr.root, "receipt": receipt["trace"]["root"]}
    problems = receipts.identity(receipt, tr)
    steps = receipt["trace"].get("instructions")
    if problems or steps is None:
        if not problems:
            problems = receipts.compare(receipt, tr).problems if not fast else \
                receipts.tensors("output", receipt["outputs"], tr.outputs)
        return Report(sides, roots, not problems, problems=problems)
    theirs = receipt_trace(steps, receipt["trace"]["level"] == "full")
    program = _program(model, inputs)
    name, compared = first_tensor(program, tr, theirs)
    if name is None:
        return Report(sides, roots, True, compared=compared)
    kept = trace(model, inputs, keep=(name,), strict=False, fused=fast)
    div = _divergence(program, name, (mine, "receipt"), kept, theirs)
    if fast:
        _per_instruction(div, name, (mine, "receipt"), (model, None), inputs, (kept, theirs))
    return Report(sides, roots, False, div, compared=compared)


def _program(model, inputs):
    """The fixed-shape program the call with ``inputs`` runs."""
    return model.instance(**model._check_inputs(inputs)[1]).program


def receipt_trace(steps: list, with_data: bool) -> Trace:
    """A receipt's per-instruction outputs as a :class:`Trace`'s entries (values at level
    ``full``)."""
    entries = [Entry(s["index"], s["op"], tuple(
        Output(o["name"], tuple(o["shape"]), o["dtype"], o["sha256"],
               values=receipts.data_of(o) if with_data else None) for o in s["outputs"]))
        for s in steps]
    return Trace("", 0, "receipt", 0, [], [], entries, {})


def first_tensor(program, a: Trace, b: Trace) -> tuple[str | None, int]:
    """(name of the first tensor, in program order, that both traces computed and whose hash
    differs, or None; how many tensors both computed)."""
    order = {program.tensors[i].name: k for k, ins in enumerate(program.code)
             for i in ins.outputs}
    ha, hb = _hashes(a), _hashes(b)
    common = sorted(set(ha) & set(hb) & set(order), key=order.get)
    return next((n for n in common if ha[n] != hb[n]), None), len(common)


def _hashes(t: Trace) -> dict[str, tuple]:
    return {o.name: (o.sha256, o.problem) for e in t.entries for o in e.outputs}


def _find(t: Trace, name: str) -> tuple[Entry, Output]:
    return next((e, o) for e in t.entries for o in e.outputs if o.name == name)


def _divergence(program, name: str, sides, a: Trace, b: Trace) -> Divergence:
    """Describe the instruction computing ``name`` and the first element where ``a`` and
    ``b`` (traces keeping ``name``) differ."""
    tid = next(i for i, t in enumerate(program.tensors) if t.name == name)
    index = next(k for k, ins in enumerate(program.code) if tid in ins.outputs)
    ins, t = program.code[index], program.tensors
    info = lambda ids: [{"name": t[i].name, "shape": list(t[i].shape),
                         "precision": t[i].precision} for i in ids]
    div = Divergence(index, instruction_text(program, ins), ins.op, dict(ins.attrs),
                     info(ins.inputs), info(ins.outputs), tuple(sides), output=name)
    (ea, oa), (eb, ob) = _find(a, name), _find(b, name)
    div.hashes = (oa.sha256, ob.sha256)
    div.steps = {side: list(e.covers) for side, e in zip(sides, (ea, eb)) if len(e.covers) > 1}
    div.note = "; ".join(f"{side}: {o.problem}" for side, o in zip(sides, (oa, ob)) if o.problem)
    if (oa.sha256, oa.problem) == (ob.sha256, ob.problem):
        div.note = ("the tensor differed in the first run but not in the second: an executor "
                    "is not deterministic")
    elif ob.values is None:
        div.note = div.note or "the receipt holds hashes only (level full gives values)"
    else:
        _first_element(div, oa.values, ob.values)
    return div


def _first_element(div: Divergence, a: np.ndarray, b: np.ndarray) -> None:
    """Fill in the first element where ``a`` and ``b`` differ, with both values."""
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    if flat_a.shape != flat_b.shape:
        div.note = f"shapes differ: {list(a.shape)} and {list(b.shape)}"
        return
    where = np.flatnonzero(flat_a != flat_b)
    if where.size == 0:
        div.note = div.note or "the values are equal (the hashes differ in dtype or shape)"
        return
    k = int(where[0])
    div.flat, div.element = k, tuple(int(i) for i in np.unravel_index(k, a.shape))
    div.values = (int(flat_a[k]), int(flat_b[k]))


def _per_instruction(div: Divergence, name: str, sides, models, inputs, kept) -> None:
    """For each side whose fast step computing ``name`` covers several instructions: does its
    per-instruction path give the other side's value? (the fused or lowered step's fault) or
    its fast value (the op's)."""
    notes = []
    for k, side in enumerate(sides):
        if side not in div.steps or models[k] is None:
            continue
        other = _find(kept[1 - k], name)[1].sha256
        mine = _find(kept[k], name)[1].sha256
        slow = _find(trace(models[k], inputs, keep=(name,), strict=False), name)[1].sha256
        covered = ", ".join(str(i) for i in div.steps[side])
        if slow == other:
            notes.append(f"{side}'s step covering instructions {covered} is at fault: its "
                         f"per-instruction path agrees with {sides[1 - k]}")
        elif slow == mine:
            notes.append(f"{side}'s per-instruction path computes the same value as its step "
                         f"covering instructions {covered}: an op's kernel is at fault (run "
                         "without --fast to find which)")
        else:
            notes.append(f"{side}'s per-instruction path agrees with neither side")
    div.note = "; ".join(filter(None, [div.note, *notes]))
