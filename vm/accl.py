"""MemryX's accelerator API (``memryx``: SyncAccl, AsyncAccl, MultiStreamAsyncAccl) on detvm.

    accl = AsyncAccl("model.dvm")               # or a vm.Model, or a list of models
    accl.connect_input(frames)                  # frames() -> array(s), None at the end
    accl.connect_output(show)                   # show(*outputs), in input order
    accl.wait()

A thin layer over vm.Model: frames are pipelined through worker threads (``stream_workers``),
each pulling a frame only when it is free, so a fast producer is never read ahead of the
workers (back-pressure) and memory stays bounded; the outputs of each stream arrive in input
order and are byte-identical to sequential ``Model.run`` calls, whatever the interleaving. An
exception in a user callback or a run stops the pipeline and is re-raised by ``wait()`` (once);
a callback returning None (or raising StopIteration) ends its stream; ``stop()`` may be called
from a callback. Timeouts (milliseconds, as MemryX) raise :class:`AcclTimeoutError`, both a
detvm EnvironmentFault and a TimeoutError; the misuses MemryX answers with RuntimeError raise
:class:`AcclUsageError`, both a TrapError and a RuntimeError. The threads: vm/accl_workers.py.
"""
from __future__ import annotations

import inspect
import numbers
import threading
import weakref
from typing import Any, Callable

import numpy as np

from .accl_workers import AcclTimeoutError, AcclUsageError, SendReceive, StreamRun
from .errors import TrapError
from .loader import load
from .model import Model
from .pipeline import Pipeline

QUEUE_DEPTH = 2
"""Frames a SyncAccl's input buffer and its output buffer each hold; with nothing received,
``send`` blocks (back-pressure) once both are full."""


