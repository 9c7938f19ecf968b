"""The ONNX backend node tests of the float ops detvm imports, run on 8-bit quantized tensors
(tests/onnx_float_conformance.py): data movements bit-exact, computations within LIMITS."""
from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="ONNX conformance needs the onnx extra: pip install "
                                   "'detvm[onnx]'")

from tests.onnx_float_conformance import MOVES, OPS, float_cases, run_case, summary  # noqa: E402


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)        # None with -p no:cacheprovider
    root = cache.mkdir("onnx-node") if cache else tmp_path_factory.mktemp("onnx-node")
    return [run_case(path) for path in float_cases(root)]


def test_every_applicable_case_passes(results):
    failed = [(r["case"], r["detail"]) for r in results if r["status"] == "failed"]
    assert not failed


def test_counts(results):
    table = summary(results)
    assert set(OPS) <= set(table)
    for op in OPS:
        row = table[op]
        assert row["generated"] - row["not_applicable"] >= 1, op
    moves = [r for r in results if r["op"] in MOVES
             and r["status"] != "not_applicable"]
    assert moves and all(r["status"] == "exact" for r in moves)
