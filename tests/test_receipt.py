"""Receipts (vm/receipt.py): canonical bytes, strict reading of untrusted JSON, comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vm
from tests.conftest import random_input, small_cnn
from vm import receipt
from vm.errors import MalformedError


@pytest.fixture(scope="module")
def run():
    program = small_cnn()
    model = vm.load(program)
    x = random_input(model)
    return model, x, vm.trace(model, x, keep="all")


def test_canonical_json(run):
    model, _, tr = run
    r = receipt.make(tr, model.name)
    data = receipt.dumps(r)
    assert data.endswith(b"}\n") and b" " not in data and b"\n" not in data[:-1]
    assert data == (json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"))
                    + "\n").encode()
    assert receipt.loads(data) == r and receipt.dumps(receipt.loads(data)) == data
    assert r["semantics"] == 1 and r["model"] == {"name": "small-cnn", "sha256": model.hash}
    assert r["gas"] == model.gas and r["executor"] == "cpu"
    assert r["trace"]["root"] == tr.root and r["trace"]["leaves"] == len(model.program.code)


def test_receipts_of_two_executors_differ_only_in_the_executor(run):
    model, x, tr = run
    ref = vm.trace(vm.load(model.program, vm.reference()), x)
    a, b = receipt.make(tr, model.name), receipt.make(ref, model.name)
    assert a["executor"] == "cpu" and b["executor"] == "reference"
    assert receipt.dumps({**a, "executor": "x"}) == receipt.dumps({**b, "executor": "x"})


def test_levels(run):
    model, _, tr = run
    root = receipt.make(tr, model.name, "root")
    assert "instructions" not in root["trace"] and root["trace"]["root"] == tr.root
    full = receipt.loads(receipt.dumps(receipt.make(tr, model.name, "full")))
    for step, entry in zip(full["trace"]["instructions"], tr.entries):
        for o, mine in zip(step["outputs"], entry.outputs):
            assert np.array_equal(receipt.data_of(o), mine.values)
    with pytest.raises(ValueError, match="level"):
        receipt.make(tr, "", "everything")


def test_compare_names_the_first_difference(run):
    model, x, tr = run
    good = receipt.make(tr, model.name)
    assert receipt.compare(good, tr).match
    bad = json.loads(json.dumps(good))
    bad["trace"]["instructions"][3]["outputs"][0]["sha256"] = "0" * 64
    bad["trace"]["instructions"][5]["outputs"][0]["sha256"] = "0" * 64
    v = receipt.compare(bad, tr)
    assert not v.match and v.first == 3 and "instruction 3 (max_pool2d) differs" in v.problems[0]
    other = dict(good, model={"name": "", "sha256": "1" * 64})
    assert "is not the receipt's" in receipt.compare(other, tr).problems[0]
    y = dict(x, x=np.where(x["x"] == 5, 6, x["x"]).astype(np.int8))
    v = receipt.compare(good, vm.trace(model, y))
    assert v.first is None and v.problems[0].startswith("input 'x': sha256")


BAD = [
    (b"[]", "receipt must be an object"),
    (b"{", "not JSON"),
    (b"\xff", "not JSON"),
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b'{"a": 1.5}', "no floats"),
    (b'{"a": NaN}', "no floats"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_bad_json_is_malformed(data, message):
    with pytest.raises(MalformedError, match=message):
        receipt.loads(data)


def mutations(good: dict):
    """(path, value, message) edits of a good receipt, each of which must be refused."""
    yield ("schema",), "other", "schema"
    yield ("version",), 2, "schema version 2 not supported"
    yield ("gas",), True, "gas must be an int"
    yield ("gas",), "7", "gas must be an int"
    yield ("model", "sha256"), "ABC", "model.sha256 must be 64 lowercase hex"
    yield ("inputs", 0, "shape"), [-1], "shape must be a list of non-negative ints"
    yield ("inputs", 0, "dtype"), "float32", "not a storage dtype"
    yield ("trace", "level"), "all", "trace.level"
    yield ("trace", "level"), "root", "present exactly when"
    yield ("trace", "instructions", 0, "index"), "0", "index must be an int"
    yield ("trace", "instructions", 0, "extra"), 1, "unknown field 'extra'"


def test_bad_fields_are_malformed(run):
    model, _, tr = run
    good = receipt.make(tr, model.name)
    for path, value, message in mutations(good):
        doc = json.loads(json.dumps(good))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(MalformedError, match=message):
            receipt.loads(json.dumps(doc))
    doc = json.loads(json.dumps(good))
    del doc["executor"]
    with pytest.raises(MalformedError, match="missing executor"):
        receipt.loads(json.dumps(doc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4)).map(
    lambda v: json.dumps(v).encode()))
def test_fuzzed_receipts_only_raise_malformed(data):
    try:
        receipt.loads(data)
    except MalformedError:
        pass


def test_data_that_does_not_fit_its_shape_is_malformed(run):
    model, _, tr = run
    full = receipt.make(tr, model.name, "full")
    t = full["trace"]["instructions"][0]["outputs"][0]
    with pytest.raises(MalformedError, match="data bytes for shape"):
        receipt.data_of(dict(t, data="AAAA"))
    with pytest.raises(MalformedError, match="not base64"):
        receipt.data_of(dict(t, data="!!"))


def test_the_shipped_receipt_replays():
    """The digits CNN's receipt, made once and shipped: every machine must reproduce it."""
    from detvm.common import DEMO_DIR
    shipped = receipt.loads((DEMO_DIR / "digits_receipt.json").read_bytes())
    x = dict(np.load(DEMO_DIR / "digits_inputs.npz"))
    for ctx in (vm.cpu(), vm.reference()):
        model = vm.load(DEMO_DIR / "digits.dvm", ctx)
        assert receipt.compare(shipped, model.trace({"image": x["image"]})).match
