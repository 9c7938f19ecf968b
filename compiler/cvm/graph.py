"""Reading a CVM deploy graph JSON (cvm.md §1.2, cvm-observed.md §3) into a :class:`Graph`.

This is the structural half of CVM's load pipeline: strict top-level and node keys, the
``[tag, value]`` graph attributes, versions (cvm_1.0.0 checks node_row_ptr / arg_nodes /
dltype, cvm_1.1.0 recomputes them), known operators, entry limits, unique variable names and
topological order. Per-operator checks live in :mod:`compiler.cvm.check`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import ops
from vm.validate import MAX_PRECISION, check_shape, is_unicode

from .attrs import CVM_OPS
from .errors import invalid, malformed

VERSIONS = ("cvm_1.0.0", "cvm_1.1.0")
TOP_KEYS = ("nodes", "arg_nodes", "node_row_ptr", "heads", "attrs", "version", "postprocess")
NODE_KEYS = ("op", "name", "inputs", "attrs", "precision")
ATTR_TAGS = {"shape": "list_shape", "storage_id": "list_int", "op_attrs": "list_str",
             "precision": "list_int", "dltype": "list_str", "device_index": "list_int"}
POSTPROCESS_CHARS = 32
_SUFFIX = re.compile(r"_\d+$")


@dataclass
class Node:
    """A graph node: ``op`` is None for a variable, else the operator name."""

    op: str | None
    name: str
    inputs: list[tuple[int, int]]
    attrs_text: str = "{}"


@dataclass
class Graph:
    """A structurally valid deploy graph; shapes, precisions and storage ids are per entry."""

    nodes: list[Node]
    row_ptr: list[int]
    heads: list[tuple[int, int]]
    shapes: list[tuple[int, ...]]
    precisions: list[int]
    storage_ids: list[int]
    version: str
    postprocess: str

    def entry(self, ref: tuple[int, int]) -> int:
        return self.row_ptr[ref[0]] + ref[1]

    def outputs_of(self, nid: int) -> range:
        return range(self.row_ptr[nid], self.row_ptr[nid + 1])

    @property
    def arg_nodes(self) -> list[int]:
        return [nid for nid, n in enumerate(self.nodes) if n.op is None]


def read_graph(text: str | bytes) -> Graph:
    """Parse and structurally check a deploy graph JSON (raises with CVM's codes)."""
    top = _json(text)
    if not isinstance(top, dict):
        raise malformed("graph JSON must be an object")
    for key in top:
        if key not in TOP_KEYS:
            raise malformed(f"key {key} in json is not supported")
    for key in ("nodes", "heads", "attrs"):
        if key not in top:
            raise malformed(f"graph JSON has no required key {key!r}")
    version = _string(top.get("version", VERSIONS[0]), "version")
    if version not in VERSIONS:
        raise malformed(f"graph version {version} not supported")
    postprocess = _string(top.get("postprocess", ""), "postprocess")[:POSTPROCESS_CHARS]
    nodes = [_node(n, k) for k, n in enumerate(_list(top["nodes"], "nodes"))]
    row_ptr = [0]
    for n in nodes:
        row_ptr.append(row_ptr[-1] + (1 if n.op is None else len(ops.get(n.op).outputs)))
    _check_version_lists(top, version, nodes, row_ptr)
    heads = [_ref(h, "heads") for h in _list(top["heads"], "heads")]
    attrs = _graph_attrs(top["attrs"], version, len(nodes), row_ptr[-1])
    graph = Graph(nodes, row_ptr, heads, attrs["shape"], attrs["precision"],
                  attrs["storage_id"], version, postprocess)
    for node, attrs_text in zip(nodes, attrs["op_attrs"]):
        node.attrs_text = attrs_text
    _check_structure(graph)
    return graph


# ---------------------------------------------------------------------------------------------
# JSON-level readers (CVM's dmlc JSON reader fails with code 2)
# ---------------------------------------------------------------------------------------------

def _json(text):
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise malformed(f"graph JSON is not UTF-8: {e}") from None
    if not isinstance(text, str):
        raise malformed(f"graph JSON must be text, got {type(text).__name__}")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise malformed(f"graph JSON: {e}") from None


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _list(v, what: str) -> list:
    if not isinstance(v, list):
        raise malformed(f"{what} must be a list")
    return v


def _string(v, what: str) -> str:
    if not isinstance(v, str):
        raise malformed(f"{what} must be a string")
    if not is_unicode(v):
        raise malformed(f"{what} is not valid Unicode text (a lone surrogate escape)")
    return v


def _ints(v, what: str) -> list[int]:
    if not isinstance(v, list) or not all(_is_int(x) for x in v):
        raise malformed(f"{what} must be a list of integers")
    return v


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _ref(v, what: str) -> tuple[int, int]:
    """``[node_id, out_index]`` or ``[node_id, out_index, version]``."""
    if not isinstance(v, list) or len(v) not in (2, 3) or not all(_is_int(x) for x in v):
        raise malformed(f"{what}: entry reference {v!r} is not [node, index(, version)]")
    return v[0], v[1]


def _node(v, k: int) -> Node:
    where = f"node {k}"
    if not isinstance(v, dict):
        raise malformed(f"{where} must be an object")
    for key in v:
        if key not in NODE_KEYS:
            raise malformed(f"{where}: key {key} in node is not supported")
    if "name" not in v or "inputs" not in v or "op" not in v:
        raise malformed(f"{where}: op, name and inputs are required")
    name, kind = _string(v["name"], f"{where} name"), _string(v["op"], f"{where} op")
    inputs = [_ref(i, f"{where} inputs") for i in _list(v["inputs"], f"{where} inputs")]
    attrs = v.get("attrs", {})
    if not isinstance(attrs, dict) or not all(isinstance(x, str) for x in attrs.values()):
        raise malformed(f"{where}: attrs must be an object of strings")
    if kind == "null":
        return Node(None, name, inputs)
    if kind != "cvm_op":
        raise malformed(f"{where}: op {kind!r} is neither 'null' nor 'cvm_op'")
    if "func_name" not in attrs:
        raise malformed(f"{where}: cvm_op without func_name")
    func = _SUFFIX.sub("", attrs["func_name"])
    if func not in CVM_OPS or ops.get(func) is None:
        raise malformed(f"Operator {func} is not registered ({where} {name!r})")
    return Node(func, name, inputs)


def _check_version_lists(top: dict, version: str, nodes: list[Node], row_ptr: list[int]):
    """cvm_1.0.0 requires node_row_ptr and arg_nodes equal to the computed ones."""
    args = [nid for nid, n in enumerate(nodes) if n.op is None]
    for key, computed in (("node_row_ptr", row_ptr), ("arg_nodes", args)):
        given = _ints(top[key], key) if key in top else None
        if version != VERSIONS[0]:
            continue                       # cvm_1.1.0 recomputes both
        if given is None:
            raise invalid(f"{key} is required by {version}")
        if given != computed:
            k = next((i for i, (a, b) in enumerate(zip(given, computed)) if a != b),
                     min(len(given), len(computed)))
            raise invalid(f"{key} is invalid at index {k}")


def _graph_attrs(v, version: str, n_nodes: int, n_entries: int) -> dict:
    if not isinstance(v, dict):
        raise malformed("attrs must be an object")
    out = {key: [] for key in ATTR_TAGS}
    present = set()
    for key, pair in v.items():
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise malformed(f"graph attribute {key} must be [type, value]")
        tag, value = pair
        if key not in ATTR_TAGS:
            if key == "dtype" or tag in ("list_int", "size_t"):
                continue                   # skipped, as CVM does
            raise malformed(f"cannot skip graph attr {key}")
        if tag != ATTR_TAGS[key]:
            raise malformed(f"graph attribute {key} has type {tag}, expected {ATTR_TAGS[key]}")
        out[key] = _attr_value(tag, value, key)
        present.add(key)
    if out["device_index"]:
        raise invalid("attribute device_index must be set empty")
    lengths = {"shape": n_entries, "storage_id": n_entries, "precision": n_entries,
               "op_attrs": n_nodes}
    if version == VERSIONS[0]:
        lengths["dltype"] = n_entries
    for key, n in lengths.items():
        if len(out[key]) != n:
            raise invalid(f"graph attribute {key} size: {len(out[key])}, Expected {n}")
    if version == VERSIONS[0] and any(t != "int32" for t in out["dltype"]):
        raise invalid("graph attribute dltype must be int32 for every entry")
    out["shape"] = [tuple(s) for s in out["shape"]]
    return out


def _attr_value(tag: str, value, key: str):
    if tag == "list_int":
        return _ints(value, f"graph attribute {key}")
    if tag == "list_str":
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise malformed(f"graph attribute {key} must be a list of strings")
        return value
    return [_ints(s, f"graph attribute {key}") for s in _list(value, f"graph attribute {key}")]


# ---------------------------------------------------------------------------------------------
# Structural checks (CVM's VERIFY: code 1, except duplicate names: 2)
# ---------------------------------------------------------------------------------------------

def _check_structure(g: Graph) -> None:
    for e, shape in enumerate(g.shapes):
        check_shape(shape, f"entry {e}")
    for e, p in enumerate(g.precisions):
        if p != -1 and not 1 <= p <= MAX_PRECISION:
            raise invalid(f"entry {e}: precision should be -1 or between (0, 32], got {p}")
    for e, s in enumerate(g.storage_ids):
        if s < 0:
            raise invalid(f"entry {e}: storage_id {s} must be >= 0")
    names = set()
    for nid, node in enumerate(g.nodes):
        if node.op is None:
            if node.name in names:
                raise malformed(f"node name {node.name} duplicated in graph")
            names.add(node.name)
            if g.precisions[g.row_ptr[nid]] == -1:
                raise invalid(f"variable node {node.name}'s precision has not been set")
        for ref in node.inputs:
            _check_input(g, nid, ref)
    if "data" not in names:
        raise invalid("the graph has no input variable named data")
    for ref in g.heads:
        if not (0 <= ref[0] < len(g.nodes) and 0 <= ref[1] < len(g.outputs_of(ref[0]))):
            raise invalid(f"head {list(ref)} is not an entry of the graph")


def _check_input(g: Graph, nid: int, ref: tuple[int, int]) -> None:
    src, index = ref
    if not (0 <= src < nid and 0 <= index < len(g.outputs_of(src))):
        raise invalid(f"the graph does not follow the topological order: node {nid} "
                      f"({g.nodes[nid].name}) reads {list(ref)}")
