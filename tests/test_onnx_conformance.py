"""The ONNX backend node tests of the integer ops (regenerated and cached, tests/
onnx_conformance.py): every applicable case passes, bit-exact where the spec is integer."""
from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="ONNX conformance needs the onnx extra: pip install "
                                   "'detvm[onnx]'")

from tests.onnx_conformance import EXACT, OPS, cases, generate, run_case, summary  # noqa: E402


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)        # None with -p no:cacheprovider
    root = generate(cache.mkdir("onnx-node") if cache else tmp_path_factory.mktemp("onnx-node"))
    return [run_case(path) for path in cases(root)]


def test_every_applicable_case_passes(results):
    failed = [(r["case"], r["detail"]) for r in results if r["status"] == "failed"]
    assert not failed


def test_counts(results):
    table = summary(results)
    assert set(table) == set(OPS)
    for op, row in table.items():
        applicable = row["generated"] - row["not_applicable"]
        assert applicable >= 1, op
        if op in EXACT:
            assert row["exact"] == applicable, op
    assert sum(r["status"] != "not_applicable" for r in results) >= 28
