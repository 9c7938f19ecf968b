"""Which nodes of an ONNX graph detvm can import, checked before anything is lowered, and
said in the user's terms: one error lists every unsupported op type with its count and its
first node names.

A node is supported when detvm has a handler for its op, or when it computes a constant: a
foldable op (evaluated at compile time) whose inputs are all constants. Constants are the
initializers and what Constant, Shape (every shape is static) and folded nodes produce; an op
fed by a constant and an activation (a Mul by a constant, a Div, a Slice of a tensor) is not
constant.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from vm.errors import InvalidError

from .graph import Graph

SHOWN = 4
"""Node names quoted per op type."""
RECURRENT = ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")
CONTROL_FLOW = ("If", "Loop", "Scan")
ALWAYS_CONSTANT = ("Constant", "Shape")
ADVICE = {
    **{op: "recurrent layers (LSTM, GRU, RNN) are not supported yet" for op in RECURRENT},
    **{op: "control flow (If, Loop, Scan) is not supported" for op in CONTROL_FLOW},
    "DynamicQuantizeLinear": "dynamic quantization (scales computed while running) is not "
                             "supported: quantize the float model statically (detvm quantize)",
}


def op_label(domain: str, op_type: str) -> str:
    return f"{domain}.{op_type}" if domain else op_type


def constant_tensors(graph: Graph, foldable: Callable[[str, str], bool]) -> set[str]:
    """The names of the tensors known at compile time."""
    const = set(graph.consts)
    for n in graph.nodes:
        inputs = [i for i in n.inputs if i]
        if (n.domain == "" and n.op_type in ALWAYS_CONSTANT) or (
                foldable(n.domain, n.op_type) and inputs and all(i in const for i in inputs)):
            const.update(o for o in n.outputs if o)
    return const


def unsupported(graph: Graph, handled: Callable[[str, str], bool],
                foldable: Callable[[str, str], bool]) -> dict[str, list[str]]:
    """Op label -> the names of its nodes that cannot be imported (and the recurrent layers
    inside control flow, named ``INNER in OUTER``)."""
    const = constant_tensors(graph, foldable)
    bad: dict[str, list[str]] = {}
    for n in graph.nodes:
        if handled(n.domain, n.op_type):
            continue
        inputs = [i for i in n.inputs if i]
        if foldable(n.domain, n.op_type) and inputs and all(i in const for i in inputs):
            continue
        bad.setdefault(op_label(n.domain, n.op_type), []).append(n.name)
        for label, name in _nested(n.proto):
            if label[1] in RECURRENT:          # say why the control flow would not help
                bad.setdefault(op_label(*label), []).append(f"{name} in {n.name}")
    return bad


def _nested(proto) -> Iterator[tuple[tuple[str, str], str]]:
    """((domain, op type), name) of every node inside the graphs of a node's attributes."""
    if proto is None:
        return
    for attr in proto.attribute:
        for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            for k, n in enumerate(g.node):
                yield (n.domain or "", n.op_type), n.name or f"{n.op_type}_{k}"
                yield from _nested(n)


def check_supported(graph: Graph, handled: Callable[[str, str], bool],
                    foldable: Callable[[str, str], bool]) -> None:
    bad = unsupported(graph, handled, foldable)
    if bad:
        raise InvalidError(report(bad.items()))


def report(bad: Iterable[tuple[str, list[str]]]) -> str:
    """``unsupported ONNX ops (N nodes): Op (K nodes: a, b, ...); ...``, with advice."""
    bad = list(bad)
    total = sum(len(names) for _, names in bad)
    parts = []
    for label, names in bad:
        shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
        advice = ADVICE.get(label.rsplit(".", 1)[-1])
        parts.append(f"{label} ({len(names)} node{'s' if len(names) > 1 else ''}: {shown})"
                     + (f": {advice}" if advice else ""))
    return (f"unsupported ONNX ops ({total} node{'s' if total > 1 else ''}): "
            + "; ".join(parts))
