"""Watching a run instruction by instruction: every instruction's input and output values and
its time, for I/O dumps and performance profiles (the seed-style APIs, vm/lite.py).

The values come from the interpreter's per-instruction path (``Plan.run(trace=...)``), the same
loop as every run; they are host arrays in each tensor's storage dtype, whatever the executor.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EnvironmentFault


@dataclass(frozen=True)
class Record:
    """One executed instruction: its index, op, attributes, named input and output arrays, and
    the seconds from the end of the previous instruction to the end of this one."""

    index: int
    op: str
    attrs: dict[str, Any]
    inputs: list[tuple[str, np.ndarray]]
    outputs: list[tuple[str, np.ndarray]]
    start: float
    seconds: float


def run_recorded(model, inputs) -> tuple[dict[str, np.ndarray], list[Record]]:
    """Run ``model`` on ``inputs``; its outputs and one :class:`Record` per instruction."""
    feeds, dims = model._check_inputs(inputs)
    inst = model.instance(**dims)                    # the fixed-shape program of this call
    program, executor = inst.program, inst.plan.executor
    values: dict[int, np.ndarray] = {i: a for i, a in program.consts.items()}
    values.update({tid: a for tid, a in zip(program.inputs, feeds)})
    records: list[Record] = []
    clock = [time.perf_counter()]
    origin = clock[0]

    def trace(step, outs) -> None:
        now = time.perf_counter()
        ins = program.code[step.index]
        for tid, value in zip(ins.outputs, outs):
            values[tid] = np.asarray(executor.to_host(value)).astype(
                program.tensors[tid].dtype, copy=False)
        named = lambda ids: [(program.tensors[t].name, values[t]) for t in ids]
        records.append(Record(step.index, ins.op, dict(ins.attrs), named(ins.inputs),
                              named(ins.outputs), clock[0] - origin, now - clock[0]))
        clock[0] = now

    outputs = model.run(dict(zip((t.name for t in model.inputs), feeds)), trace=trace)
    return outputs, records


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's little-endian bytes (C order)."""
    a = np.ascontiguousarray(array)
    return hashlib.sha256(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def write_text_dump(path, records: list[Record]) -> None:
    """Every instruction's inputs and outputs as text: one header line per instruction, one
    line per tensor with shape, dtype, min, max, sum, SHA-256 and the first values."""
    lines = []
    for r in records:
        attrs = " ".join(f"{k}={v}" for k, v in sorted(r.attrs.items()))
        lines.append(f"instruction {r.index} {r.op} {attrs}".rstrip())
        for role, tensors in (("in", r.inputs), ("out", r.outputs)):
            for name, a in tensors:
                flat = a.reshape(-1)
                stats = (f"min={int(flat.min())} max={int(flat.max())} sum={int(flat.sum(dtype=np.int64))}"
                         if flat.size else "min= max= sum=0")
                head = " ".join(str(int(v)) for v in flat[:16])
                lines.append(f"  {role} {name} shape={list(a.shape)} dtype={a.dtype.name} {stats} "
                             f"sha256={digest(a)} first=[{head}]")
    write_text(Path(path), "\n".join(lines) + "\n")


def write_binary_dump(directory, records: list[Record]) -> None:
    """Every instruction's inputs and outputs as ``.npy`` files in ``directory``, listed in
    ``index.json`` (instruction, op, role, tensor name, file)."""
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        entries = []
        for r in records:
            for role, tensors in (("in", r.inputs), ("out", r.outputs)):
                for k, (name, a) in enumerate(tensors):
                    file = f"{r.index:06d}-{role}{k}.npy"
                    np.save(root / file, a, allow_pickle=False)
                    entries.append({"instruction": r.index, "op": r.op, "role": role,
                                    "tensor": name, "file": file})
        (root / "index.json").write_text(json.dumps(entries, indent=1) + "\n")
    except OSError as e:
        raise EnvironmentFault(f"cannot write the dump to {root}: {e.strerror or e}") from None


def chrome_trace(records: list[Record], offset_s: float = 0.0, pid: int = 1) -> list[dict]:
    """Trace-event-format complete events ("ph": "X", microseconds), one per instruction."""
    return [{"name": r.op, "cat": "instruction", "ph": "X", "pid": pid, "tid": 1,
             "ts": round((offset_s + r.start) * 1e6, 3), "dur": round(r.seconds * 1e6, 3),
             "args": {"index": r.index,
                      "outputs": [f"{n} {list(a.shape)} {a.dtype.name}" for n, a in r.outputs]}}
            for r in records]


def write_chrome_trace(path, events: list[dict], metadata: dict | None = None) -> None:
    """A JSON file that chrome://tracing and Perfetto open."""
    doc = {"traceEvents": events, "displayTimeUnit": "ms", "otherData": metadata or {}}
    write_text(Path(path), json.dumps(doc) + "\n")


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise EnvironmentFault(f"cannot write {path}: {e.strerror or e}") from None
