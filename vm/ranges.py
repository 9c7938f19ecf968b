"""Proven value ranges of a program's tensors (a plan fact, like vm.validate.nonnegative).

Every tensor's values lie in [-R(p), R(p)] for its precision p; tensors proved >= 0 start at
0; the output of an op that clips to [qmin, qmax] (requantize, the quantized pools, softmax
and norms, an fp32 transposed convolution) lies there, a clip output in [a_min, a_max], a table
lookup's (lut, cvm_lut) between its constant table's least and greatest entries, a selection's
(reshape, concatenate, strided_slice, max_pool2d, upsampling, ...) within its inputs'
ranges; a constant in [min, max] of its values. Executors use the ranges to hold tensors in
narrow types and to tabulate functions of them.
"""
from __future__ import annotations

from ops.base import bound

from .program import Program
from .validate import nonnegative

CLIPPED = ("requantize", "qavg_pool2d", "qsoftmax", "qvariance", "qnorm")
"""Ops whose every output value is clipped to their [qmin, qmax] (qconv2d_transpose too, with
``rounding="fp32"``: :func:`clipped`)."""


def clipped(ins) -> bool:
    """Whether every output value of ``ins`` lies in its [qmin, qmax]."""
    return ins.op in CLIPPED or ins.op == "qconv2d_transpose" and \
        ins.attrs.get("rounding") == "fp32"


TABLES = {"lut": 0, "cvm_lut": 1}
"""Lookup ops and the position of their table: each output value is an entry of it."""
SELECTIONS = ("reshape", "flatten", "transpose", "expand_dims", "squeeze", "concatenate",
              "strided_slice", "repeat", "tile", "max_pool2d", "upsampling")
"""Ops each output value of which is a value of one of their inputs (max_pool2d: windows
skip the padding)."""


class Ranges:
    """[lo, hi] of every tensor of ``program`` (:meth:`of`)."""

    def __init__(self, program: Program):
        self.program = program
        self.nonneg = nonnegative(program)
        self.producer = {t: k for k, ins in enumerate(program.code) for t in ins.outputs}
        self.known: dict[int, tuple[int, int]] = {}

    def of(self, t: int) -> tuple[int, int]:
        """Proven [lo, hi] of tensor t's values."""
        if t not in self.known:
            todo = [t]                  # the selections above t first (no recursion)
            while todo:
                u = todo[-1]
                above = [i for i in self._selected_from(u) if i not in self.known]
                if above:
                    todo.extend(above)
                    continue
                todo.pop()
                self.known[u] = self._range(u)
        return self.known[t]

    def _selected_from(self, t: int) -> tuple[int, ...]:
        """The inputs whose values t's producer selects (moves, concatenates, pools)."""
        k = self.producer.get(t)
        ins = None if k is None else self.program.code[k]
        return tuple(ins.inputs) if ins is not None and ins.op in SELECTIONS else ()

    def _range(self, t: int) -> tuple[int, int]:
        if t in self.program.consts:
            data = self.program.consts[t]
            return (int(data.min()), int(data.max())) if data.size else (0, 0)
        r = bound(self.program.tensors[t].precision)
        lo, hi = (0 if t in self.nonneg else -r), r
        k = self.producer.get(t)
        if k is not None:
            ins = self.program.code[k]
            if clipped(ins):
                lo, hi = max(lo, ins.attrs["qmin"]), min(hi, ins.attrs["qmax"])
            elif ins.op == "clip":
                lo, hi = max(lo, ins.attrs["a_min"]), min(hi, ins.attrs["a_max"])
            elif ins.op in TABLES and ins.inputs[TABLES[ins.op]] in self.program.consts:
                table = self.program.consts[ins.inputs[TABLES[ins.op]]]
                if table.size:                   # every output is one of its entries
                    lo, hi = max(lo, int(table.min())), min(hi, int(table.max()))
            elif ins.op in SELECTIONS and ins.inputs:
                ranges = [self.known[i] for i in ins.inputs]
                lo = max(lo, min(a for a, _ in ranges))
                hi = min(hi, max(b for _, b in ranges))
        return lo, hi
