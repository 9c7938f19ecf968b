"""Receipts: what a run computed, as canonical JSON that compares byte for byte across machines.

A receipt names the detvm version, the semantics version, the model (SHA-256 of its .dvm bytes),
the executor, the gas, every input's and output's tensor hash and the trace: its Merkle root,
and at level ``hashes`` (the default) every instruction's output hashes, at level ``full`` their
values too. The schema and the canonical form are specified in docs/audit.md.

:func:`make` builds one from a :class:`vm.audit.Trace`, :func:`dumps` writes its canonical
bytes, :func:`loads` reads and checks one (hostile input: a MalformedError naming the field),
:func:`compare` checks a fresh trace against it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audit import Trace
from .errors import MalformedError
from .version import __version__

SCHEMA = "detvm-receipt"
VERSION = 1
LEVELS = ("root", "hashes", "full")
MAX_BYTES = 1 << 31
"""Largest receipt :func:`loads` reads."""


def make(trace: Trace, name: str = "", level: str = "hashes") -> dict:
    """The receipt of ``trace`` (``name``: the model's name) at ``level`` (root, hashes, full:
    the per-instruction output hashes are left out, included, included with their values:
    a trace made with ``keep="all"``)."""
    if level not in LEVELS:
        raise ValueError(f"receipt level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "full" and any(o.values is None for e in trace.entries for o in e.outputs):
        raise ValueError("a full receipt needs a trace that kept every value (keep='all')")
    body: dict[str, Any] = {"level": level, "leaves": len(trace.leaves()), "root": trace.root}
    if level != "root":
        body["instructions"] = [
            {"index": e.index, "op": e.op,
             "outputs": [_tensor(o, with_data=level == "full") for o in e.outputs]}
            for e in trace.entries]
    return {"schema": SCHEMA, "version": VERSION, "detvm": __version__,
            "semantics": trace.semantics, "model": {"name": name, "sha256": trace.model},
            "executor": trace.executor, "gas": trace.gas,
            "inputs": [_tensor(o) for o in trace.inputs],
            "outputs": [_tensor(o) for o in trace.outputs], "trace": body}


def _tensor(o, with_data: bool = False) -> dict:
    out = {"name": o.name, "shape": list(o.shape), "dtype": o.dtype, "sha256": o.sha256}
    if with_data:
        data = np.asarray(o.values).astype(np.dtype(o.dtype).newbyteorder("<")).tobytes()
        out["data"] = base64.b64encode(data).decode("ascii")
    return out


def dumps(receipt: dict) -> bytes:
    """Canonical bytes: JSON with sorted keys, no whitespace, UTF-8, integers only (RFC 8785
    for this schema), one final newline."""
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


# ---------------------------------------------------------------------------------------------
# Reading (untrusted bytes)
# ---------------------------------------------------------------------------------------------

def loads(data: bytes | str) -> dict:
    """Parse and check a receipt; MalformedError naming the first bad field."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise MalformedError(f"receipt: {len(data)} bytes (at most {MAX_BYTES})")
    try:
        doc = json.loads(data, parse_float=_no_float, parse_constant=_no_float,
                         object_pairs_hook=_unique)
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"receipt: not JSON: {e}") from None
    _check(doc)
    return doc


def _no_float(text: str):
    raise ValueError(f"a receipt holds no floats ({text})")


def _unique(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _check(doc: Any) -> None:
    obj = _object(doc, "receipt", ("schema", "version", "detvm", "semantics", "model",
                                   "executor", "gas", "inputs", "outputs", "trace"))
    if obj["schema"] != SCHEMA:
        raise MalformedError(f"receipt: schema {obj['schema']!r} is not {SCHEMA!r}")
    if obj["version"] != VERSION:
        raise MalformedError(f"receipt: schema version {obj['version']!r} not supported "
                             f"(this detvm reads {VERSION})")
    _kind(obj["detvm"], str, "detvm")
    _kind(obj["semantics"], int, "semantics")
    _kind(obj["executor"], str, "executor")
    _kind(obj["gas"], int, "gas")
    model = _object(obj["model"], "model", ("name", "sha256"))
    _kind(model["name"], str, "model.name")
    _hex(model["sha256"], "model.sha256")
    for part in ("inputs", "outputs"):
        for k, t in enumerate(_kind(obj[part], list, part)):
            _tensor_fields(t, f"{part}[{k}]")
    _trace_fields(obj["trace"])


def _trace_fields(doc: Any) -> None:
    body = _object(doc, "trace", ("level", "leaves", "root"), ("instructions",))
    if body["level"] not in LEVELS:
        raise MalformedError(f"receipt: trace.level {body['level']!r} is not one of "
                             f"{', '.join(LEVELS)}")
    _kind(body["leaves"], int, "trace.leaves")
    if body["root"] is not None:
        _hex(body["root"], "trace.root")
    if (body["level"] == "root") == ("instructions" in body):
        raise MalformedError("receipt: trace.instructions must be present exactly when "
                             "trace.level is not 'root'")
    for k, e in enumerate(_kind(body.get("instructions", []), list, "trace.instructions")):
        where = f"trace.instructions[{k}]"
        entry = _object(e, where, ("index", "op", "outputs"))
        _kind(entry["index"], int, f"{where}.index")
        _kind(entry["op"], str, f"{where}.op")
        for j, t in enumerate(_kind(entry["outputs"], list, f"{where}.outputs")):
            _tensor_fields(t, f"{where}.outputs[{j}]", body["level"] == "full")


def _tensor_fields(doc: Any, where: str, data: bool = False) -> None:
    t = _object(doc, where, ("name", "shape", "dtype", "sha256"), ("data",) if data else ())
    _kind(t["name"], str, f"{where}.name")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
               for d in _kind(t["shape"], list, f"{where}.shape")):
        raise MalformedError(f"receipt: {where}.shape must be a list of non-negative ints")
    if t["dtype"] not in ("int8", "int16", "int32", "int64"):
        raise MalformedError(f"receipt: {where}.dtype {t['dtype']!r} is not a storage dtype")
    if t["sha256"] is not None:
        _hex(t["sha256"], f"{where}.sha256")
    if data and "data" not in t:
        raise MalformedError(f"receipt: {where}.data missing (trace level full)")
    if "data" in t:
        _kind(t["data"], str, f"{where}.data")


