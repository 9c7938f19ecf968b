"""Hostile models and inputs get a clean error of the right class, with a short message.

Regression tests of the reliability campaign's findings F7-F12 (docs/format.md, Budgets)."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest

import vm
from compiler import Builder, parse
from tests.conftest import random_input, small_cnn
from tests.cvm_util import params_of, vector
from vm import runtime as rt
from detvm.common import DEMO_DIR
from vm.errors import MAX_MESSAGE, DetvmError, InvalidError, TrapError


@pytest.fixture(scope="module")
def digits():
    return vm.decode((DEMO_DIR / "digits.dvm").read_bytes())


# -- F7, F8: the CVM front-end -----------------------------------------------------------------

def _dense_node(g: dict) -> int:
    return next(k for k, text in enumerate(g["attrs"]["op_attrs"][1]) if "units" in text)


def _cvm_load(g: dict, m: dict):
    return rt.CVMAPILoadModel(json.dumps(g), params_of(m))


@pytest.mark.parametrize("digits_text", ["9" * 5000, "-" + "9" * 5000, "0" * 5000 + "7",
                                         "9" * 20])
def test_cvm_attribute_with_thousands_of_digits(digits_text):
    m = vector("a2_dense_raw")
    g = json.loads(m["graph_json"])
    node = _dense_node(g)
    g["attrs"]["op_attrs"][1][node] = json.dumps({"use_bias": "True", "units": digits_text})
    for call in (lambda: _cvm_load(g, m), lambda: rt.CVMAPIGetGasFromGraphFile(json.dumps(g))):
        with pytest.raises(rt.CVMError) as e:
            call()
        assert len(e.value.message) < 400


def test_cvm_attribute_with_leading_zeros_is_its_value():
    m = vector("a2_dense_raw")
    g = json.loads(m["graph_json"])
    node = _dense_node(g)
    attrs = json.loads(g["attrs"]["op_attrs"][1][node])
    attrs["units"] = "0" * 4400 + attrs["units"]
    g["attrs"]["op_attrs"][1][node] = json.dumps(attrs)
    assert rt.CVMAPIGetGasFromGraphFile(json.dumps(g)) == m["info"]["gas"]


@pytest.mark.parametrize("where", ["postprocess", "version", "name"])
def test_cvm_lone_surrogate(where):
    m = vector("a2_dense_raw")
    g = json.loads(m["graph_json"])
    if where == "name":
        g["nodes"][0]["name"] = "x\ud800"
    else:
        g[where] = "\ud800"
    with pytest.raises(rt.CVMError) as e:
        _cvm_load(g, m)
    assert "Unicode" in e.value.message or "name" in e.value.message


@pytest.mark.parametrize("field", ["name", "key", "value"])
def test_program_text_must_be_unicode(field):
    p = small_cnn()
    if field == "name":
        p.name = "m\udcff"
    else:
        p.metadata = {"k\ud800" if field == "key" else "k": "\ud800" if field == "value" else "v"}
    with pytest.raises(InvalidError, match="Unicode"):
        vm.load(p)


# -- F9: the text assembler ----------------------------------------------------------------------

@pytest.mark.parametrize("ndim", [7, 65, 200])
def test_text_constant_with_many_dims(ndim):
    text = ('model "m"\ninput %x : [1] p8\nconst @c : [' + ", ".join(["1"] * ndim)
            + '] p8 = [1]\n%y = relu %x\noutput %y\n')
    with pytest.raises(InvalidError, match=f"ndim {ndim}"):
        parse(text)


def test_builder_constant_with_many_dims():
    with pytest.raises(InvalidError, match="ndim 65"):
        Builder("m").const("c", [1], precision=8, shape=[1] * 65)


# -- F10, F12: run inputs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cnn():
    model = vm.load(small_cnn())
    return model, random_input(model)["x"]


@pytest.mark.parametrize("keys", [("x", 0, "z"), ("x", (1, 2), 3.5, None), (b"x", "y")])
def test_unknown_input_keys_of_mixed_types(cnn, keys):
    model, x = cnn
    with pytest.raises(TrapError, match="unknown input"):
        model.run({k: x for k in keys})


class _Refuses:
    def __init__(self, error):
        self.error = error

    def __array__(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize("error", [KeyError("k"), RuntimeError("r" * 100000), ValueError(),
                                   ZeroDivisionError()])
def test_array_like_that_raises(cnn, error):
    model, _ = cnn
    with pytest.raises(TrapError, match="cannot be read as an array") as e:
        model.run({"x": _Refuses(error)})
    assert len(str(e.value)) < 400


# -- F11: float_io metadata ----------------------------------------------------------------------

BAD_METADATA = [
    ("input.image.scale", "abc"), ("input.image.scale", "0"), ("input.image.scale", "-1"),
    ("input.image.scale", "nan"), ("input.image.scale", "inf"), ("input.image.scale", "1e-50"),
    ("input.image.scale", "1_0"), ("input.image.scale", "0.1,0.2"),
    ("input.image.zero_point", "1.5"), ("input.image.zero_point", "300"),
    ("input.image.zero_point", "9" * 5000), ("input.image.dtype", "int64"),
    ("input.image.dtype", "int16"), ("input.image.axis", "7"), ("input.image.colour", "red"),
    ("output.logits.post", "softmax:9"), ("output.logits.post", "argmax:1"),
    ("output.logits.post", "softmax:x"), ("output.logits.scale", "nan"),
    ("output.logits.scale", "1e38"), ("output.logits.axis", "-3"),
]


@pytest.mark.parametrize("key,value", BAD_METADATA)
def test_float_io_metadata_is_checked_at_load(digits, key, value):
    program = replace(digits, metadata={**digits.metadata, key: value})
    with pytest.raises(InvalidError, match="metadata") as e:
        vm.load(program)
    assert len(str(e.value)) < 400


def test_float_io_without_warnings_on_extreme_inputs(digits):
    model = vm.load(replace(digits, metadata={**digits.metadata,
                                              "input.image.scale": "1e-45"}))
    x = np.full(model.inputs[0].shape, 3.0e38, np.float32)
    x[0, 0, 0, 0] = -3.0e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.run({"image": x}, float_io=True)["logits"]
        assert np.isfinite(out).all()
        with pytest.raises(TrapError, match="non-finite"):
            model.run({"image": np.full(model.inputs[0].shape, 1e300)}, float_io=True)
        with pytest.raises(TrapError, match="not a float array"):
            model.run({"image": _Refuses(KeyError("k"))}, float_io=True)


# -- message lengths -----------------------------------------------------------------------------

def test_a_huge_attribute_gives_a_short_message():
    b = Builder("m")
    x = b.input("x", (1, 1, 4, 4), 8)
    with pytest.raises(InvalidError) as e:
        b.op("max_pool2d", x, pool_size=tuple(range(1, 65536)))
    assert len(str(e.value)) < 400


def test_a_huge_instruction_is_quoted_short():
    p = small_cnn()
    k = next(i for i, ins in enumerate(p.code) if ins.op == "max_pool2d")
    p.code[k] = replace(p.code[k], attrs={**p.code[k].attrs, "padding": (1,) * 65535})
    with pytest.raises(InvalidError) as e:
        vm.load(p)
    assert "instruction" in str(e.value) and len(str(e.value)) < 600


def test_every_message_is_capped():
    assert len(str(InvalidError("x" * 10 ** 6))) <= MAX_MESSAGE + 20
    assert isinstance(InvalidError("x"), DetvmError)
