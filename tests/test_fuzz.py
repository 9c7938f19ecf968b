"""The fuzzers of tests/fuzz.py at a small budget (long runs: ``python -m tests.fuzz --minutes
N``), and the crashers they found, as regression tests."""
from __future__ import annotations

import pytest

from tests.fuzz import TARGETS, hypothesis_test

BUDGET = {"dvm": 100, "text": 60, "cvm": 100, "onnx": 40, "programs": 25}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name):
    if name == "onnx":
        pytest.importorskip("onnx")
    hypothesis_test(TARGETS[name], BUDGET[name])()


# -- crashers found by `python -m tests.fuzz` ---------------------------------------------------

def _onnx_conv():
    onnx = pytest.importorskip("onnx")
    from tests.fuzz import onnx_seeds
    model = onnx.ModelProto()
    model.ParseFromString(onnx_seeds()[0])
    return model


def test_onnx_op_type_that_is_not_utf8():
    """A proto2 string that is not UTF-8 comes back from protobuf as bytes: the import's
    report of unsupported ops raised TypeError."""
    import vm
    from compiler.onnx import import_onnx
    blob = _onnx_conv().SerializeToString().replace(b"\x04Relu", b"\x04\xffelu")
    with pytest.raises(vm.MalformedError, match="not UTF-8"):
        import_onnx(blob)


@pytest.mark.parametrize("change", ["dims", 0, 35])
def test_onnx_initializer_whose_data_disagrees(change):
    """numpy_helper.to_array raised ValueError (dims 0 for 108 values), TypeError (element
    type 0, UNDEFINED) or KeyError (element type 35, unknown)."""
    import vm
    from compiler.onnx import import_onnx
    model = _onnx_conv()
    w = next(t for t in model.graph.initializer if t.name == "w_q")
    if change == "dims":
        w.dims[0] = 0
    else:
        w.data_type = change
    with pytest.raises(vm.MalformedError, match="initializer 'w_q'"):
        import_onnx(model.SerializeToString())


def test_onnx_zero_point_of_a_float_type():
    """A zero point turned float (NaN) was cast to int64, a platform-dependent value with a
    RuntimeWarning; it is refused."""
    import warnings
    import numpy as np
    import vm
    from onnx import numpy_helper
    from compiler.onnx import import_onnx
    model = _onnx_conv()
    k = next(k for k, t in enumerate(model.graph.initializer) if t.name == "x_z")
    model.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.float32(np.nan), "x_z"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(vm.InvalidError, match="zero points of element type float32"):
            import_onnx(model.SerializeToString())
