"""Writing a detvm program as a CVM deploy model: graph JSON (``symbol``) and params blob.

The JSON is what CVM's GraphCompile writes (cvm_1.0.0 unless the metadata says otherwise):
variables first where they are first needed, ``cvm_op`` nodes named after their tensors with
{flatten_data, func_name, num_inputs, num_outputs}, every attribute in op_attrs, each
variable's ``{"precision": "p"}``, int32 dltypes, and a storage plan: the program's recorded
CVM plan when it is still safe, else the compiler's (:mod:`compiler.cvm.plan`). Constants are
written as int8 when their precision is <= 8, else int32, so the same program always gives the
same bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import ops
from vm.errors import InvalidError
from vm.program import Program
from vm.validate import infer, validate

from .attrs import CVM_OPS, format_attrs
from .graph import VERSIONS
from .lower import RAW, is_full_max
from .meta import Facts, check_compat, split_ints
from .params import save_params
from .plan import PlanNode, plan_is_safe, plan_memory, storage_bytes


@dataclass
class _Node:
    name: str
    op: str | None
    inputs: tuple[int, ...]          # tensor ids read
    outputs: tuple[int, ...]         # tensor ids held by this node's entries
    attrs: dict


def export_cvm(program: Program) -> tuple[str, bytes]:
    """(graph JSON text, params blob) of ``program``; InvalidError if CVM cannot express it."""
    validate(program)
    if program.symbols:
        raise InvalidError(f"CVM models have fixed shapes; this one has the symbols "
                           f"{', '.join(program.symbols)} (export an instance: "
                           "vm.symbolic.instantiate)")
    nodes, entry = _layout(program)
    sids = _storage_ids(program, nodes, entry)
    tensors = program.tensors
    shapes = [list(tensors[t].shape) for n in nodes for t in n.outputs]
    precs = [tensors[t].precision for n in nodes for t in n.outputs]
    row_ptr = [0]
    for n in nodes:
        row_ptr.append(row_ptr[-1] + len(n.outputs))
    ref = lambda t: [*entry[t], 0]
    graph = {
        "nodes": [_node_json(n, ref) for n in nodes],
        "arg_nodes": [k for k, n in enumerate(nodes) if n.op is None],
        "node_row_ptr": row_ptr,
        "heads": [ref(t) for t in program.outputs],
        "attrs": {"op_attrs": ["list_str", [_op_attrs(n, tensors) for n in nodes]],
                  "dltype": ["list_str", ["int32"] * len(shapes)],
                  "precision": ["list_int", precs], "storage_id": ["list_int", sids],
                  "shape": ["list_shape", shapes]},
        "version": _version(program)}
    if program.metadata.get("cvm.postprocess"):
        graph["postprocess"] = program.metadata["cvm.postprocess"]
    params = [(n.name, program.consts[n.outputs[0]]) for n in nodes
              if n.op is None and tensors[n.outputs[0]].kind == "const"]
    return json.dumps(graph, separators=(",", ":")), save_params(params)


def plan_program(program: Program) -> tuple[list[int], int]:
    """The storage ids CVM's compiler would give the exported program, and its storage size."""
    nodes, entry = _layout(program)
    sids = plan_memory(*_plan_inputs(program, nodes, entry))
    return sids, storage_bytes(sids, [program.tensors[t].size for n in nodes for t in n.outputs])


def facts(program: Program, gas: int) -> Facts:
    """The program's CVM facts: from its metadata, else derived (as its export would give)."""
    meta = program.metadata
    if "cvm.compat" not in meta:
        return _derived(program, gas)
    try:
        bad = meta.get("cvm.bad_input_size")
        found = Facts(check_compat(meta["cvm.compat"]), meta["cvm.version"],
                      meta["cvm.postprocess"], split_ints(meta["cvm.storage_id"]),
                      int(meta["cvm.storage_size"]), int(meta["cvm.gas"]),
                      split_ints(meta["cvm.output_precision"]), None if bad is None else int(bad))
    except (KeyError, ValueError) as e:
        raise InvalidError(f"bad CVM metadata: {e}") from None
    if len(found.output_precisions) != len(program.outputs):
        raise InvalidError("bad CVM metadata: cvm.output_precision does not match the outputs")
    return found


def _derived(program: Program, gas: int) -> Facts:
    sids, size = plan_program(program)
    precs = tuple(program.tensors[i].precision for i in program.outputs)
    return Facts("none", "cvm_1.0.0", "", tuple(sids), size, gas, precs)


def _node_json(n: _Node, ref) -> dict:
    if n.op is None:
        return {"op": "null", "name": n.name, "inputs": []}
    attrs = {"flatten_data": "0", "func_name": n.op, "num_inputs": str(len(n.inputs)),
             "num_outputs": str(len(n.outputs))}
    return {"op": "cvm_op", "name": n.name, "attrs": attrs, "inputs": [ref(t) for t in n.inputs]}


def _op_attrs(n: _Node, tensors) -> str:
    if n.op is None:
        return json.dumps({"precision": str(tensors[n.outputs[0]].precision)})
    return format_attrs(n.attrs)


def _version(program: Program) -> str:
    version = program.metadata.get("cvm.version", VERSIONS[0])
    return version if version in VERSIONS else VERSIONS[0]


# ---------------------------------------------------------------------------------------------
# Node order and names
# ---------------------------------------------------------------------------------------------

