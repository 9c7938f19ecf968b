"""onnxruntime, imported on first use, and the sessions the backend runs.

Sessions run one graph at a time on the calling thread plus ``threads - 1`` intra-op threads
that never spin (they would steal the cores from the numpy steps between two sessions), and
allocate from one CPU memory arena registered in onnxruntime's environment for the whole
process (:func:`shared_arena`): it keeps the largest memory a run needed, so a run's outputs
and intermediates are not mapped and page-faulted afresh each time (the PP-OCRv4 detector's
first six convolutions, run between onnxruntime's own runs in one process: 48 to 36 ms), and
a plan's many sessions share it (ResNet-18 batch 32, peak RSS 2.3 GB with an arena per
large session, 0.7 GB shared). Where it cannot be registered, a session keeps an arena of
its own only if its tensors are large. Unless a graph computes something from constants alone (folded
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


@functools.lru_cache(maxsize=1)
def shared_arena() -> bool:
    """Whether one CPU memory arena, registered in onnxruntime's environment on first use,
    serves the backend's sessions (``session.use_env_allocators``); it grows as requested and
    keeps what it holds for the process (False: it could not be registered, e.g. another
    CPU allocator already is)."""
    rt = runtime()
    try:
        info = rt.OrtMemoryInfo("Cpu", rt.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                rt.OrtMemType.DEFAULT)
        rt.create_and_register_allocator(info, rt.OrtArenaCfg({"arena_extend_strategy": 1}))
    except Exception:
        return False
    return True


def version() -> str | None:
    rt = runtime()
    return None if rt is None else rt.__version__


def session(model: bytes, threads: int | None = None, externals: dict | None = None,
            arena: bool = False, fold: bool = False):
    """An InferenceSession of ``model`` on the CPU; ``threads``: intra-op threads (None:
    onnxruntime's default, one per core); ``externals``: {name: array} of the initializers the
    model declares external (the arrays must outlive the session); ``arena``: keep freed
    memory for the next run in an arena of the session's own (where no shared arena is); ``fold``: the model computes values
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
    if shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    if externals:
        options.add_external_initializers(
            list(externals), [rt.OrtValue.ortvalue_from_numpy(a) for a in externals.values()])
    try:
        return rt.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except MemoryError:
        raise EnvironmentFault("out of memory creating an onnxruntime session") from None
