"""The interpreter: one loop over the bytecode, bound once at load time.

``Plan`` binds, per instruction, the executor's kernel, its keyword arguments (canonical
attributes plus the licensed GEMM path) and the buffers that die after it (``steps``). The
executor may also regroup them into prepared, fused steps (``fast``: vm/fusion.py on the CPU),
which compute the same bytes. ``Plan.run`` (its ``_loop``) is the only interpreter loop in
detvm; it keeps no state between calls except per-thread scratch buffers, so it is
thread-safe.
"""
from __future__ import annotations

import functools
import threading
from contextlib import nullcontext
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from ops.scratch import Lanes, Workspace, using

from .errors import EnvironmentFault, InternalError
from .executors import Executor
from .program import Program, storage_dtype
from .steps import Step
from .validate import Analysis


class Plan:
    """A validated program bound to an executor. ``threads`` (CPU): None leaves the BLAS
    library's threading alone; n runs prepared kernels on n lanes (vm/scratch.py) with one BLAS
    thread each (see :func:`blas_threads`). Results never depend on it."""

    def __init__(self, program: Program, analysis: Analysis, executor: Executor,
                 threads: int | None = None, consts: dict | None = None,
                 lanes: Lanes | None = None):
        """``consts`` (device constants by id) and ``lanes`` may be shared with other plans of
        the same constants and thread count (the instances of a program with symbols); a plan
        closes only lanes it made."""
        check_threads(threads)
        self.program, self.executor = program, executor
        self.input_ids = program.inputs
        """The program's input tensor ids, in order."""
        self.consts = consts if consts is not None else device_consts(program, executor)
        self.steps = BoundSteps(program, analysis, executor)
        self.threads = threads
        self._limit = blas_threads(None if threads is None else 1)
        self._exclusive = executor.exclusive
        with self._limit():
            self.fast = executor.fast_steps(program, analysis, self.steps, threads)
        if self.fast is self.steps:             # every step runs: bind them all now
            self.fast = list(self.steps)
        self.backend = executor.describe(program, self.fast)
        """How this plan computes, in words (the CPU: numpy, or regions on onnxruntime)."""
        self._fast_limit = self._limit if executor.may_use_blas(self.fast) else nullcontext
        self._bare = not executor.may_use_blas(self.fast) and \
            type(executor).exclusive is Executor.exclusive
        """Every fast step is an onnxruntime session: no scratch, BLAS limit or lock to hold."""
        read = {i for step in self.fast for i in step.inputs} | set(program.outputs)
        self._fast_consts = {i: v for i, v in self.consts.items() if i in read}
        self._own_lanes = lanes is None
        self.lanes = lanes if lanes is not None else make_lanes(threads)
        self._local = threading.local()
        self.single = self._single_step()
        """A plan that is one bare step reading the program's inputs and writing its outputs
        (a model that is one onnxruntime session): ``single(feeds, narrow=None)``, of the host
        input arrays in order, returns the output arrays, fresh, in their storage dtypes:
        :meth:`run` without the loop, the same bytes.
        ``narrow``: whether the inputs at :attr:`single_bytes` hold bytes, when the caller
        knows (vm/ort/kernels.py RegionKernel.call). Else None."""
        self.single_bytes = self.fast[0].kernel.byte_positions if self.single else ()
        """The input positions whose holding bytes selects the session's narrow variant."""

    def run(self, inputs: dict[int, Any], trace: Callable | None = None,
            fused: bool | None = None, out: dict[int, Any] | None = None) -> list:
        """Run on device values keyed by tensor id; return the output values in order.

        ``trace(step, values)`` is called after every step: by default one per instruction (for
        divergence hunting); ``fused=True`` traces the fused steps (for profiling). ``out``:
        buffers of the output's storage dtype and shape, by tensor id, into which the steps
        computing those outputs store their results (numpy executors).
        """
        steps = self.fast if (trace is None if fused is None else fused) else self.steps
        env = dict(self._fast_consts if steps is self.fast else self.consts)
        env.update(inputs)
        if self._bare and steps is self.fast:
            return self._loop(steps, env, trace, out)
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace()
        limit = self._fast_limit if steps is self.fast else self._limit
        with using(ws, self.lanes), limit(), self._exclusive():
            return self._loop(steps, env, trace, out)

    def _loop(self, steps, env: dict, trace, out) -> list:
        """Each step on ``env`` (tensor id -> value, updated in place); the outputs."""
        xp, narrow = self.executor.xp, self.executor.narrow
        for step in steps:
            try:
                result = step.kernel(xp, *[env[i] for i in step.inputs], **step.kwargs)
            except Exception as e:
                raise failure(self.program, step, e) from \
                    (None if isinstance(e, MemoryError) else e)
            results = (result,) if len(step.outputs) == 1 else tuple(result)
            for i, value, dtype in zip(step.outputs, results, step.dtypes):
                if out and i in out:        # narrowed straight into the caller's buffer
                    np.copyto(out[i], value, casting="unsafe")
                    env[i] = out[i]
                else:
                    env[i] = narrow(value, dtype)
            if trace is not None:
                trace(step, [env[i] for i in step.outputs])
            for i in step.frees:
                env.pop(i, None)
        return [env[i] for i in self.program.outputs]

    def _single_step(self) -> Callable | None:
        """:attr:`single`, where it applies: a host executor, no lock, scratch or BLAS limit to
        hold, one step without keyword arguments whose kernel returns arrays of its own
        (``fresh_results``: a session kernel, with ``call`` and ``byte_positions``), whose
        inputs are the program's inputs and whose outputs (results it computes) are the
        program's outputs, in order. The function holds no reference to the plan."""
        program, steps = self.program, self.fast
        if not self._bare or self.executor.name != "cpu" or len(steps) != 1:
            return None
        step = steps[0]
        outputs = tuple(program.outputs)
        if step.kwargs or not getattr(step.kernel, "fresh_results", False) or \
                step.inputs != tuple(self.input_ids) or step.outputs != outputs:
            return None
        kernel, narrow_to = step.kernel, self.executor.narrow
        dtypes = [program.tensors[i].dtype for i in outputs]
        one = len(outputs) == 1

        def single(feeds: list, narrow: bool | None = None) -> list:
            try:
                result = kernel.call(feeds, narrow)
            except Exception as e:
                raise failure(program, step, e) from \
                    (None if isinstance(e, MemoryError) else e)
            results = (result,) if one else result
            return [narrow_to(v, d) for v, d in zip(results, dtypes)]
        return single

    def close(self) -> None:
        if self.lanes is not None and self._own_lanes:
            self.lanes.close()

    @property
    def scratch_bytes(self) -> int:
        """Bytes of scratch this thread's runs keep for reuse."""
        ws = getattr(self._local, "ws", None)
        return ws.nbytes if ws is not None else 0