def _layout(program: Program) -> tuple[list[_Node], dict[int, tuple[int, int]]]:
    """The CVM nodes in order, and (node id, output index) of every tensor."""
    _check_exportable(program)
    items = _items(program)
    nodes = [_order_node(program, items, x) for x in _order(program, items)]
    entry = {}
    for nid, n in enumerate(nodes):
        for k, t in enumerate(n.outputs):
            entry[t] = (nid, k)
    for k, (_, relu) in items.items():
        if relu is not None and k != relu:       # a folded max: its raw tensor is relu's entry
            entry[program.code[k].outputs[0]] = entry[program.code[relu].outputs[0]]
    return nodes, entry


def _items(program: Program) -> dict:
    """instruction index -> (instruction to emit as its node, folded relu or None)."""
    folded = _folded_relus(program) if program.metadata.get("cvm.compat") == "cvm" else {}
    items = {k: (k, None) for k in range(len(program.code))}
    for relu, mx in folded.items():
        items[mx] = (mx, relu)
        items[relu] = (mx, relu)
    return items


def _folded_relus(program: Program) -> dict[int, int]:
    """relu index -> max index for compat mode's lowering of a full-reduce max."""
    producer = {t: k for k, ins in enumerate(program.code) for t in ins.outputs}
    readers: dict[int, int] = {}
    for ins in program.code:
        for t in ins.inputs:
            readers[t] = readers.get(t, 0) + 1
    out = {}
    for k, ins in enumerate(program.code):
        if ins.op != "relu" or ins.inputs[0] not in producer:
            continue
        raw, mx = ins.inputs[0], producer[ins.inputs[0]]
        named = program.tensors[raw].name.startswith(program.tensors[ins.outputs[0]].name + RAW)
        if (program.code[mx].op == "max" and is_full_max("max", program.code[mx].attrs)
                and named and readers[raw] == 1 and raw not in program.outputs):
            out[k] = mx
    return out


def _order(program: Program, items: dict) -> list:
    """Tensor-id order, each node after the nodes it reads: ("var", tensor) / ("op", index)."""
    producer = {t: items[k][0] for k, ins in enumerate(program.code) for t in ins.outputs}
    done, out = set(), []
    for start in range(len(program.tensors)):
        stack = [start]
        while stack:
            t = stack[-1]
            if t in done:
                stack.pop()
                continue
            if program.tensors[t].kind != "value":
                out.append(("var", t))
                done.add(t)
                stack.pop()
                continue
            k = producer[t]
            pending = [i for i in program.code[k].inputs if i not in done]
            if pending:
                stack.extend(reversed(pending))
                continue
            out.append(("op", k))
            done.update(program.code[k].outputs)
            relu = items[k][1]
            if relu is not None:
                done.update(program.code[relu].outputs)
            stack.pop()
    return out


def _order_node(program: Program, items: dict, item) -> _Node:
    kind, x = item
    t = program.tensors
    if kind == "var":
        return _Node("data" if t[x].kind == "input" else t[x].name, None, (), (x,), {})
    ins = program.code[x]
    relu = items[x][1]
    outs = program.code[relu].outputs if relu is not None else ins.outputs
    return _Node(_node_name(program, ins.op, outs), ins.op, ins.inputs, outs, dict(ins.attrs))


def _node_name(program: Program, op: str, outs: tuple[int, ...]) -> str:
    names = [program.tensors[t].name for t in outs]
    base = names[0].rsplit(".", 1)[0]
    if len(names) > 1 and names == [f"{base}.{o}" for o in ops.get(op).outputs]:
        return base
    return names[0]


def _check_exportable(program: Program) -> None:
    inputs = program.inputs
    if len(inputs) != 1:
        raise InvalidError(f"CVM models have exactly one input (data), this one has "
                           f"{len(inputs)}")
    if any(t.name == "data" and t.kind == "const" for t in program.tensors):
        raise InvalidError("a constant is named 'data', the name of CVM's input")
    t = program.tensors
    for index, ins in enumerate(program.code):
        if ins.op not in CVM_OPS:
            raise InvalidError(f"{program.describe(index)}: {ins.op} is not a CVM operator")
        _, _, precs = infer(ins.op, [t[i].shape for i in ins.inputs],
                            [t[i].precision for i in ins.inputs], ins.attrs)
        for i, p in zip(ins.outputs, precs):
            if t[i].precision != p:
                raise InvalidError(f"{program.describe(index)}: %{t[i].name} is declared "
                                   f"p{t[i].precision}, inferred p{p}; CVM re-infers "
                                   "precisions, so a widened precision cannot be exported")


# ---------------------------------------------------------------------------------------------
# Storage plan
# ---------------------------------------------------------------------------------------------

def _plan_inputs(program: Program, nodes: list[_Node], entry: dict):
    row = [0]
    for n in nodes:
        row.append(row[-1] + len(n.outputs))
    eid = lambda t: row[entry[t][0]] + entry[t][1]
    plan = [PlanNode(n.op is None, tuple(eid(t) for t in n.inputs),
                     tuple(range(row[k], row[k + 1])),
                     n.op is not None and ops.get(n.op).inplace)
            for k, n in enumerate(nodes)]
    sizes = [program.tensors[t].size for n in nodes for t in n.outputs]
    return plan, sizes, [eid(t) for t in program.outputs]


def _storage_ids(program: Program, nodes: list[_Node], entry: dict) -> list[int]:
    plan, sizes, heads = _plan_inputs(program, nodes, entry)
    try:
        recorded = list(split_ints(program.metadata.get("cvm.storage_id", "")))
    except ValueError:
        recorded = []
    if recorded and plan_is_safe(plan, recorded, heads):
        return recorded
    return plan_memory(plan, sizes, heads)
