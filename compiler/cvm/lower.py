"""Lowering a checked CVM graph and its params to a detvm program (through the Builder).

Variables become the input ``data`` and constants; operator nodes become instructions with the
same names (made unique and printable when needed); heads become the outputs. In compat mode
("cvm") a full-reduce ``max`` (axis=(), exclude=False) becomes ``max`` then ``relu``: CVM's
accumulator starts at 0, so it returns max(0, true max). CVM's facts go into the metadata.
"""
from __future__ import annotations

import itertools

import numpy as np

import ops
from compiler.builder import Builder
from ops.base import bound
from vm.program import Program

from .check import Checked
from .errors import RUNTIME, invalid
from .meta import Facts

RAW = "#raw"
"""Name suffix of the true ``max`` that compat mode feeds to ``relu``."""


def match_params(checked: Checked, pairs: list[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The values of every variable but ``data``, checked as CVM loads them."""
    g = checked.graph
    variables = {n.name: nid for nid, n in enumerate(g.nodes) if n.op is None}
    values = {}
    for name, array in pairs:
        if name not in variables:
            raise invalid(f"cannot find `{name}` among input", RUNTIME)
        e = g.row_ptr[variables[name]]
        _check_shape(name, tuple(array.shape), g.shapes[e])
        if name != "data":                 # CVM clamps it, then the real input overwrites it
            _check_values(name, array, g.precisions[e])
            values[name] = array
    for name, nid in variables.items():
        if name != "data" and name not in values:
            raise invalid(f"parameter nid={nid} name={name} has not been loaded")
    return values


def _check_shape(name: str, got: tuple, want: tuple) -> None:
    if len(got) != len(want):
        raise invalid(f"parameter {name}: loaded ndim {len(got)}, expected {len(want)}")
    for k, (a, b) in enumerate(zip(got, want)):
        if a != b:
            raise invalid(f"parameter {name}: Loaded data shape at index {k} with value {a}, "
                          f"Expected {b}")


def _check_values(name: str, array: np.ndarray, precision: int) -> None:
    flat = array.reshape(-1).astype(np.int64)
    bad = np.flatnonzero(np.abs(flat) > bound(precision))
    if bad.size:
        k = int(bad[0])
        raise invalid(f"parameter {name} at index {k} value:{int(flat[k])} exceed of "
                      f"precision {precision}")


def lower(checked: Checked, values: dict[str, np.ndarray], compat: str, name: str) -> Program:
    """The detvm program of a checked graph (see the module doc)."""
    g = checked.graph
    b = Builder(name)
    taken = {n.name for n in g.nodes if n.op is None}
    names: dict[int, str] = {}
    for nid, node in enumerate(g.nodes):
        outs = list(g.outputs_of(nid))
        if node.op is None:
            _variable(b, node.name, g.shapes[outs[0]], g.precisions[outs[0]], values)
            names[outs[0]] = node.name
            continue
        inputs = [names[g.entry(r)] for r in node.inputs]
        results = _output_names(node.name, node.op, nid, taken)
        attrs = checked.attrs[nid]
        if compat == "cvm" and is_full_max(node.op, attrs):
            raw = b.apply("max", inputs, attrs, outputs=[_unique(results[0] + RAW, nid, taken)])
            b.apply("relu", [raw], {}, outputs=results)
        else:
            b.apply(node.op, inputs, attrs, outputs=results)
        names.update(zip(outs, results))
    b.output(*[names[g.entry(h)] for h in g.heads])
    for key, value in graph_facts(checked, compat).to_metadata().items():
        b.meta(key, value)
    return b.build()


def _variable(b: Builder, name: str, shape: tuple, precision: int, values: dict) -> None:
    if name == "data":
        b.input(name, shape, precision)
    else:
        b.const(name, values[name], precision=precision)


def is_full_max(op: str, attrs: dict) -> bool:
    """A ``max`` over every axis by CVM's fast path (where its accumulator starts at 0)."""
    return op == "max" and attrs["axis"] == () and not attrs["exclude"]


def _output_names(name: str, op: str, nid: int, taken: set[str]) -> list[str]:
    outputs = ops.get(op).outputs
    base = _unique(name, nid, taken)
    if len(outputs) == 1:
        return [base]
    return [_unique(f"{base}.{o}", nid, taken) for o in outputs]


def _unique(name: str, nid: int, taken: set[str]) -> str:
    """``name`` if it is a free, valid tensor name; else ``name#nid``, ``#nid``, ``#nid.k``."""
    for c in _candidates(name, nid):
        if c and c.isprintable() and len(c.encode()) <= 255 and c not in taken:
            taken.add(c)
            return c
    raise AssertionError("unreachable")


def _candidates(name: str, nid: int):
    yield from (name, f"{name}#{nid}", f"#{nid}")
    yield from (f"#{nid}.{k}" for k in itertools.count())


def graph_facts(checked: Checked, compat: str) -> Facts:
    """CVM's facts about a checked graph (gas, storage, output precisions, ...)."""
    g = checked.graph
    return Facts(compat, g.version, g.postprocess, tuple(g.storage_ids), checked.storage_size,
                 checked.gas, tuple(checked.cvm_precisions[g.entry(h)] for h in g.heads),
                 bad_input_size(checked) if compat == "cvm" else None)


def bad_input_size(checked: Checked) -> int | None:
    """CVM's input-size quirk: it sizes the input by the entry whose id is ``data``'s position
    among the variables, which is another entry when an operator node precedes ``data``."""
    g = checked.graph
    args = g.arg_nodes
    data = next(nid for nid in args if g.nodes[nid].name == "data")
    position = args.index(data)
    if position == g.row_ptr[data]:
        return None
    n = 1
    for d in g.shapes[position]:
        n *= d
    return n
