"""Lookup tables of float islands, computed by onnxruntime (the jobs come from islands.py).

A job is a small ONNX graph cut from the model: the island's nodes (copied), its
QuantizeLinear (or the QLinear* node itself), and as graph inputs the 8-bit tensors it reads.
Every job of a model becomes one part of a single graph, which one onnxruntime session with
its default optimizations evaluates on every input value: the session fuses each part as it
fuses the island in the model (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat...), so
the table holds exactly what onnxruntime computes there, on the machine class that builds it.

Binary tables follow the model's call pattern: when one argument is broadcast along the
innermost axis (a per-span scalar), onnxruntime's QLinearAdd takes another code path that
rounds differently, so the job's inputs are shaped to take the same path (``layout``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from vm.errors import InvalidError

from .graph import optional_module

LAYOUTS = ("unary", "flat", "rows_a", "rows_b", "concat")
"""unary: one argument; flat: two arguments of equal shapes; rows_a / rows_b: the first /
second argument is a scalar per innermost span; concat: one table per Concat input."""


@dataclass
class Feed:
    """A graph input of a job: the argument's integer codes; or (``scale`` set) the floats
    ``(code - zero) * scale`` of type ``float_type``, which the model's own QuantizeLinear
    turns back into exactly those codes; or (``lookup`` set) ``lookup[code]``: the distinct
    values of a float constant the island reads."""

    name: str
    scale: float | None = None
    zero: int = 0
    float_type: str = "float32"
    lookup: np.ndarray | None = None

    def value(self, codes: np.ndarray, dtype: str) -> np.ndarray:
        if self.lookup is not None:
            return self.lookup[codes]
        if self.scale is None:
            return codes.astype(dtype)
        t = np.dtype(self.float_type).type
        return (codes - self.zero).astype(self.float_type) * t(self.scale)


@dataclass
class Arg:
    """One table argument: the codes low .. low + count - 1 of ONNX type ``dtype``, fed to
    every graph input in ``feeds``."""

    dtype: str | None
    low: int
    count: int
    feeds: list[Feed] = field(default_factory=list)

    def values(self) -> np.ndarray:
        return np.arange(self.low, self.low + self.count, dtype=np.int64)


@dataclass
class Job:
    """One island: ``nodes`` (NodeProtos, in order) compute the integer tensor ``output`` from
    the graph inputs of ``args``; ``consts`` are its initializers; ``targets`` the detvm
    constants its tables fill (one; a Concat: one per argument). A job onnxruntime fuses into
    one QLinearAdd has ``add``: the argument at its input 0 and at its input 1; ``shapes``:
    the model's shapes of the arguments (pattern.py)."""

    where: str
    nodes: list
    consts: dict
    args: list[Arg]
    output: str
    layout: str
    targets: list[int]
    add: tuple | None = None
    shapes: tuple = ()

    def feeds(self) -> dict[str, np.ndarray]:
        """The value of every graph input of this job (see LAYOUTS)."""
        vals = [a.values() for a in self.args]
        if self.layout == "flat":
            n, m = len(vals[0]), len(vals[1])
            vals = [np.repeat(vals[0], m), np.tile(vals[1], n)]
        elif self.layout == "rows_a":
            n, m = len(vals[0]), len(vals[1])
            vals = [vals[0].reshape(n, 1), np.tile(vals[1], (n, 1))]
        elif self.layout == "rows_b":
            n, m = len(vals[0]), len(vals[1])
            vals = [np.tile(vals[0], (m, 1)), vals[1].reshape(m, 1)]
        return {f.name: f.value(v, a.dtype) for a, v in zip(self.args, vals) for f in a.feeds}

    def tables(self, out: np.ndarray) -> list[np.ndarray]:
        """The tables of this job from its output."""
        flat = np.asarray(out).reshape(-1).astype(np.int64)
        counts = [a.count for a in self.args]
        if self.layout == "unary":
            return [flat[:counts[0]]]
        if self.layout == "concat":
            ends = np.cumsum(counts)
            return [flat[end - n:end] for n, end in zip(counts, ends)]
        n, m = counts
        if self.layout == "rows_b":
            return [flat[:n * m].reshape(m, n).T.copy()]
        return [flat[:n * m].reshape(n, m)]


CACHE_JOBS = 4096
"""Tables kept per process, by job: a model imported at two batches (a symbolic batch,
compiler/onnx/batch.py) evaluates its islands once."""
_CACHE: dict[bytes, list[np.ndarray]] = {}


def evaluate(jobs: list[Job], opset: int) -> list[list[np.ndarray]]:
    """The tables of every job: those not computed before in this process from one
    onnxruntime session (default optimizations)."""
    keys = [_key(job, opset) for job in jobs]
    todo = {key: job for key, job in zip(keys, jobs) if key not in _CACHE}
    for key, tables in zip(todo, _run(list(todo.values()), opset)):
        if len(_CACHE) >= CACHE_JOBS:
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = tables
    return [_CACHE[key] for key in keys]


def _key(job: Job, opset: int) -> bytes:
    """The identity of a job: its nodes, constants, arguments and layout."""
    digest = hashlib.sha256(f"{opset}|{job.layout}|{job.output}".encode())
    for proto in job.nodes:
        digest.update(proto.SerializeToString())
    for name, value in sorted(job.consts.items()):
        value = np.ascontiguousarray(value)
        digest.update(f"{name}|{value.dtype}|{value.shape}".encode() + value.tobytes())
    for arg in job.args:
        digest.update(f"{arg.dtype}|{arg.low}|{arg.count}".encode())
        for f in arg.feeds:
            digest.update(f"{f.name}|{f.scale!r}|{f.zero}|{f.float_type}".encode())
            if f.lookup is not None:
                digest.update(np.ascontiguousarray(f.lookup).tobytes())
    return digest.digest()


def _run(jobs: list[Job], opset: int) -> list[list[np.ndarray]]:
    if not jobs:
        return []
    ort = optional_module("onnxruntime", "Building the tables of float islands")
    model = _model(jobs, opset)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {f"{k}/{name}": v for k, job in enumerate(jobs)
                 for name, v in job.feeds().items()}
        outs = session.run([f"{k}/{job.output}" for k, job in enumerate(jobs)], feeds)
    except Exception as e:          # onnxruntime raises its own exception types
        raise InvalidError(f"onnxruntime cannot evaluate the float islands "
                           f"({', '.join(j.where for j in jobs[:3])}"
                           f"{', ...' if len(jobs) > 3 else ''}): {e}") from None
    return [job.tables(out) for job, out in zip(jobs, outs)]


def _model(jobs: list[Job], opset: int):
    onnx = optional_module("onnx", "Building the tables of float islands")
    from onnx import helper, numpy_helper
    nodes, inits, inputs, outputs = [], [], [], []
    for k, job in enumerate(jobs):
        rename = lambda name: f"{k}/{name}" if name else ""
        for n, proto in enumerate(job.nodes):
            copy = onnx.NodeProto()
            copy.CopyFrom(proto)
            copy.name = f"{k}/{n}/{proto.name or proto.op_type}"
            copy.input[:] = [rename(i) for i in proto.input]
            copy.output[:] = [rename(o) for o in proto.output]
            nodes.append(copy)
        inits += [numpy_helper.from_array(np.asarray(v), rename(name))
                  for name, v in job.consts.items()]
        for name, value in job.feeds().items():
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            inputs.append(helper.make_tensor_value_info(rename(name), elem, value.shape))
        outputs.append(helper.make_empty_tensor_value_info(rename(job.output)))
    graph = helper.make_graph(nodes, "float-islands", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets, True))
