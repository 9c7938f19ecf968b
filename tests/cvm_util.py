"""Helpers of the CVM tests: the conformance vectors and small hand-made CVM models."""
from __future__ import annotations

import base64
import copy
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from compiler import Builder
from compiler.cvm import export_cvm

VECTORS = Path(__file__).parent / "data" / "cvm_vectors.json"


@lru_cache(maxsize=None)
def _vectors() -> dict:
    return json.loads(VECTORS.read_text())


def vectors() -> list[dict]:
    return copy.deepcopy(_vectors()["models"])


def vector(name: str) -> dict:
    return next(m for m in vectors() if m["name"] == name)


def params_of(m: dict) -> bytes:
    return base64.b64decode(m["params_b64"])


def input_bytes(m: dict) -> bytes:
    return np.array(m["input"]["values"], dtype=m["input"]["dtype"]).tobytes()


def graph(name: str) -> dict:
    """The graph JSON of vector ``name`` as a dict (to mutate in probes)."""
    return json.loads(vector(name)["graph_json"])


def dumps(g: dict) -> str:
    return json.dumps(g, separators=(",", ":"))


def decode(out: bytes, type_size: int) -> list[int]:
    return np.frombuffer(out, "i1" if type_size == 1 else "<i4").tolist()


def cvm_model(build, name: str = "t", **meta) -> tuple[str, bytes]:
    """(graph JSON, params) of a program made by ``build(builder)`` (which marks outputs)."""
    b = Builder(name)
    build(b)
    for k, v in meta.items():
        b.meta(f"cvm.{k}", v)
    return export_cvm(b.build())
