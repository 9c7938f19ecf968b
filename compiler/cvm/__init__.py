"""CVM front-end: read a CVM deploy model (graph JSON + params blob) into a detvm program, and
write a program that uses only CVM operators back in CVM's format.

    program = import_cvm(json_text, params_bytes, compat=None)   # or compat="cvm"
    json_text, params_bytes = export_cvm(program)

Every load-time check CVM makes is made (see graph.py, check.py, lower.py); a failure raises a
detvm error whose ``cvm_code`` is the code CVM reports (1 logic, 2 runtime).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from vm.program import Program

from .attrs import CVM_OPS
from .check import Checked, check_graph
from .errors import cvm_code
from .export import export_cvm, facts, plan_program
from .graph import Graph, read_graph
from .lower import lower, match_params
from .meta import Facts, check_compat
from .params import load_params, save_params

__all__ = ["import_cvm", "export_cvm", "check_json", "read_graph", "check_graph", "load_params",
           "save_params", "facts", "Facts", "Graph", "Checked", "CVM_OPS", "cvm_code",
           "plan_program"]

Params = bytes | Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]


def check_json(graph_json: str | bytes) -> Checked:
    """Every check CVM makes on the graph JSON alone (CVMAPIGetGasFromGraphFile)."""
    return check_graph(read_graph(graph_json))


def import_cvm(graph_json: str | bytes, params: Params, compat: str | None = None,
               name: str = "cvm") -> Program:
    """The detvm program of a CVM model; ``compat="cvm"`` reproduces CVM's quirks."""
    mode = check_compat(compat)
    checked = check_json(graph_json)
    if isinstance(params, (bytes, bytearray, memoryview)):
        pairs = load_params(params)
    else:
        pairs = list(params.items() if isinstance(params, Mapping) else params)
    pairs = [(k, np.asarray(v)) for k, v in pairs]
    return lower(checked, match_params(checked, pairs), mode, name)
