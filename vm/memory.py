"""Peak memory: a bound of what a run allocates, known before it runs.

A run holds the live tensors in their storage dtypes (inputs and constants from the start,
every value from the step that writes it to its last use). While a step runs, its kernel also
holds temporaries: each op declares a bound of them, its ``scratch`` rule (ops/base.py: int64
words per element of its inputs and outputs, or a formula; tiled kernels count a constant
tile). At the end the outputs are copied out for the caller. So::

    peak_memory = max over the points of a run of (live bytes + the step's scratch)
                  + STEP_SLACK per step + WORKSPACE_KEEP

where the points are: the start; each step, after its outputs are allocated, with its
scratch; the end, with the outputs and their copies. WORKSPACE_KEEP covers the reusable
scratch a lane keeps between steps and runs (ops/scratch.py retains at most that much); a plan
on n lanes adds (n - 1) x (the largest tile + WORKSPACE_KEEP). The memory tests
(tests/test_memory.py) measure every op's kernels against this bound with tracemalloc, and a
whole run's RSS against it.
"""
from __future__ import annotations

import math

from ops.scratch import KEEP_BYTES

from .program import Program, Tensor

STEP_SLACK = 1 << 18
"""Bytes any step may use beyond its scratch rule: array headers, small index arrays."""
WORKSPACE_KEEP = KEEP_BYTES
"""Bytes of reusable scratch a lane keeps between steps (ops/scratch.py)."""


def tensor_bytes(program: Program) -> list[int]:
    """Bytes of every tensor in its storage dtype (a plan's own, for the tensors a CPU plan
    holds in a narrower one)."""
    prod = math.prod
    return [prod(t.shape) * ((1 if t.precision <= 8 else 4) if type(t) is Tensor
                             else t.dtype.itemsize) for t in program.tensors]


def step_scratch(program: Program, ins, memo: dict | None = None) -> int:
    """The scratch bound of one instruction: its op's rule plus STEP_SLACK (``memo``: the
    op and its rule once per distinct application)."""
    tensors = program.tensors
    op = memo.get(ins.op) if memo is not None else None
    if op is None:
        op = program.op(ins)
        if memo is not None:
            memo[ins.op] = op
    if not callable(op.scratch):                # words per operand element: no key needed
        return STEP_SLACK + 8 * op.scratch * sum(
            tensors[i].size for i in (*ins.inputs, *ins.outputs))
    ins_shapes = tuple(tensors[i].shape for i in ins.inputs)
    out_shapes = tuple(tensors[i].shape for i in ins.outputs)
    key = (ins.op, ins_shapes, out_shapes, tuple(ins.attrs.items()))
    value = memo.get(key) if memo is not None else None
    if value is None:
        value = STEP_SLACK + op.scratch_bytes(ins_shapes, out_shapes, ins.attrs)
        if memo is not None:
            memo[key] = value
    return value


def frees_after(program: Program, last_use: list[int], index: int, ins) -> list[int]:
    """The tensors that die after instruction ``index`` (constants never do)."""
    return [i for i in {*ins.inputs, *ins.outputs}
            if last_use[i] == index and program.tensors[i].kind != "const"]


def peak_bytes(program: Program, steps, nbytes: list[int] | None = None) -> int:
    """Peak bytes of live tensors over ``steps``: (tensors written, tensors freed after) pairs,
    or triples with the step's scratch bytes added while it runs. Inputs and constants live
    from the start (``nbytes``: :func:`tensor_bytes`, if known)."""
    nbytes = tensor_bytes(program) if nbytes is None else nbytes
    live = sum(n for n, t in zip(nbytes, program.tensors) if t.kind != "value")
    peak = live
    for step in steps:
        for i in step[0]:
            live += nbytes[i]
        point = live + (step[2] if len(step) > 2 else 0)
        if point > peak:
            peak = point
        for i in step[1]:
            live -= nbytes[i]
    return peak


def live_peak(program: Program, last_use: list[int]) -> int:
    """Peak bytes of the live tensors alone, buffers freed once dead (no scratch)."""
    return analyse(program, last_use)[1]


def peak_memory(program: Program, last_use: list[int]) -> int:
    """The bound of a run's allocations on one lane (see the module docstring)."""
    return analyse(program, last_use)[0]


def largest_tile(program: Program) -> int:
    """The largest scratch of one step (what each extra lane may hold at once)."""
    memo: dict = {}
    return max((step_scratch(program, ins, memo) for ins in program.code), default=0)


def analyse(program: Program, last_use: list[int],
            scratch: list[int] | None = None) -> tuple[int, int, int]:
    """(peak memory, peak of the live tensors alone, largest step scratch) in one pass
    (``scratch``: each instruction's :func:`step_scratch`, if known)."""
    code, tensors = program.code, program.tensors
    frees: list[list[int]] = [[] for _ in code]
    for i, t in enumerate(tensors):             # as frees_after, for every step at once
        if t.kind != "const" and 0 <= last_use[i] < len(code):
            frees[last_use[i]].append(i)
    if scratch is None:
        memo: dict = {}
        scratch = [step_scratch(program, ins, memo) for ins in code]
    nbytes = tensor_bytes(program)
    live = peak_live = peak = sum(n for n, t in zip(nbytes, tensors) if t.kind != "value")
    for ins, dead, extra in zip(code, frees, scratch):     # peak_bytes of both, at once
        for i in ins.outputs:
            live += nbytes[i]
        if live > peak_live:
            peak_live = live
        if live + extra > peak:
            peak = live + extra
        for i in dead:
            live -= nbytes[i]
    outputs = sum(nbytes[i] for i in set(program.outputs))
    end = sum(n for n, t in zip(nbytes, tensors) if t.kind == "const") + 2 * outputs
    return max(peak, end) + WORKSPACE_KEEP, peak_live, max(scratch, default=0)


def lanes_memory(peak: int, tile: int, lanes: int) -> int:
    """The bound on ``lanes`` lanes: each extra lane holds a tile and its kept workspace."""
    return peak + (max(lanes, 1) - 1) * (tile + WORKSPACE_KEEP)
