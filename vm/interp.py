"""The interpreter: one loop over the bytecode, bound once at load time.

``Plan`` binds, per instruction, the executor's kernel, its keyword arguments (canonical
attributes plus the licensed GEMM path) and the buffers that die after it. ``Plan.run`` is the
only interpreter loop in detvm; it keeps no state between calls, so it is thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import ops

from .errors import EnvironmentFault, InternalError
from .executors import Executor
from .program import Program
from .validate import Analysis


@dataclass(frozen=True)
class Step:
    """One bound instruction."""

    index: int
    kernel: Callable
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    dtypes: tuple[np.dtype, ...]
    kwargs: dict[str, Any]
    frees: tuple[int, ...]


class Plan:
    """A validated program bound to an executor."""

    def __init__(self, program: Program, analysis: Analysis, executor: Executor):
        self.program, self.executor = program, executor
        self.consts = {i: executor.from_host(_frozen(a)) for i, a in program.consts.items()}
        self.steps = [self._bind(k, ins, analysis) for k, ins in enumerate(program.code)]

    def _bind(self, index: int, ins, analysis: Analysis) -> Step:
        op = ops.get(ins.op)
        kwargs = dict(ins.attrs)
        if index in analysis.gemm:
            kwargs["gemm"] = analysis.gemm[index]
        tensors = self.program.tensors
        frees = tuple(sorted(i for i in set(ins.inputs) | set(ins.outputs)
                             if analysis.last_use[i] == index and tensors[i].kind != "const"))
        return Step(index, self.executor.kernel(op), ins.inputs, ins.outputs,
                    tuple(tensors[i].dtype for i in ins.outputs), kwargs, frees)

    def run(self, inputs: dict[int, Any], trace: Callable | None = None) -> list:
        """Run on device values keyed by tensor id; return the output values in order.

        ``trace(step, values)`` is called after every instruction (for divergence hunting).
        """
        env = dict(self.consts)
        env.update(inputs)
        xp, narrow = self.executor.xp, self.executor.narrow
        for step in self.steps:
            try:
                result = step.kernel(xp, *[env[i] for i in step.inputs], **step.kwargs)
            except MemoryError:
                raise EnvironmentFault(f"out of memory in {self.program.describe(step.index)}") \
                    from None
            except Exception as e:  # a kernel failing after validation is a detvm bug
                raise InternalError(f"{self.program.describe(step.index)} failed: "
                                    f"{type(e).__name__}: {e}") from e
            results = (result,) if len(step.outputs) == 1 else tuple(result)
            for i, value, dtype in zip(step.outputs, results, step.dtypes):
                env[i] = narrow(value, dtype)
            if trace is not None:
                trace(step, [env[i] for i in step.outputs])
            for i in step.frees:
                env.pop(i, None)
        return [env[i] for i in self.program.outputs]


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array