def failure(program: Program, step: Step, e: Exception) -> Exception:
    """The error to raise for ``step``'s kernel raising ``e``: out of memory is the
    environment's fault; any other failure after validation is a detvm bug."""
    if isinstance(e, MemoryError):
        return EnvironmentFault(f"out of memory in {program.describe(step.index)}")
    return InternalError(f"{program.describe(step.index)} failed: {type(e).__name__}: {e}")


class BoundSteps(Sequence):
    """Each instruction's step (its kernel, keyword arguments and the buffers that die after
    it), bound when first asked for: a fused plan (vm/fusion.py) asks only for the steps it
    runs as they are; a traced run, for every one. It holds no reference to its plan (a
    model dropped is freed at once, without the cyclic collector)."""

    def __init__(self, program: Program, analysis: Analysis, executor: Executor):
        self._program, self._analysis, self._executor = program, analysis, executor
        self._steps: list = [None] * len(program.code)
        self._kernels: dict = {}                # op name: the executor's kernel

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self._steps)
        step = self._steps[k]
        if step is None:
            step = self._steps[k] = self._bind(k)
        return step

    def __setitem__(self, k: int, step: Step) -> None:
        self._steps[k] = step

    def _bind(self, index: int) -> Step:
        program, analysis = self._program, self._analysis
        ins = program.code[index]
        kwargs = dict(ins.attrs)
        if index in analysis.gemm:
            kwargs["gemm"] = analysis.gemm[index]
        tensors, last_use = program.tensors, analysis.last_use
        frees = tuple(sorted({i for i in (*ins.inputs, *ins.outputs)
                              if last_use[i] == index and tensors[i].kind != "const"}))
        kernel = self._kernels.get(ins.op)
        if kernel is None:
            kernel = self._kernels[ins.op] = self._executor.kernel(program.op(ins))
        return Step(index, kernel, ins.inputs, ins.outputs,
                    tuple(storage_dtype(tensors[i].precision) for i in ins.outputs), kwargs,
                    frees, (index,))


def check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or not 1 <= threads <= 256):
        raise EnvironmentFault(f"threads must be an int in [1, 256], got {threads!r}")


def make_lanes(threads: int | None) -> Lanes | None:
    """The lanes a plan for ``threads`` runs on (None for one lane or the BLAS default)."""
    check_threads(threads)
    return Lanes(threads) if threads is not None and threads > 1 else None


def device_consts(program: Program, executor: Executor) -> dict:
    """The program's constants on the executor's device, read-only, by tensor id."""
    return {i: executor.from_host(_frozen(a)) for i, a in program.consts.items()}


def blas_threads(threads: int | None):
    """A context-manager factory limiting the BLAS library to ``threads`` threads while it is
    active (threadpoolctl, when installed; OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set before
    numpy is imported work without it). Exact results never depend on it."""
    if threads is None:
        return nullcontext
    controller = _controller()
    return lambda: controller.limit(limits=threads, user_api="blas")


@functools.lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the loaded BLAS libraries (found once per process)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        raise EnvironmentFault("threads= needs threadpoolctl (pip install threadpoolctl); "
                               "or set OPENBLAS_NUM_THREADS before starting Python") from None
    return ThreadpoolController()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array
