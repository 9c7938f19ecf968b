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

from .program import Program

STEP_SLACK = 1 << 18
"""Bytes any step may use beyond its scratch rule: array headers, small index arrays."""
WORKSPACE_KEEP = KEEP_BYTES
"""Bytes of reusable scratch a lane keeps between steps (ops/scratch.py)."""


def tensor_bytes(program: Program) -> list[int]:
    """Bytes of every tensor in its storage dtype (a plan's own, for the tensors a CPU plan
    holds in a narrower one)."""
    return [math.prod(t.shape) * t.dtype.itemsize for t in program.tensors]


def step_scratch(program: Program, ins) -> int:
    """The scratch bound of one instruction: its op's rule plus STEP_SLACK."""
    tensors = program.tensors
    return STEP_SLACK + program.op(ins).scratch_bytes(
        [tensors[i].shape for i in ins.inputs], [tensors[i].shape for i in ins.outputs],
        ins.attrs)


def frees_after(program: Program, last_use: list[int], index: int, ins) -> list[int]:
    """The tensors that die after instruction ``index`` (constants never do)."""
    return [i for i in {*ins.inputs, *ins.outputs}
            if last_use[i] == index and program.tensors[i].kind != "const"]


def peak_bytes(program: Program, steps) -> int:
    """Peak bytes of live tensors over ``steps``: (tensors written, tensors freed after) pairs,
    or triples with the step's scratch bytes added while it runs. Inputs and constants live
    from the start."""
    nbytes = tensor_bytes(program)
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
    return peak_bytes(program, [(ins.outputs, frees_after(program, last_use, k, ins))
                                for k, ins in enumerate(program.code)])


def peak_memory(program: Program, last_use: list[int]) -> int:
    """The bound of a run's allocations on one lane (see the module docstring)."""
    steps = [(ins.outputs, frees_after(program, last_use, k, ins), step_scratch(program, ins))
             for k, ins in enumerate(program.code)]
    nbytes = tensor_bytes(program)
    outputs = sum(nbytes[i] for i in set(program.outputs))
    end = sum(n for n, t in zip(nbytes, program.tensors) if t.kind == "const") + 2 * outputs
    return max(peak_bytes(program, steps), end) + WORKSPACE_KEEP


def largest_tile(program: Program) -> int:
    """The largest scratch of one step (what each extra lane may hold at once)."""
    return max((step_scratch(program, ins) for ins in program.code), default=0)


def lanes_memory(peak: int, tile: int, lanes: int) -> int:
    """The bound on ``lanes`` lanes: each extra lane holds a tile and its kept workspace."""
    return peak + (max(lanes, 1) - 1) * (tile + WORKSPACE_KEEP)