class _Models:
    """The model(s) an accelerator object runs, each with optional pre/post models chained
    around it (a vm.pipeline.Pipeline: links checked when a stage is set)."""

    def __init__(self, dfp, kwargs: dict):
        self.kwargs = kwargs
        items = list(dfp) if isinstance(dfp, (list, tuple)) else [dfp]
        if not items:
            raise TrapError("no model given")
        self.main = [self._load(m) for m in items]
        self.pre: list[Model | None] = [None] * len(items)
        self.post: list[Model | None] = [None] * len(items)
        self.runners: list[Model | Pipeline] = list(self.main)

    def _load(self, source) -> Model:
        return source if isinstance(source, Model) else load(source, **self.kwargs)

    def index(self, model_idx) -> int:
        if not isinstance(model_idx, int) or isinstance(model_idx, bool) \
                or not 0 <= model_idx < len(self.main):
            raise TrapError(f"model_idx {model_idx!r} out of range ({len(self.main)} models)")
        return model_idx

    def set(self, k: int, role: str, source) -> None:
        getattr(self, role)[k] = self._load(source)
        stages = [(r, m) for r, m in (("pre", self.pre[k]), ("main", self.main[k]),
                                      ("post", self.post[k])) if m is not None]
        self.runners[k] = Pipeline(stages) if len(stages) > 1 else self.main[k]

    def prepare(self, k: int, frame) -> dict[str, np.ndarray]:
        """A frame checked (count, shape, dtype, precision: TrapError) and copied, as MemryX
        copies it when it is handed over: the caller may refill its buffer at once."""
        runner = self.runners[k]
        first = runner.stages[0][1] if isinstance(runner, Pipeline) else runner
        arrays, _ = first._check_inputs(_feeds(runner, frame))     # copies (astype)
        return {t.name: a for t, a in zip(first.inputs, arrays)}

    def run(self, k: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """A prepared frame through the chain: the outputs in port order."""
        runner = self.runners[k]
        outputs = runner.run(feeds)
        return [outputs[t.name] for t in runner.outputs]

    def outputs(self, k: int) -> int:
        """How many arrays a frame's result has."""
        return len(self.runners[k].outputs)

    def ports(self, k: int, inputs: bool) -> dict[int, str]:
        infos = self.runners[k].inputs if inputs else self.runners[k].outputs
        return dict(enumerate(t.name for t in infos))


def _feeds(model, frame) -> dict[str, Any]:
    """A frame (one array, or a sequence in port order) as the model's input dict."""
    arrays = list(frame) if isinstance(frame, (list, tuple)) else [frame]
    if len(arrays) != len(model.inputs):
        raise TrapError(f"model {model.name!r} takes {len(model.inputs)} input(s), "
                        f"got {len(arrays)}")
    return {t.name: a for t, a in zip(model.inputs, arrays)}


class _Base:
    def __init__(self, dfp, group_id: int = 0, **kwargs):
        self.models = _Models(dfp, kwargs)
        self.group_id = group_id

    def inport_assignment(self, model_idx: int = 0) -> dict[int, str]:
        return self.models.ports(self.models.index(model_idx), inputs=True)

    def outport_assignment(self, model_idx: int = 0) -> dict[int, str]:
        return self.models.ports(self.models.index(model_idx), inputs=False)

    def set_preprocessing_model(self, model_or_path, model_idx: int = 0) -> None:
        """Run this (integer) model on every frame before the main model."""
        self.models.set(self.models.index(model_idx), "pre", model_or_path)

    def set_postprocessing_model(self, model_or_path, model_idx: int = 0) -> None:
        """Run this (integer) model on the main model's outputs."""
        self.models.set(self.models.index(model_idx), "post", model_or_path)


class SyncAccl(_Base):
    """Sequential use: ``run`` a frame (or a list of frames), or ``send`` and ``receive``."""

    def __init__(self, dfp, group_id: int = 0, **kwargs):
        super().__init__(dfp, group_id, **kwargs)
        self._pipes: dict[int, SendReceive] = {}
        self._pipes_lock = threading.Lock()
        self._shut = False
        weakref.finalize(self, _close_pipes, self._pipes, self._pipes_lock, False)

    def run(self, inputs, model_idx: int = 0):
        """The outputs of one frame (a list, in port order), or a list of them for a list of
        frames (a doubly nested list, or a list of single-input arrays)."""
        k = self.models.index(model_idx)
        many = isinstance(inputs, list) and bool(inputs) and (
            isinstance(inputs[0], (list, tuple)) or len(self.models.runners[k].inputs) == 1)
        if many:
            return [self.models.run(k, self.models.prepare(k, frame)) for frame in inputs]
        return self.models.run(k, self.models.prepare(k, inputs))

    def send(self, data, model_idx: int = 0, timeout: int | None = None) -> None:
        """Queue a frame; block (at most ``timeout`` ms) while the buffers are full (nothing
        received)."""
        seconds = _seconds(timeout)
        if data is None:
            raise TrapError("send: no data (a frame is an array or a sequence of arrays)")
        pipe = self._pipe(model_idx)
        pipe.put(self.models.prepare(self.models.index(model_idx), data), seconds, timeout)

    def receive(self, model_idx: int = 0, timeout: int | None = None) -> list[np.ndarray]:
        """The outputs of the oldest frame sent; block (at most ``timeout`` ms) until ready."""
        seconds = _seconds(timeout)
        return self._pipe(model_idx).get(seconds, timeout)

    def _pipe(self, model_idx: int) -> SendReceive:
        k = self.models.index(model_idx)
        with self._pipes_lock:                  # the first sends may race from several threads
            if self._shut:
                raise TrapError("the accelerator was shut down")
            if k not in self._pipes:
                models = self.models            # the worker must not hold self (finalize)
                self._pipes[k] = SendReceive(lambda feeds: models.run(k, feeds), QUEUE_DEPTH)
            return self._pipes[k]

    def shutdown(self) -> None:
        """End the send/receive workers: frames not received are dropped; a blocked ``send``
        or ``receive``, and every later one, raises a TrapError (``run`` still works)."""
        with self._pipes_lock:
            self._shut = True
        _close_pipes(self._pipes, self._pipes_lock, True)


def _close_pipes(pipes: dict, lock: threading.Lock, join: bool) -> None:
    with lock:
        closing = list(pipes.values())
        pipes.clear()
    for pipe in closing:
        pipe.close(join)


def _seconds(timeout_ms) -> float | None:
    """A timeout in milliseconds (any real number, numpy's too) as seconds; None, or one past
    what the platform can wait (``inf``), waits without limit."""
    if timeout_ms is None:
        return None
    if not isinstance(timeout_ms, numbers.Real) or isinstance(timeout_ms, (bool, np.bool_)) \
            or not timeout_ms >= 0:                     # NaN fails this too
        raise TrapError(f"timeout must be a number of milliseconds >= 0, got {timeout_ms!r}")
    seconds = float(timeout_ms) / 1000
    return None if seconds > threading.TIMEOUT_MAX else seconds


class MultiStreamAsyncAccl(_Base):
    """Several input streams through one model: ``input_callback(stream_idx)`` gives a stream's
    next frame (None at its end), ``output_callback(stream_idx, *outputs)`` gets its outputs,
    in order. ``stream_workers`` threads run the model (default 2)."""

    def __init__(self, dfp, group_id: int = 0, stream_workers: int | None = None, **kwargs):
        super().__init__(dfp, group_id, **kwargs)
        workers = 2 if stream_workers is None else stream_workers
        if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 256:
            raise TrapError(f"stream_workers must be an int in [1, 256], got {stream_workers!r}")
        self.workers = workers
        self._runs: list[StreamRun] = []
        """The runs started and not yet waited for."""
        self._runs_lock = threading.Lock()
        self._connected = False

    def connect_streams(self, input_callback: Callable, output_callback: Callable,
                        stream_count: int, model_idx: int = 0) -> None:
        """Start ``stream_count`` streams through model ``model_idx``."""
        k = self.models.index(model_idx)
        if not isinstance(stream_count, int) or isinstance(stream_count, bool) or stream_count < 1:
            raise TrapError(f"stream_count must be a positive int, got {stream_count!r}")
        _check_signature(input_callback, "input_callback", 1)
        _check_signature(output_callback, "output_callback", 1 + self.models.outputs(k))
        run = StreamRun(lambda frame: self.models.prepare(k, frame),
                        lambda feeds: self.models.run(k, feeds), input_callback, output_callback,
                        stream_count, self.workers)
        with self._runs_lock:                   # before it starts: its callbacks may stop()
            self._runs.append(run)
        self._connected = True
        run.start()

    def wait(self) -> None:
        """Block until every stream has ended and its outputs were delivered; re-raise the
        first exception of a callback or a run (each error once: a second ``wait`` passes).
        From a callback it is an error (it would wait for itself)."""
        if not self._connected:
            raise AcclUsageError("wait: no input and output connected")
        runs = list(self._runs)
        if any(run.owns(threading.current_thread()) for run in runs):
            raise AcclUsageError("wait() was called from a callback: it would wait for the "
                                 "callback itself to end (call stop() there)")
        for run in runs:
            run.join()
        with self._runs_lock:                   # a callback may connect meanwhile
            self._runs = [run for run in self._runs if run not in runs]
        errors = [run.error for run in runs if run.error is not None]
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop every stream now (frames in flight are dropped) and wait for the threads. From a
        callback it only asks them to stop (the callback's own thread ends when it returns)."""
        runs = list(self._runs)
        for run in runs:
            run.stop()
        if not any(run.owns(threading.current_thread()) for run in runs):
            for run in runs:
                run.join()


class AsyncAccl(MultiStreamAsyncAccl):
    """One input stream: ``connect_input(frames)`` and ``connect_output(show)``; the pipeline
    starts once both are connected."""

    def __init__(self, dfp, group_id: int = 0, stream_workers: int | None = None, **kwargs):
        super().__init__(dfp, group_id, stream_workers, **kwargs)
        self._pending: dict[int, dict[str, Callable]] = {}

    def connect_input(self, callback: Callable, model_idx: int = 0) -> None:
        _check_signature(callback, "connect_input callback", 0)
        self._connect(model_idx, "input", callback)

    def connect_output(self, callback: Callable, model_idx: int = 0) -> None:
        _check_signature(callback, "connect_output callback",
                         self.models.outputs(self.models.index(model_idx)))
        self._connect(model_idx, "output", callback)

    def _connect(self, model_idx: int, role: str, callback: Callable) -> None:
        k = self.models.index(model_idx)
        pair = self._pending.setdefault(k, {})
        pair[role] = callback
        if len(pair) == 2:
            source, sink = pair["input"], pair["output"]
            del self._pending[k]
            self.connect_streams(lambda _: source(), lambda _, *outs: sink(*outs), 1, k)

    def wait(self) -> None:
        if self._pending:
            raise AcclUsageError("wait: a model's input or output is left unconnected")
        super().wait()


def _check_signature(fn, what: str, count: int) -> None:
    """The callback must accept ``count`` positional arguments (MemryX's rule; ``*outputs``
    accepts any number)."""
    if not callable(fn):
        raise AcclUsageError(f"{what}: expected a callable, got {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return                              # a builtin without a signature: trust it
    try:
        signature.bind(*([None] * count))
    except TypeError:
        raise AcclUsageError(f"{what} must accept {count} positional argument(s), its "
                             f"signature is {signature}") from None


__all__ = ["SyncAccl", "AsyncAccl", "MultiStreamAsyncAccl", "AcclTimeoutError", "AcclUsageError"]
