"""Proven value ranges of a program's tensors (a plan fact, like vm.validate.nonnegative).

Every tensor's values lie in [-R(p), R(p)] for its precision p; tensors proved >= 0 start at
0; a requantize output lies in [qmin, qmax] and a clip output in [a_min, a_max]; a constant
in [min, max] of its values. Executors use the ranges to hold tensors in narrow types and to
tabulate functions of them.
"""
from __future__ import annotations

from ops.base import bound

from .program import Program
from .validate import nonnegative


class Ranges:
    """[lo, hi] of every tensor of ``program`` (:meth:`of`)."""

    def __init__(self, program: Program):
        self.program = program
        self.nonneg = nonnegative(program)
        self.producer = {t: k for k, ins in enumerate(program.code) for t in ins.outputs}

    def of(self, t: int) -> tuple[int, int]:
        """Proven [lo, hi] of tensor t's values."""
        if t in self.program.consts:
            data = self.program.consts[t]
            return (int(data.min()), int(data.max())) if data.size else (0, 0)
        r = bound(self.program.tensors[t].precision)
        lo, hi = (0 if t in self.nonneg else -r), r
        k = self.producer.get(t)
        if k is not None:
            ins = self.program.code[k]
            if ins.op == "requantize":
                lo, hi = max(lo, ins.attrs["qmin"]), min(hi, ins.attrs["qmax"])
            elif ins.op == "clip":
                lo, hi = max(lo, ins.attrs["a_min"]), min(hi, ins.attrs["a_max"])
        return lo, hi
