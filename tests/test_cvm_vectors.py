"""Conformance: every CVM vector gives the reference bytes, lengths, type sizes, storage size
and gas in compat mode; default mode differs only where a documented CVM bug is fixed."""
from __future__ import annotations

import importlib.util

import pytest

import vm
from vm import runtime as rt
from tests.cvm_util import decode, input_bytes, params_of, vectors

MODELS = [m for m in vectors() if "error" not in m["info"]]
FIXED = {"j_argmax_rows": [1, 2, 2]}
"""Default-mode results where CVM's bug is fixed (argmax of every row, full values)."""


def load(m, compat):
    return rt.CVMAPILoadModel(m["graph_json"], params_of(m), vm.cpu(), compat=compat)


def facts(net) -> dict:
    return {"input_length": rt.CVMAPIGetInputLength(net),
            "input_type_size": rt.CVMAPIGetInputTypeSize(net),
            "output_length": rt.CVMAPIGetOutputLength(net),
            "output_type_size": rt.CVMAPIGetOutputTypeSize(net),
            "storage_size": rt.CVMAPIGetStorageSize(net), "gas": rt.CVMAPIGetGasFromModel(net),
            "postprocess": rt.CVMAPIGetPostprocessMethod(net)}


@pytest.mark.parametrize("m", MODELS, ids=lambda m: m["name"])
@pytest.mark.parametrize("compat", [None, "cvm"])
def test_vector(m, compat):
    net = load(m, compat)
    assert facts(net) == m["info"]
    assert rt.CVMAPIGetGasFromGraphFile(m["graph_json"]) == m["info"]["gas"]
    out = rt.CVMAPIInference(net, input_bytes(m))
    assert len(out) == m["info"]["output_length"]
    got = decode(out, m["info"]["output_type_size"])
    assert m["cpu"] == m["formal"]
    want = FIXED.get(m["name"], m["cpu"]) if compat is None else m["cpu"]
    assert got == want


@pytest.mark.parametrize("m", MODELS, ids=lambda m: m["name"])
def test_vector_through_dvm(m):
    """A .dvm imported from CVM keeps its CVM facts and gives the same bytes."""
    program = vm.decode(vm.encode(load(m, "cvm").model.program))
    net = rt.load_model(vm.load(program))
    assert facts(net) == m["info"]
    assert decode(rt.CVMAPIInference(net, input_bytes(m)), m["info"]["output_type_size"]) \
        == m["cpu"]
    assert net.model.gas == m["info"]["gas"]


@pytest.mark.parametrize("m", [m for m in vectors() if "error" in m["info"]],
                         ids=lambda m: m["name"])
@pytest.mark.parametrize("compat", [None, "cvm"])
def test_rejected_vector(m, compat):
    with pytest.raises(rt.CVMError) as e:
        load(m, compat)
    assert e.value.code == m["info"]["code"] == 1
    assert "precision 48" in e.value.message
    with pytest.raises(rt.CVMError) as e:
        rt.CVMAPIGetGasFromGraphFile(m["graph_json"])
    assert e.value.code == 1


ORT_MODELS = MODELS if importlib.util.find_spec("onnxruntime") else []


@pytest.mark.parametrize("m", ORT_MODELS, ids=lambda m: m["name"])
@pytest.mark.parametrize("compat", [None, "cvm"])
def test_vector_on_onnxruntime(m, compat):
    """The onnxruntime backend, which lowers every instruction it has a rule for, gives every
    vector's bytes and gas."""
    ctx = vm.cpu(backend="onnxruntime")
    net = rt.CVMAPILoadModel(m["graph_json"], params_of(m), ctx, compat=compat)
    got = decode(rt.CVMAPIInference(net, input_bytes(m)), m["info"]["output_type_size"])
    want = FIXED.get(m["name"], m["cpu"]) if compat is None else m["cpu"]
    assert got == want
    assert rt.CVMAPIGetGasFromModel(net) == m["info"]["gas"]


@pytest.mark.skipif(not ORT_MODELS, reason="onnxruntime is not installed")
def test_most_vectors_run_on_onnxruntime():
    """Most vectors have instructions the backend lowers (the test above is not vacuous)."""
    ctx = vm.cpu(backend="onnxruntime")
    lowered = [rt.CVMAPILoadModel(m["graph_json"], params_of(m), ctx).model.backend
               .startswith("onnxruntime") for m in ORT_MODELS]
    assert sum(lowered) > len(lowered) // 2, lowered
