"""Trace hashes: what a run computed, instruction by instruction, as SHA-256 digests.

* :func:`canonical_bytes` / :func:`tensor_hash`: a tensor's canonical bytes (dtype tag, shape,
  little-endian data in C order) and their SHA-256;
* :func:`merkle_root`: the RFC 6962 Merkle tree hash over a list of digests;
* :func:`trace`: run a model through the per-instruction path of the interpreter and hash every
  instruction's outputs in their declared storage dtype (from the tensor's precision).

The hashes depend only on the integer values, the storage dtype and the shape, never on how an
executor holds them (numpy arrays, Python ints, cupy arrays, Z3 terms), so every executor on
every machine gives the same trace. docs/audit.md specifies the bytes.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InternalError, TrapError

LEAF, NODE = b"\x00", b"\x01"
"""RFC 6962 domain separation: a leaf is hashed as H(0x00 || d), a node as H(0x01 || l || r)."""
MAX_NDIM = 255


def _tag(dtype: np.dtype) -> bytes:
    """The 2-byte ASCII dtype tag: ``i`` or ``u``, then the element width in bytes."""
    if dtype.kind not in "iu" or dtype.itemsize not in (1, 2, 4, 8):
        raise TrapError(f"tensor hash: dtype {dtype} is not an integer type of 1, 2, 4 or 8 bytes")
    return f"{dtype.kind}{dtype.itemsize}".encode("ascii")


def canonical_bytes(array: Any, dtype: Any = None) -> bytes:
    """``tag || u8 ndim || ndim x u64 dims || data``, all little endian (docs/audit.md).

    ``dtype`` (default: the array's own) is the storage dtype the values are written in; every
    value must fit it exactly (a TrapError names the first one that does not).
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype if dtype is not None else array.dtype)
    tag = _tag(dtype)
    if array.ndim > MAX_NDIM:
        raise TrapError(f"tensor hash: {array.ndim} dimensions (at most {MAX_NDIM})")
    if array.dtype.kind not in "iu":
        raise TrapError(f"tensor hash: dtype {array.dtype} is not an integer type")
    data = _fitted(array, dtype).astype(dtype.newbyteorder("<"), copy=False)
    head = tag + bytes([array.ndim]) + b"".join(int(d).to_bytes(8, "little")
                                                 for d in array.shape)
    return head + np.ascontiguousarray(data).tobytes()


