"""onnxruntime, imported on first use, and the sessions the backend runs.

Sessions run one graph at a time on the calling thread plus ``threads - 1`` intra-op threads
that never spin (they would steal the cores from the numpy steps between two sessions), and
without a memory arena unless their tensors are large (a plan has many sessions; their arenas
would each keep their peak).
"""
from __future__ import annotations

import functools

from ..errors import EnvironmentFault


@functools.lru_cache(maxsize=1)
def runtime():
    """The onnxruntime module, or None when it cannot be imported."""
    try:
        import onnxruntime
    except Exception:                 # ImportError, or a broken native install
        return None
    return onnxruntime


def version() -> str | None:
    rt = runtime()
    return None if rt is None else rt.__version__


def session(model: bytes, threads: int | None = None, externals: dict | None = None,
            arena: bool = False):
    """An InferenceSession of ``model`` on the CPU; ``threads``: intra-op threads (None:
    onnxruntime's default, one per core); ``externals``: {name: array} of the initializers the
    model declares external (the arrays must outlive the session); ``arena``: keep freed
    memory for the next run (onnxruntime's CPU arena)."""
    rt = runtime()
    if rt is None:
        raise EnvironmentFault("the onnxruntime backend needs onnxruntime "
                               "(pip install onnxruntime)")
    options = rt.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = arena
    if externals:
        options.add_external_initializers(
            list(externals), [rt.OrtValue.ortvalue_from_numpy(a) for a in externals.values()])
    try:
        return rt.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except MemoryError:
        raise EnvironmentFault("out of memory creating an onnxruntime session") from None
