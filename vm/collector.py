"""The cyclic garbage collector paused while a model loads.

Loading makes millions of small objects (a tensor, an instruction, its tuples and dicts per
entry) and no cycles worth collecting meanwhile; the collector's passes over them cost about as
much as the decoding itself (10^5 instructions: 0.48 s with them, 0.24 s without). What a load
allocates is linear in its input, so memory stays linear without them; the cycles it leaves
(a caught exception's traceback) are collected after it.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

PAUSE = True
"""Whether loads pause the collector. CPython has one collector for the whole process: while
any load runs, other threads' cyclic garbage waits too. Set False to keep it running."""
_LOCK = threading.Lock()
_depth = 0
_restore = False


@contextmanager
def paused():
    """The collector paused while the block runs (when PAUSE); nested and concurrent blocks
    keep it paused until the last one ends, an exception ends a block as well, and a collector
    the process had disabled stays disabled."""
    global _depth, _restore
    entered = False
    try:
        if PAUSE:
            with _LOCK:
                if _depth == 0:
                    _restore = gc.isenabled()
                    gc.disable()
                _depth += 1
                entered = True
        yield
    finally:
        if entered:
            with _LOCK:
                _depth -= 1
                if _depth == 0 and _restore:
                    gc.enable()
