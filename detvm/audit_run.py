"""``detvm audit``: one receipt row per input item, written to Parquet, on this machine or on
a Dask cluster (docs/audit.md).

An item is one model input set; for a model with a symbolic batch, one batch element (a chunk
of items runs as one batch and :func:`vm.audit.trace_rows` splits its trace per element, each
equal to the element's own run). Rows are computed per chunk by :func:`audit_chunk`, which runs
where the engine puts it (this process, or a Dask worker that loads the model once), and are
written in input order, part file by part file, each part written whole or not at all: a rerun
with ``resume`` skips the rows already written. The rows do not depend on the engine, the
number of workers, the chunk size or a worker lost on the way.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from vm.errors import EnvironmentFault, InternalError, TrapError

PART_ROWS = 4096
"""Rows per part file (a crash loses at most the part being gathered)."""
META_KEY = b"detvm.audit"
_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Rows (run wherever the engine puts them)
# ---------------------------------------------------------------------------------------------

def _model(data: bytes, ctx: str):
    """The model of ``data`` on ``ctx``, loaded once per process (keyed by its hash)."""
    import vm
    key = (bytes(data[-32:]), ctx)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = vm.load(bytes(data), vm.Context(ctx))
        return model


def audit_chunk(data: bytes, ctx: str, start: int, arrays: dict, sources: list,
                level: str) -> list[dict]:
    """The receipt rows of the items ``start``, ``start + 1``, ... in ``arrays`` ({input
    name: items along the first axis})."""
    from vm import receipt
    from vm.audit import trace, trace_rows
    model = _model(data, ctx)
    count = len(next(iter(arrays.values())))
    batched = {t.name: t.symbol is not None for t in model.inputs}
    if model.symbols and all(batched.values()):     # batches of at most the symbol's maximum
        step = max(model.symbols.values())
        traces = [t for lo in range(0, count, step)
                  for t in trace_rows(model, {k: a[lo:lo + step] for k, a in arrays.items()})]
    else:
        traces = [trace(model, {k: a[j:j + 1] if batched[k] else a[j]
                                for k, a in arrays.items()}) for j in range(count)]
    return [_row(start + j, sources[j], tr, receipt.dumps(receipt.make(tr, model.name, level)))
            for j, tr in enumerate(traces)]


def _row(index: int, source: str, tr, text: bytes) -> dict:
    return {"index": index, "source": source, "model": tr.model, "semantics": tr.semantics,
            "executor": tr.executor, "gas": tr.gas, "trace_root": tr.root,
            "inputs": [(o.name, o.sha256) for o in tr.inputs],
            "outputs": [(o.name, o.sha256) for o in tr.outputs],
            "receipt": text.decode("utf-8")}


def schema(meta: dict):
    import pyarrow as pa
    pairs = pa.map_(pa.string(), pa.string())
    fields = [("index", pa.int64()), ("source", pa.string()), ("model", pa.string()),
              ("semantics", pa.int32()), ("executor", pa.string()), ("gas", pa.int64()),
              ("trace_root", pa.string()), ("inputs", pairs), ("outputs", pairs),
              ("receipt", pa.string())]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


# ---------------------------------------------------------------------------------------------
# The Parquet dataset: part files in input order
# ---------------------------------------------------------------------------------------------

class Sink:
    """Rows arriving in any order, written in input order as part files
    ``part-<first>-<end>.parquet`` (atomic: written aside, then renamed)."""

    def __init__(self, path: Path, meta: dict, resume: bool, part_rows: int | None = None):
        self.path, self.meta = Path(path), meta
        self.part_rows = part_rows or PART_ROWS
        self.schema = schema(meta)
        self.done = self._prepare(resume)
        self.next, self.pending, self.buffer = self.done, {}, []

    def _prepare(self, resume: bool) -> int:
        if self.path.exists() and not self.path.is_dir():
            raise EnvironmentFault(f"{self.path} exists and is not a directory")
        if self.path.exists() and any(self.path.iterdir()) and not resume:
            raise EnvironmentFault(f"{self.path} already holds rows: pass --resume to go on, "
                                   "or choose another output")
        self.path.mkdir(parents=True, exist_ok=True)
        for stray in self.path.glob(".part-*"):
            stray.unlink()
        return written_rows(self.path, self.meta)

    def add(self, start: int, rows: list[dict]) -> None:
        self.pending[start] = rows
        while self.next in self.pending:
            rows = self.pending.pop(self.next)
            self.buffer += rows
            self.next += len(rows)
            if len(self.buffer) >= self.part_rows:
                self.flush()

    def finish(self, count: int) -> None:
        """Write the last part; InternalError unless every row up to ``count`` arrived."""
        if self.pending or self.next != count:
            raise InternalError(f"the audit ended at row {self.next} of {count} with "
                                f"{len(self.pending)} chunks out of order")
        self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self.buffer:
            return
        first, end = self.buffer[0]["index"], self.buffer[-1]["index"] + 1
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        final = self.path / f"part-{first:012d}-{end:012d}.parquet"
        aside = self.path / f".{final.name}"
        try:
            pq.write_table(table, aside)
            os.replace(aside, final)
        except OSError as e:
            raise EnvironmentFault(f"cannot write {final}: {e.strerror or e}") from None
        self.buffer = []


def parts(path: Path) -> list[tuple[int, int, Path]]:
    """(first, end, file) of every part file, by first index."""
    out = []
    for p in Path(path).glob("part-*.parquet"):
        try:
            first, end = (int(x) for x in p.stem.split("-")[1:3])
        except ValueError:
            raise EnvironmentFault(f"{p}: not a part file of detvm audit") from None
        out.append((first, end, p))
    return sorted(out)


def written_rows(path: Path, meta: dict) -> int:
    """How many rows (from index 0, contiguous) the parts hold; EnvironmentFault when they
    belong to another audit (model, inputs, executor, level) or leave a gap."""
    import pyarrow.parquet as pq
    at = 0
    for first, end, p in parts(path):
        if first != at:
            raise EnvironmentFault(f"{path}: rows {at} to {first - 1} are missing before {p.name}")
        found = pq.read_schema(p).metadata or {}
        theirs = json.loads(found.get(META_KEY, b"{}"))
        if theirs != meta:
            diff = sorted(k for k in set(meta) | set(theirs) if meta.get(k) != theirs.get(k))
            raise EnvironmentFault(f"{p.name} belongs to another audit ({', '.join(diff)} "
                                   f"differ): choose another output")
        at = end
    return at


def audit_root(path: Path) -> tuple[int, str]:
    """(rows, Merkle root over the SHA-256 of every row's receipt, in index order): one digest
    of the whole audit, the same for every engine."""
    import pyarrow.parquet as pq
    from vm.audit import merkle_root
    digests = []
    for _, _, p in parts(path):
        for text in pq.read_table(p, columns=["receipt"]).column("receipt").to_pylist():
            digests.append(hashlib.sha256(text.encode("utf-8")).hexdigest())
    return len(digests), merkle_root(digests)


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------

def run_local(data: bytes, ctx: str, chunks: Iterator, level: str, sink: Sink,
              progress: Callable[[int], None]) -> None:
    for start, arrays, sources in chunks:
        rows = audit_chunk(data, ctx, start, arrays, sources, level)
        sink.add(start, rows)
        progress(len(rows))


def run_dask(client, data: bytes, ctx: str, chunks: Iterator, level: str, sink: Sink,
             progress: Callable[[int], None], window: int) -> None:
    """Chunks submitted as tasks, at most ``window`` in flight; a lost worker's tasks run
    again elsewhere (Dask), and each chunk's rows reach the sink once."""
    from distributed import as_completed
    model = client.scatter(data, broadcast=True, hash=False)
    futures = {}

    def submit(item):
        start, arrays, sources = item
        f = client.submit(audit_chunk, model, ctx, start, arrays, sources, level,
                          key=f"detvm-audit-{data[-32:].hex()[:16]}-{start}", pure=False)
        futures[f] = start
        return f

    source = iter(chunks)
    running = as_completed([submit(c) for c in itertools.islice(source, window)])
    for f in running:
        try:
            rows = f.result()
        except Exception as e:        # a task failing for good (KilledWorker, a detvm error)
            raise _dask_error(e, futures[f]) from None
        sink.add(futures.pop(f), rows)
        progress(len(rows))
        nxt = next(source, None)
        if nxt is not None:
            running.add(submit(nxt))


def _dask_error(e: Exception, start: int) -> Exception:
    from vm.errors import DetvmError
    if isinstance(e, DetvmError):
        return e
    return EnvironmentFault(f"the chunk from item {start} failed on the cluster: "
                            f"{type(e).__name__}: {e} (rerun with --resume)")


def local_cluster(workers: int):
    """A LocalCluster of ``workers`` processes, one thread each, one BLAS thread each."""
    import logging

    from distributed import Client, LocalCluster
    if workers < 1:
        raise TrapError("--workers must be at least 1")
    one = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    # no dashboard; the scheduler's HTTP routes on a free loopback port (its default, 8787,
    # is often taken: another cluster, with a warning)
    http = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, scheduler_kwargs=http,
                           silence_logs=logging.ERROR, env=one)
    return cluster, Client(cluster)
