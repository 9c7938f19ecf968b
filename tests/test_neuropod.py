"""vm.neuropod: specs checked against the model at packaging and against the tensors at every
infer, test data run at packaging and at load, the package format underneath."""
from __future__ import annotations

import numpy as np
import pytest

import vm
from compiler import Builder
from detvm.common import DEMO_DIR
from vm.errors import DetvmError, InvalidError, MalformedError, TrapError
from vm.neuropod import create_neuropod, load_neuropod

SPEC_IN = [{"name": "x", "dtype": "int32", "shape": ("n",)},
           {"name": "y", "dtype": "int32", "shape": ("n",)}]
SPEC_OUT = [{"name": "out", "dtype": "int32", "shape": (None,)}]
TEST_IN = {"x": np.arange(5, dtype=np.int32), "y": np.arange(5, dtype=np.int32) * 3}


def adder():
    b = Builder("adder")
    n = b.symbol("N", 256)
    b.output(b.op("elemwise_add", b.input("x", (n,), 21), b.input("y", (n,), 21),
                  outputs=["out"]))
    return b.build()


@pytest.fixture
def packaged(tmp_path):
    path = tmp_path / "adder.dvmpkg"
    create_neuropod(path, "addition_model", adder(), SPEC_IN, SPEC_OUT, TEST_IN,
                    {"out": TEST_IN["x"] + TEST_IN["y"]})
    return path


def test_infer_equals_the_model(packaged):
    model = vm.Model(adder())
    with load_neuropod(packaged) as neuropod:
        assert neuropod.name == "addition_model"
        for n in (1, 7, 256):
            x = np.arange(n, dtype=np.int32) - 3
            got = neuropod.infer({"x": x, "y": x * 2})
            assert got["out"].tobytes() == model.run({"x": x, "y": x * 2})["out"].tobytes()
        assert [s["shape"] for s in neuropod.inputs] == [("N",), ("N",)]


def test_infer_checks_tensors_against_the_specs(packaged):
    with load_neuropod(packaged) as neuropod:
        x = np.arange(4, dtype=np.int32)
        for inputs, match in (({"x": x, "y": x[:3]}, "symbol 'N'"),
                              ({"x": x, "y": x.astype(np.int8)}, "int8, the spec says int32"),
                              ({"x": x}, "do not match the spec"),
                              ({"x": x, "y": x.reshape(2, 2)}, "2 dims")):
            with pytest.raises(TrapError, match=match):
                neuropod.infer(inputs)


def test_packaging_checks_specs_and_test_data(tmp_path):
    path = tmp_path / "p.dvmpkg"
    bad_specs = [([{"name": "x", "dtype": "int8", "shape": ("n",)}, SPEC_IN[1]], "spec says int8"),
                 ([SPEC_IN[0]], "spec names"),
                 ([{"name": "x", "dtype": "int32", "shape": (3, 4)}, SPEC_IN[1]], "does not fit"),
                 ([{"name": "x", "dtype": "int32"}, SPEC_IN[1]], "keys name, dtype and shape")]
    for spec, match in bad_specs:
        with pytest.raises(DetvmError, match=match):
            create_neuropod(path, "m", adder(), spec, SPEC_OUT)
    with pytest.raises(InvalidError, match="differs at flat index 1"):
        create_neuropod(path, "m", adder(), SPEC_IN, SPEC_OUT, TEST_IN,
                        {"out": np.array([0, 5, 10, 15, 20], np.int32)})
    assert not path.exists()                 # nothing is written when a check fails
    with pytest.raises(TrapError, match="needs test_input_data"):
        create_neuropod(path, "m", adder(), SPEC_IN, SPEC_OUT, None, {"out": TEST_IN["x"]})


def test_a_tampered_neuropod_never_serves(packaged):
    data = bytearray(packaged.read_bytes())
    k = data.find(b"main.dvm", 40) + 60              # inside the model member's bytes
    data[k] ^= 0xFF
    packaged.write_bytes(bytes(data))
    with pytest.raises((MalformedError, InvalidError)):
        load_neuropod(packaged)


def test_pre_and_post_models_in_a_neuropod(tmp_path):
    model = vm.load(DEMO_DIR / "digits.dvm")
    b = Builder("labels")
    logits = model.outputs[0]
    b.output(b.op("argmax", b.input("logits", logits.shape, logits.precision), axis=1,
                  outputs=["label"]))
    post = vm.Model(b.build())
    images = np.load(DEMO_DIR / "digits_inputs.npz")["image"].astype(model.inputs[0].dtype)
    spec_in = [{"name": "image", "dtype": model.inputs[0].dtype.name, "shape": (8, 1, 8, 8)}]
    spec_out = [{"name": "label", "dtype": post.outputs[0].dtype.name, "shape": (8, 1)}]
    path = tmp_path / "digits.dvmpkg"
    want = post.run({"logits": model.run({"image": images})["logits"]})["label"]
    create_neuropod(path, model.name, DEMO_DIR / "digits.dvm", spec_in, spec_out,
                    {"image": images}, {"label": want}, post=post)
    with load_neuropod(path) as neuropod:
        assert neuropod.infer({"image": images})["label"].tobytes() == want.tobytes()