def _fitted(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` unchanged when every value fits ``dtype``; else a TrapError naming one."""
    if array.dtype == dtype or array.size == 0 or np.can_cast(array.dtype, dtype, "safe"):
        return array
    info = np.iinfo(dtype)
    lo, hi = int(array.min()), int(array.max())
    if lo < info.min or hi > info.max:
        flat = array.reshape(-1)
        k = int(np.flatnonzero((flat < info.min) | (flat > info.max))[0])
        raise TrapError(f"tensor hash: value {int(flat[k])} at flat index {k} does not fit "
                        f"{dtype}")
    return array


def tensor_hash(array: Any, dtype: Any = None) -> str:
    """Hex SHA-256 of :func:`canonical_bytes` (``dtype``: the storage dtype, default the
    array's own)."""
    return hashlib.sha256(canonical_bytes(array, dtype)).hexdigest()


def merkle_root(hashes: Iterable[str | bytes]) -> str:
    """Hex Merkle tree hash (RFC 6962 section 2.1) over the digests ``hashes`` (hex strings or
    32 bytes each) as the leaf data: MTH({}) = SHA-256(), MTH({d}) = SHA-256(0x00 || d), and
    for n > 1, with k the largest power of two below n,
    MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    leaves = [hashlib.sha256(LEAF + _digest(h)).digest() for h in hashes]
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    return _subtree(leaves).hex()


def _subtree(nodes: list[bytes]) -> bytes:
    if len(nodes) == 1:
        return nodes[0]
    k = 1 << ((len(nodes) - 1).bit_length() - 1)
    return hashlib.sha256(NODE + _subtree(nodes[:k]) + _subtree(nodes[k:])).digest()


def _digest(h: str | bytes) -> bytes:
    raw = bytes.fromhex(h) if isinstance(h, str) else bytes(h)
    if len(raw) != 32:
        raise TrapError(f"merkle_root: a digest must be 32 bytes, got {len(raw)}")
    return raw


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """One tensor an instruction wrote: its name, shape, storage dtype and hash. ``sha256`` is
    None when the executor produced a value outside the storage dtype (``problem`` says which;
    only a non-strict trace keeps going then). ``values`` are kept on request (int64)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str | None
    problem: str = ""
    values: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Entry:
    """One instruction of a trace: its index, op and outputs, and the seconds it took (the
    executor's kernel, measured between the interpreter's calls; not part of any hash). In a
    trace of the fast path, one step: ``covers`` lists the instructions it computed (``op``
    joins their ops with +) and ``outputs`` are the tensors it wrote."""

    index: int
    op: str
    outputs: tuple[Output, ...]
    seconds: float = field(default=0.0, compare=False)
    covers: tuple[int, ...] = ()


@dataclass
class Trace:
    """A run's trace: the model, the executor, the inputs' and outputs' hashes, one entry per
    instruction and the Merkle root over every instruction output's hash, in program order."""

    model: str
    semantics: int
    executor: str
    gas: int
    inputs: list[Output]
    outputs: list[Output]
    entries: list[Entry]
    results: dict[str, np.ndarray] = field(repr=False)
    fused: bool = False

    def leaves(self) -> list[str | None]:
        """The hashes the root is built over: each instruction's outputs, in program order."""
        return [o.sha256 for e in self.entries for o in e.outputs]

    @property
    def root(self) -> str | None:
        """:func:`merkle_root` of :meth:`leaves`; None when an output could not be hashed,
        and for a trace of the fast path (it skips intermediates: no trace root)."""
        leaves = self.leaves()
        if self.fused or any(h is None for h in leaves):
            return None
        return merkle_root(leaves)


def trace(model, inputs: Any, keep: Iterable[int | str] | str = (), strict: bool = True,
          fused: bool = False) -> Trace:
    """Run ``model`` (a vm.Model) on ``inputs`` instruction by instruction and hash every
    instruction's outputs (``model.run``'s input checks apply; the outputs are ``results``).

    ``keep``: instruction indices or tensor names (or ``"all"``) whose output values are kept
    (int64). With ``strict`` (default) a value outside its storage dtype is an InternalError
    (validation proved it cannot happen); otherwise it is recorded and the run goes on.
    ``fused``: trace the executor's fastest path instead, step by step (fused CPU steps,
    regions lowered to onnxruntime): the tensors it writes, no trace root.
    """
    feeds, dims = model._check_inputs(inputs)
    inst = model.instance(**dims)                 # the fixed-shape program of this call
    program, ex = inst.program, inst.plan.executor
    wanted = range(len(program.code)) if keep == "all" else keep
    recorder = _Recorder(program, ex, frozenset(wanted), strict)
    if fused:
        results = _run_fast(model, inst, feeds, recorder)
    else:
        results = model.run(dict(zip((t.name for t in model.inputs), feeds)), trace=recorder)
    describe = lambda ts, arrays: [_output(t.name, a, t.dtype, False, strict=True)
                                   for t, a in zip(ts, arrays)]
    return Trace(model.hash, program.semantics, ex.name, inst.analysis.gas,
                 describe(model.inputs, feeds),
                 describe(model.outputs, [results[t.name] for t in model.outputs]),
                 recorder.entries, results, fused)


def _run_fast(model, inst, feeds: list, recorder) -> dict[str, np.ndarray]:
    """``model.run`` of checked feeds on the plan's fast steps, each traced."""
    ex, program = inst.plan.executor, inst.program
    with ex.exclusive():
        device = {program.inputs[k]: ex.from_host(a) for k, a in enumerate(feeds)}
        values = inst.plan.run(device, recorder, fused=True)
        return {t.name: np.array(ex.to_host(v), dtype=t.dtype, copy=True)
                for t, v in zip(model.outputs, values)}


class _Recorder:
    """The ``trace`` callback of Plan.run: hashes each step's outputs as they are computed."""

    def __init__(self, program, executor, keep: frozenset, strict: bool):
        self.program, self.executor, self.keep, self.strict = program, executor, keep, strict
        self.entries: list[Entry] = []
        self.clock = time.perf_counter()

    def __call__(self, step, values: Sequence) -> None:
        seconds = time.perf_counter() - self.clock
        covers = tuple(step.covers) if len(step.covers) > 1 else ()
        op = "+".join(self.program.code[k].op for k in covers) or \
            self.program.code[step.index].op
        outputs = []
        for tid, value in zip(step.outputs, values):
            t = self.program.tensors[tid]
            host = np.asarray(self.executor.to_host(value))
            kept = step.index in self.keep or t.name in self.keep
            try:
                outputs.append(_output(t.name, host, t.dtype, kept, self.strict))
            except TrapError as e:
                raise InternalError(f"{self.program.describe(step.index)}: output %{t.name}: "
                                    f"{e.message}") from None
        self.entries.append(Entry(step.index, op, tuple(outputs), seconds, covers))
        self.clock = time.perf_counter()


def _output(name: str, host: np.ndarray, dtype: np.dtype, keep: bool, strict: bool) -> Output:
    values = np.array(host, dtype=np.int64) if keep else None
    try:
        digest, problem = tensor_hash(host, dtype), ""
    except TrapError as e:
        if strict:
            raise
        digest, problem = None, e.message.removeprefix("tensor hash: ")
    return Output(name, tuple(int(d) for d in host.shape), np.dtype(dtype).name, digest,
                  problem, values)


# ---------------------------------------------------------------------------------------------
# One trace per batch element
# ---------------------------------------------------------------------------------------------

def trace_rows(model, inputs: Any) -> list[Trace]:
    """One :class:`Trace` per batch element of a model with one symbol, each equal to
    :func:`trace` of that element alone (batch 1) — in one batched run.

    Every instruction reading a batched tensor is batch-parallel (vm/symbolic.py): row ``k`` of
    each batched tensor is what element ``k``'s own run computes, and a tensor without the
    symbol is the same for every element. So each element's leaves are its rows of the batched
    outputs and the shared tensors' hashes, and its root follows.
    """
    feeds, dims = model._check_inputs(inputs)
    if len(model.symbols) != 1:
        raise TrapError(f"per-element traces need a model with one symbol, "
                        f"{model.name!r} has {len(model.symbols)}")
    (symbol, n), = dims.items()
    inst = model.instance(**dims)
    gas = model.instance(**{symbol: 1}).analysis.gas
    program, ex = inst.program, inst.plan.executor
    batched = [t.symbol is not None for t in model.program.tensors]
    recorder = _RowRecorder(program, ex, batched, n)
    results = model.run(dict(zip((t.name for t in model.inputs), feeds)), trace=recorder)
    rows = lambda ts, arrays: [_split(t.name, a, t.dtype, t.symbol is not None, n)
                               for t, a in zip(ts, arrays)]
    ins = rows(model.inputs, feeds)
    outs = rows(model.outputs, [results[t.name] for t in model.outputs])
    return [Trace(model.hash, program.semantics, ex.name, gas, [o[k] for o in ins],
                  [o[k] for o in outs],
                  [Entry(e.index, e.op, tuple(o[k] for o in e.outputs), e.seconds)
                   for e in recorder.entries],
                  {t.name: (results[t.name][k:k + 1] if t.symbol else results[t.name])
                   for t in model.outputs})
            for k in range(n)]


def _split(name: str, host: np.ndarray, dtype, batched: bool, n: int) -> list[Output]:
    """``n`` Outputs: the rows of a batched tensor, or the same whole tensor ``n`` times."""
    if not batched:
        return [_output(name, host, dtype, False, strict=True)] * n
    return [_output(name, host[k:k + 1], dtype, False, strict=True) for k in range(n)]


class _RowRecorder(_Recorder):
    """The ``trace`` callback of :func:`trace_rows`: each output split into its rows."""

    def __init__(self, program, executor, batched: list[bool], n: int):
        super().__init__(program, executor, frozenset(), True)
        self.batched, self.n = batched, n

    def __call__(self, step, values: Sequence) -> None:
        seconds = time.perf_counter() - self.clock
        ins = self.program.code[step.index]
        outputs = []
        for tid, value in zip(step.outputs, values):
            t = self.program.tensors[tid]
            host = np.asarray(self.executor.to_host(value))
            try:
                outputs.append(_split(t.name, host, t.dtype, self.batched[tid], self.n))
            except TrapError as e:
                raise InternalError(f"{self.program.describe(step.index)}: output %{t.name}: "
                                    f"{e.message}") from None
        self.entries.append(Entry(step.index, ins.op, tuple(outputs), seconds))
        self.clock = time.perf_counter()