def _object(doc: Any, where: str, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(doc, dict):
        raise MalformedError(f"receipt: {where} must be an object")
    missing = [k for k in required if k not in doc]
    extra = sorted(set(doc) - set(required) - set(optional))
    if missing or extra:
        raise MalformedError(f"receipt: {where}: " + (f"missing {', '.join(missing)}" if missing
                                                      else f"unknown field {extra[0]!r}"))
    return doc


def _kind(value: Any, kind: type, where: str):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedError(f"receipt: {where} must be {'an' if kind is int else 'a'} "
                             f"{ {int: 'int', str: 'string', list: 'list'}[kind] }")
    return value


def _hex(value: Any, where: str) -> None:
    if not (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)):
        raise MalformedError(f"receipt: {where} must be 64 lowercase hex digits")


def data_of(tensor: dict) -> np.ndarray:
    """The values of a receipt tensor written at level ``full`` (MalformedError if the data
    does not match its dtype and shape)."""
    dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
    try:
        raw = base64.b64decode(tensor["data"], validate=True)
    except ValueError:
        raise MalformedError(f"receipt: tensor {tensor['name']!r}: data is not base64") from None
    size = int(np.prod(tensor["shape"], dtype=object))
    if len(raw) != size * dtype.itemsize:
        raise MalformedError(f"receipt: tensor {tensor['name']!r}: {len(raw)} data bytes for "
                             f"shape {tensor['shape']} {tensor['dtype']}")
    return np.frombuffer(raw, dtype=dtype).reshape(tensor["shape"]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Comparing a fresh trace with a receipt
# ---------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    """The outcome of :func:`compare`: ``match``, else ``problems`` in the order they were
    found and ``first``, the index of the first instruction whose output hash differs."""

    problems: list[str] = field(default_factory=list)
    first: int | None = None

    @property
    def match(self) -> bool:
        return not self.problems


def compare(receipt: dict, trace: Trace) -> Verdict:
    """Check ``trace`` against ``receipt``: model, semantics, inputs, instructions, outputs,
    root. The model and inputs are checked first: a different model or input is no replay."""
    v = Verdict(identity(receipt, trace))
    if v.problems:
        return v
    steps = receipt["trace"].get("instructions")
    if steps is not None:
        v.first, problem = first_difference(steps, trace)
        if problem:
            v.problems.append(problem)
    v.problems += tensors("output", receipt["outputs"], trace.outputs)
    if receipt["trace"]["root"] != trace.root:
        v.problems.append(f"trace root {trace.root} is not the receipt's "
                          f"{receipt['trace']['root']}")
    return v


def identity(receipt: dict, trace: Trace) -> list[str]:
    """What makes ``trace`` a run of another model or input than ``receipt``'s."""
    problems = []
    if receipt["model"]["sha256"] != trace.model:
        problems.append(f"model {trace.model} is not the receipt's "
                        f"{receipt['model']['sha256']}")
    if receipt["semantics"] != trace.semantics:
        problems.append(f"semantics version {trace.semantics} is not the receipt's "
                        f"{receipt['semantics']}")
    return problems + tensors("input", receipt["inputs"], trace.inputs)


def first_difference(steps: list, trace: Trace) -> tuple[int | None, str]:
    """(index, message) of the first instruction whose outputs differ from the receipt's
    ``steps``; (None, "") when all agree."""
    for step, entry in zip(steps, trace.entries):
        mine = [(o.name, o.sha256) for o in entry.outputs]
        theirs = [(o["name"], o["sha256"]) for o in step["outputs"]]
        if step["index"] != entry.index or step["op"] != entry.op or mine != theirs:
            return entry.index, f"instruction {entry.index} ({entry.op}) differs"
    if len(steps) != len(trace.entries):
        return None, (f"the receipt traces {len(steps)} instructions, this run "
                      f"{len(trace.entries)}")
    return None, ""


def tensors(kind: str, theirs: list, mine: list) -> list[str]:
    """The differences between a receipt's ``inputs`` or ``outputs`` and a trace's."""
    if [t["name"] for t in theirs] != [o.name for o in mine]:
        return [f"{kind} names {[o.name for o in mine]} are not the receipt's "
                f"{[t['name'] for t in theirs]}"]
    return [f"{kind} {o.name!r}: sha256 {o.sha256} is not the receipt's {t['sha256']}"
            for t, o in zip(theirs, mine)
            if (t["sha256"], list(t["shape"]), t["dtype"]) != (o.sha256, list(o.shape), o.dtype)]
