"""Counterexamples: find a witness input with Z3, then replay it on the CPU executor.

``search`` runs the formal executor in integer mode over the whole program with *symbolic*
inputs (one solver constant per element, constrained to the input domain) through the same
interpreter loop, and asks for an input that drives some element of instruction ``index``'s
outputs outside its declared precision. ``replay`` runs the witness on the CPU executor, stops
after that instruction, recomputes its kernel in int64 and reports what really happens: a value
outside the declared precision and, when it leaves the storage type, the wrapped bytes.
"""
from __future__ import annotations

import numpy as np
import z3

from ops.base import bound
from vm.executors import Context, Executor
from vm.interp import Plan
from vm.program import Program
from vm.validate import Analysis


from .domains import solver
from .executor import FormalExecutor, Sym, constraints

SEARCH_LIMIT = 50_000
"""Largest program (total elements of its tensors) whose witness is searched for."""


class _Stop(Exception):
    pass


def _analysis(program: Program) -> Analysis:
    """An analysis that frees nothing and licenses only the exact int64 GEMM path (also valid
    for a program the validator would refuse)."""
    return Analysis(gas=0, peak_memory=0, last_use=[len(program.code)] * len(program.tensors))


def _run_until(plan: Plan, inputs: dict, index: int) -> dict:
    """Values of every tensor up to instruction ``index`` (inputs and constants included)."""
    env = dict(plan.consts)
    env.update(inputs)

    def trace(step, values):
        env.update(zip(step.outputs, values))
        if step.index == index:
            raise _Stop
    try:
        plan.run(inputs, trace)
    except _Stop:
        pass
    return env


def search(program: Program, index: int, ranges: dict, rlimit: int,
           timeout_s: float | None = None) -> dict | None:
    """An input (by name, int64 arrays) that makes instruction ``index`` overflow, or None."""
    if sum(t.size for t in program.tensors) > SEARCH_LIMIT:
        return None
    executor = FormalExecutor(Context("formal"), "int", timeout_s, mode="joint")
    plan = Plan(program, _analysis(program), executor)
    inputs = {}
    for i in program.inputs:
        t, (lo, hi) = program.tensors[i], ranges[i]
        names = [z3.Int(f"in{i}_{j}") for j in range(t.size)]
        inputs[i] = Sym(t.shape, names, None, [z3.And(lo <= v, v <= hi) for v in names])
    env = _run_until(plan, inputs, index)
    ids = program.code[index].outputs
    outs = [env[i] for i in ids]
    s = solver(rlimit, timeout_s)
    s.add(constraints(outs))
    model = None
    # prefer a witness that leaves the storage type (it wraps), then one beyond the precision
    storage = lambda t: (-bound(8 * t.dtype.itemsize) - 1, bound(8 * t.dtype.itemsize))
    declared = lambda t: (-bound(t.precision), bound(t.precision))
    for limits in (storage, declared):
        s.push()
        s.add(z3.Or([z3.Or(v < limits(program.tensors[i])[0], v > limits(program.tensors[i])[1])
                     for i, sym in zip(ids, outs) for v in sym.terms]))
        if s.check() == z3.sat:
            model = s.model()
        s.pop()
        if model is not None:
            break
    if model is None:
        return None
    return {program.tensors[i].name: np.array(
        [model.eval(v, model_completion=True).as_long() for v in inputs[i].terms],
        dtype=np.int64).reshape(program.tensors[i].shape) for i in program.inputs}


def replay(program: Program, witness: dict, index: int) -> tuple[bool, str]:
    """Run ``witness`` on the CPU executor up to instruction ``index``; (overflows?, what)."""
    plan = Plan(program, _analysis(program), Executor(Context("cpu")))
    inputs = {}
    for i in program.inputs:
        t = program.tensors[i]
        values = np.asarray(witness[t.name], dtype=np.int64)
        r = bound(t.precision)
        if values.size and (values.min() < -r or values.max() > r):
            return False, f"witness for {t.name!r} lies outside its precision"
        inputs[i] = values.astype(t.dtype).reshape(t.shape)
    env = _run_until(plan, inputs, index)
    ins = program.code[index]
    op = program.op(ins)
    exact = op.kernel(np, *[env[i] for i in ins.inputs], **ins.attrs)
    exact = [exact] if len(op.outputs) == 1 else list(exact)
    for i, wide in zip(ins.outputs, exact):
        t, wide = program.tensors[i], np.asarray(wide, dtype=np.int64)
        r = bound(t.precision)
        flat = wide.reshape(-1)
        over = np.flatnonzero((flat > r) | (flat < -r))
        if over.size:
            k = int(over[0])
            stored = int(np.asarray(env[i]).reshape(-1)[k])
            what = (f"%{t.name}[{k}] = {int(flat[k])} exceeds p{t.precision} (|y| <= {r})")
            if stored != int(flat[k]):
                what += f" and wraps to {stored} in its {t.dtype} storage"
            return True, what
    return False, "every value stays within its declared precision"
