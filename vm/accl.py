"""MemryX's accelerator API (``memryx``: SyncAccl, AsyncAccl, MultiStreamAsyncAccl) on detvm.

    accl = AsyncAccl("model.dvm")               # or a vm.Model, or a list of models
    accl.connect_input(frames)                  # frames() -> array(s), None at the end
    accl.connect_output(show)                   # show(*outputs), in input order
    accl.wait()

A thin layer over vm.Model: frames are pipelined through worker threads (``stream_workers``),
each pulling a frame only when it is free, so a fast producer is never read ahead of the
workers (back-pressure) and memory stays bounded; the outputs of each stream arrive in input order and are byte-identical to sequential
``Model.run`` calls, whatever the interleaving. An exception in a user callback or a run stops
the pipeline and is re-raised by ``wait()``; a callback returning None (or raising
StopIteration) ends its stream. Timeouts (milliseconds, as MemryX) raise
:class:`AcclTimeoutError`, both a detvm EnvironmentFault and a TimeoutError.
"""
from __future__ import annotations

import inspect
import queue
import threading
from typing import Any, Callable

import numpy as np

from .errors import EnvironmentFault, TrapError
from .loader import load
from .model import Model
from .pipeline import Pipeline

QUEUE_DEPTH = 2
"""Frames waiting in a SyncAccl's input buffer; ``send`` blocks beyond it."""


