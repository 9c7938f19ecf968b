"""onnxruntime, imported on first use, and the sessions the backend runs.

Sessions run one graph at a time on the calling thread plus ``threads - 1`` intra-op threads
that never spin (they would steal the cores from the numpy steps between two sessions), and
without a memory arena unless their tensors are large (a plan has many sessions; their arenas
would each keep their peak). Unless a graph computes something from constants alone (folded
once by onnxruntime's basic optimizations), they skip onnxruntime's graph optimizations: the
backend writes its graphs without the nodes those would remove (identities, casts to the same
type), and running them took a sixth of creating ResNet-18's sessions.
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
            arena: bool = False, fold: bool = False):
    """An InferenceSession of ``model`` on the CPU; ``threads``: intra-op threads (None:
    onnxruntime's default, one per core); ``externals``: {name: array} of the initializers the
    model declares external (the arrays must outlive the session); ``arena``: keep freed
    memory for the next run (onnxruntime's CPU arena); ``fold``: the model computes values
    from constants alone, which onnxruntime's basic optimizations fold once (else they run
    with no graph optimization: the backend's graphs have nothing else for them)."""
    rt = runtime()
    if rt is None:
        raise EnvironmentFault("the onnxruntime backend needs onnxruntime "
                               "(pip install onnxruntime)")
    options = rt.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    levels = rt.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_BASIC if fold else \
        levels.ORT_DISABLE_ALL
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
