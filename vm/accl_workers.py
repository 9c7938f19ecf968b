"""The threads behind vm.accl: ``SendReceive`` (SyncAccl's send and receive: one worker between
two bounded buffers) and ``StreamRun`` (one ``connect_streams``: a pool of workers pulling frames
from the streams and delivering each stream's outputs in input order).

Both bound what they hold (back-pressure instead of memory), end their threads when closed,
and never call a user callback while holding a lock that a ``stop()`` from that callback would
need. Their threads are named ``detvm-accl-...``.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from .errors import EnvironmentFault, TrapError


class AcclTimeoutError(EnvironmentFault, TimeoutError):
    """A send or receive found no room or no data within its timeout."""


class AcclUsageError(TrapError, RuntimeError):
    """A call MemryX answers with RuntimeError (a callback's signature, an unconnected model,
    waiting from a callback): a detvm TrapError and a RuntimeError."""


class SendReceive:
    """send/receive for SyncAccl. The worker takes a frame only while the output buffer has
    room, so at most ``depth`` frames wait in each buffer and one runs; ``put`` blocks beyond
    (back-pressure). ``close`` drops what is waiting, wakes every blocked caller with a
    TrapError and ends the worker. The worker holds ``fn`` only, never the SyncAccl, so a
    dropped SyncAccl can close it (weakref.finalize)."""

    def __init__(self, fn: Callable, depth: int):
        self._fn, self._depth = fn, depth
        self._cond = threading.Condition()
        self._inbox: deque = deque()
        self._outbox: deque = deque()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="detvm-accl-sync", daemon=True)
        self._worker.start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (
                    self._inbox and len(self._outbox) < self._depth))
                if self._closed:
                    return
                frame = self._inbox.popleft()
                self._cond.notify_all()                 # room in the input buffer
            try:
                result = (True, self._fn(frame))
            except BaseException as e:                  # re-raised by receive()
                result = (False, e)
            with self._cond:
                self._outbox.append(result)
                self._cond.notify_all()

    def put(self, frame, timeout_s: float | None, timeout_ms) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._inbox) < self._depth,
                                       timeout_s):
                raise AcclTimeoutError(f"send: the input buffer stayed full for {timeout_ms} ms")
            self._check_open("send")
            self._inbox.append(frame)
            self._cond.notify_all()

    def get(self, timeout_s: float | None, timeout_ms):
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._outbox, timeout_s):
                raise AcclTimeoutError(f"receive: no output within {timeout_ms} ms")
            self._check_open("receive")
            ok, value = self._outbox.popleft()
            self._cond.notify_all()                     # room in the output buffer
        if not ok:
            raise value
        return value

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise TrapError(f"{what}: the accelerator was shut down")

    def close(self, join: bool = True) -> None:
        with self._cond:
            self._closed = True
            self._inbox.clear()
            self._outbox.clear()
            self._cond.notify_all()
        if join and threading.current_thread() is not self._worker:
            self._worker.join()


class StreamRun:
    """One connect_streams: ``workers`` threads, each pulling the next frame from the streams
    (round-robin, under the source lock), running it, and delivering it under the sink lock,
    where each stream's outputs leave in input order. A worker pulls only when it is free, so
    at most ``workers`` frames are in flight: that is the back-pressure, and the bound of the
    reorder buffer. A frame is prepared (checked and copied) before the source lock is
    released, so the source may refill its buffer for the next call. The first error (of a
    callback, a frame or a run) stops every worker."""

    def __init__(self, prepare, fn, source, sink, streams: int, workers: int):
        self.prepare, self.fn, self.source, self.sink = prepare, fn, source, sink
        self.live = list(range(streams))
        self.turn = 0
        self.pulled = [0] * streams
        self.following = [0] * streams
        self.waiting: dict[tuple[int, int], list] = {}
        self.source_lock, self.sink_lock = threading.Lock(), threading.Lock()
        self.error_lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._work, name=f"detvm-accl-worker-{k}",
                                         daemon=True) for k in range(workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def owns(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of this run's workers (a callback is running on it)."""
        return thread in self.threads

    def _fail(self, error: BaseException) -> None:
        with self.error_lock:
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
                feeds = self.prepare(frame)
                self.turn += 1
                self.pulled[s] += 1
                return s, self.pulled[s] - 1, feeds
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
        """Ask every worker to end (a frame in flight is dropped); returns at once."""
        self.stopping.set()

    def join(self) -> None:
        for t in self.threads:
            if t.ident is not None:             # started (a stop() may come before start())
                t.join()