class AcclTimeoutError(EnvironmentFault, TimeoutError):
    """A send or receive found no room or no data within its timeout."""


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

    def run(self, k: int, frame) -> list[np.ndarray]:
        """One frame through the chain: the outputs in port order."""
        runner = self.runners[k]
        outputs = runner.run(_feeds(runner, frame))
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
        self._pipes: dict[int, _Pipeline] = {}

    def run(self, inputs, model_idx: int = 0):
        """The outputs of one frame (a list, in port order), or a list of them for a list of
        frames (a doubly nested list, or a list of single-input arrays)."""
        k = self.models.index(model_idx)
        many = isinstance(inputs, list) and bool(inputs) and (
            isinstance(inputs[0], (list, tuple)) or len(self.models.runners[k].inputs) == 1)
        if many:
            return [self.models.run(k, frame) for frame in inputs]
        return self.models.run(k, inputs)

    def send(self, data, model_idx: int = 0, timeout: int | None = None) -> None:
        """Queue a frame; block (at most ``timeout`` ms) while the input buffer is full."""
        self._pipe(model_idx).put(data, timeout)

    def receive(self, model_idx: int = 0, timeout: int | None = None) -> list[np.ndarray]:
        """The outputs of the oldest frame sent; block (at most ``timeout`` ms) until ready."""
        return self._pipe(model_idx).get(timeout)

    def _pipe(self, model_idx: int) -> "_Pipeline":
        k = self.models.index(model_idx)
        if k not in self._pipes:
            self._pipes[k] = _Pipeline(lambda frame: self.models.run(k, frame))
        return self._pipes[k]

    def shutdown(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()


_CLOSE = object()
"""Tells a SyncAccl worker to end (a caller's frame can never be it)."""


class _Pipeline:
    """send/receive for SyncAccl: one worker between two bounded queues."""

    def __init__(self, fn: Callable):
        self.inbox: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.outbox: queue.Queue = queue.Queue()
        self.fn = fn
        self.worker = threading.Thread(target=self._loop, daemon=True)
        self.worker.start()

    def _loop(self) -> None:
        while (item := self.inbox.get()) is not _CLOSE:
            try:
                self.outbox.put((True, self.fn(item)))
            except BaseException as e:
                self.outbox.put((False, e))

    def put(self, frame, timeout) -> None:
        if frame is None:
            raise TrapError("send: no data (a frame is an array or a sequence of arrays)")
        try:
            self.inbox.put(frame, timeout=_seconds(timeout))
        except queue.Full:
            raise AcclTimeoutError(f"send: the input buffer stayed full for {timeout} ms") \
                from None

    def get(self, timeout):
        try:
            ok, value = self.outbox.get(timeout=_seconds(timeout))
        except queue.Empty:
            raise AcclTimeoutError(f"receive: no output within {timeout} ms") from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self.inbox.put(_CLOSE)
        self.worker.join()


def _seconds(timeout_ms) -> float | None:
    if timeout_ms is None:
        return None
    if not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool) or timeout_ms < 0:
        raise TrapError(f"timeout must be a number of milliseconds >= 0, got {timeout_ms!r}")
    return timeout_ms / 1000


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
        self._runs: list[_Run] = []

    def connect_streams(self, input_callback: Callable, output_callback: Callable,
                        stream_count: int, model_idx: int = 0) -> None:
        """Start ``stream_count`` streams through model ``model_idx``."""
        k = self.models.index(model_idx)
        if not isinstance(stream_count, int) or isinstance(stream_count, bool) or stream_count < 1:
            raise TrapError(f"stream_count must be a positive int, got {stream_count!r}")
        _check_signature(input_callback, "input_callback", 1)
        _check_signature(output_callback, "output_callback", 1 + self.models.outputs(k))
        self._runs.append(_Run(lambda frame: self.models.run(k, frame), input_callback,
                               output_callback, stream_count, self.workers))

    def wait(self) -> None:
        """Block until every stream has ended and its outputs were delivered; re-raise the
        first exception of a callback or a run."""
        if not self._runs:
            raise TrapError("wait: no input and output connected")
        for run in self._runs:
            run.join()
        errors = [run.error for run in self._runs if run.error is not None]
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop every stream now (frames in flight are dropped) and wait for the threads."""
        for run in self._runs:
            run.stop()
        for run in self._runs:
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
            raise TrapError("wait: a model's input or output is left unconnected")
        super().wait()


class _Run:
    """One connect_streams: ``workers`` threads, each pulling the next frame from the streams
    (round-robin, under the source lock), running it, and delivering it under the sink lock,
    where each stream's outputs leave in input order. A worker pulls only when it is free, so
    at most ``workers`` frames are in flight: that is the back-pressure, and the bound of the
    reorder buffer."""

    def __init__(self, fn, source, sink, streams: int, workers: int):
        self.fn, self.source, self.sink = fn, source, sink
        self.live = list(range(streams))
        self.turn = 0
        self.pulled = [0] * streams
        self.following = [0] * streams
        self.waiting: dict[tuple[int, int], list] = {}
        self.source_lock, self.sink_lock = threading.Lock(), threading.Lock()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.stopping.set()

    def _pull(self):
        """The next (stream, number, frame), or None when every stream has ended."""
        with self.source_lock:
            while self.live and not self.stopping.is_set():
                s = self.live[self.turn % len(self.live)]
                try:
                    frame = self.source(s)
                except StopIteration:
                    frame = None
                if frame is None:
                    self.live.remove(s)
                    continue
                self.turn += 1
                self.pulled[s] += 1
                return s, self.pulled[s] - 1, frame
            return None

    def _deliver(self, s: int, n: int, outputs: list) -> None:
        with self.sink_lock:
            self.waiting[(s, n)] = outputs
            while (s, self.following[s]) in self.waiting and not self.stopping.is_set():
                self.sink(s, *self.waiting.pop((s, self.following[s])))
                self.following[s] += 1

    def _work(self) -> None:
        try:
            while (item := self._pull()) is not None:
                s, n, frame = item
                self._deliver(s, n, self.fn(frame))
        except BaseException as e:
            self._fail(e)

    def stop(self) -> None:
        self.stopping.set()

    def join(self) -> None:
        for t in self.threads:
            t.join()


def _check_signature(fn, what: str, count: int) -> None:
    """The callback must accept ``count`` positional arguments (MemryX's rule; ``*outputs``
    accepts any number)."""
    if not callable(fn):
        raise TrapError(f"{what}: expected a callable, got {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return                              # a builtin without a signature: trust it
    try:
        signature.bind(*([None] * count))
    except TypeError:
        raise TrapError(f"{what} must accept {count} positional argument(s), its signature is "
                        f"{signature}") from None


__all__ = ["SyncAccl", "AsyncAccl", "MultiStreamAsyncAccl", "AcclTimeoutError"]
