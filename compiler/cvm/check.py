"""Per-operator load-time checks of a CVM graph (CVM's PrepareGraph / CheckAttr / GetOps).

For every operator node: parse its attributes, re-infer output shapes from the JSON input
shapes and compare, re-infer precisions (detvm's rules, and CVM's where they differ), check the
storage-id in-place rule, and accumulate CVM's gas (GetOps) and storage size. Needs no params,
so it is also CVMAPIGetGasFromGraphFile.
"""
from __future__ import annotations

from dataclasses import dataclass

import ops
from ops.base import OpError
from vm.validate import MAX_PRECISION, MEMORY_WEIGHT, infer

from .attrs import parse_attr_dict, parse_attrs
from .errors import invalid
from .graph import Graph
from .plan import storage_bytes

MAX_BASE, MAX_OPS, MAX_MEMORY, MAX_STORAGE = 1 << 30, 1 << 40, 1 << 40, 1 << 32
CVM_PRECISION = {
    "where": lambda precs, det: [precs[0]],
    "broadcast_greater": lambda precs, det: [precs[0]],
    "non_max_suppression": lambda precs, det: [precs[0]],
    "get_valid_counts": lambda precs, det: [det[0], precs[0]],
}
"""CVM's precision rules where detvm deliberately differs (cvm.md §3.2, ops docs)."""


@dataclass
class Checked:
    """A graph that passed every load-time check, with what the checks derived."""

    graph: Graph
    attrs: list[dict | None]        # canonical detvm attributes per node (None: variable)
    precisions: list[int]           # per entry, detvm's rules
    cvm_precisions: list[int]       # per entry, CVM's rules (its output byte widths)
    gas: int
    storage_size: int


def check_graph(g: Graph) -> Checked:
    """Run every per-operator check; raise with CVM's codes."""
    attrs: list[dict | None] = []
    precs, cvm_precs = list(g.precisions), list(g.precisions)
    for nid, node in enumerate(g.nodes):
        if node.op is None:
            attrs.append(None)
            continue
        attrs.append(_check_node(g, nid, precs, cvm_precs))
        _check_inplace(g, nid)
    return Checked(g, attrs, precs, cvm_precs, cvm_gas(g, attrs), storage_size(g))


def _check_node(g: Graph, nid: int, precs: list[int], cvm_precs: list[int]) -> dict:
    node = g.nodes[nid]
    where = f"node {nid} {node.name} ({node.op})"
    raw = parse_attrs(node.op, parse_attr_dict(where, node.attrs_text), where)
    ins = [g.entry(r) for r in node.inputs]
    shapes = [g.shapes[e] for e in ins]
    try:
        canon, out_shapes, det = infer(node.op, shapes, [precs[e] for e in ins], raw)
        cvm = ops.get(node.op).infer_precisions([cvm_precs[e] for e in ins], shapes, canon)
    except OpError as e:
        raise invalid(f"{where}: {e}") from None
    if node.op in CVM_PRECISION:
        cvm = CVM_PRECISION[node.op]([cvm_precs[e] for e in ins], cvm)
    for e, shape, p, q in zip(g.outputs_of(nid), out_shapes, det, cvm):
        if tuple(shape) != g.shapes[e]:
            raise invalid(f"{where}: Check output shape failed, expected to be "
                          f"{list(shape)} but {list(g.shapes[e])}")
        for value in (p, q):
            if not 0 < value <= MAX_PRECISION:
                raise invalid(f"{where}: output precision {value} outside (0, 32]")
        precs[e], cvm_precs[e] = p, q
    return canon


def _check_inplace(g: Graph, nid: int) -> None:
    """An output may share a storage id with an input only for CVM's in-place whitelist."""
    node = g.nodes[nid]
    if ops.get(node.op).inplace:
        return
    inputs = {g.storage_ids[g.entry(r)] for r in node.inputs}
    for e in g.outputs_of(nid):
        if g.storage_ids[e] in inputs:
            raise invalid(f"node {nid} {node.name} ({node.op}) used same storage_id "
                          f"{g.storage_ids[e]} for an input and an output")


def cvm_gas(g: Graph, attrs: list[dict | None]) -> int:
    """CVM's GetOps: op weight x size(output 0), plus 5 x the elements of every entry."""
    total_ops = memory = 0
    for nid, node in enumerate(g.nodes):
        sizes = [_size(g.shapes[e]) for e in g.outputs_of(nid)]
        memory += MEMORY_WEIGHT * sum(sizes)
        if node.op is not None:
            base = ops.get(node.op).cost([g.shapes[g.entry(r)] for r in node.inputs], attrs[nid])
            if base > MAX_BASE:
                raise invalid(f"node {nid} {node.name}: op weight {base} exceeds 2^30")
            total_ops += base * sizes[0]
            if total_ops > MAX_OPS:
                raise invalid(f"node {nid} {node.name}: total ops exceed 2^40")
    if memory > MAX_MEMORY:
        raise invalid(f"memory cost {memory} exceeds 2^40")
    return total_ops + memory


def storage_size(g: Graph) -> int:
    """CVM's GetStorageSize: the sum over storage pools of ceil4(4 x the largest entry)."""
    total = storage_bytes(g.storage_ids, [_size(s) for s in g.shapes])
    if total > MAX_STORAGE:
        raise invalid(f"storage size {total} bytes exceeds 2^32")
    return total


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
