"""Programs with symbols: format 2 details, the validator's refusals (each naming the
instruction and the reason), and the Model API (instances, out= buffers, run_many)."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vm
from compiler import Builder, parse
from vm.decoding import decode
from vm.encoding import HASH_BYTES, MAGIC, encode
from vm.errors import DetvmError, InvalidError, MalformedError, TrapError

MODELS = Path(vm.__file__).parent / "models"


def small(limit=8, extra=None):
    """N x 1 x 4 x 4 -> conv -> relu -> reshape [N, 8] -> dense -> [N, 3]."""
    b = Builder("small")
    b.symbol("N", limit)
    x = b.input("x", ("N", 1, 4, 4), 8)
    w = b.const("w", np.arange(-4, 4).reshape(2, 1, 2, 2) % 5, precision=8)
    y = b.relu(b.conv2d(x, w, channels=2, kernel_size=2, strides=2, use_bias=False))
    y = b.op("cvm_right_shift", b.op("reshape", y, shape=("N", 8)), precision=8, shift_bit=2)
    d = b.const("d", np.arange(24).reshape(3, 8) % 7 - 3, precision=8)
    y = b.dense(y, d, units=3, use_bias=False)
    if extra:
        y = extra(b, y)
    return b.output(y).build()


def rehash(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


# -- format ------------------------------------------------------------------------------------

def test_fixed_programs_keep_format_1_and_their_bytes():
    for name in ("demo.dvm", "digits.dvm"):
        data = (MODELS / name).read_bytes()
        assert data[8:10] == b"\x01\x00"
        assert encode(decode(data)) == data


def test_format_2_layout():
    data = encode(small())
    assert data[8:10] == b"\x02\x00" and struct.unpack("<I", data[12:16])[0] == 6
    assert data[16:20] == b"META" and b"SYMS" in data
    assert vm.load(data).hash == hashlib.sha256(data[:-HASH_BYTES]).hexdigest()


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    body = data[:-HASH_BYTES]
    assert body.count(old) == 1
    return rehash(body.replace(old, new))


def test_format_2_without_symbols_is_not_canonical():
    fixed = encode(decode((MODELS / "demo.dvm").read_bytes()))
    body = bytearray(fixed[:-HASH_BYTES])
    body[8:10], body[12:16] = b"\x02\x00", struct.pack("<I", 6)
    at = body.index(b"TENS")
    body[at:at] = b"SYMS" + struct.pack("<QI", 4, 0)
    with pytest.raises(MalformedError, match="format 2 without symbols"):
        decode(rehash(bytes(body)))


def test_bad_symbol_references_are_malformed():
    data = encode(small())
    sym_dim = struct.pack("<I", 1 << 31)
    with pytest.raises(MalformedError, match="refers to symbol 5"):
        decode(_patch(data, b"x" + struct.pack("<BBB", 0, 8, 4) + sym_dim,
                      b"x" + struct.pack("<BBB", 0, 8, 4) + struct.pack("<I", (1 << 31) + 5)))
    b = Builder("fixed")
    b.output(b.op("reshape", b.input("x", (2, 3), 8), shape=(3, 2)))
    one, key = encode(b.build()), struct.pack("<I", 5) + b"shape"
    with pytest.raises(MalformedError, match="tag 5 does not fit"):      # format 1: no tag 5
        decode(_patch(one, key + b"\x02", key + b"\x05"))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_format_2_never_crashes(data):
    body = bytearray(encode(small())[:-HASH_BYTES])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(len(MAGIC), len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    try:
        vm.load(rehash(bytes(body)))
    except DetvmError as e:
        assert e.deterministic, e


# -- validation --------------------------------------------------------------------------------

def test_facts_are_affine():
    m = vm.load(small(limit=8))
    assert str(m.gas_formula).endswith("*N") and m.gas == m.gas_for(N=8)
    for n in range(1, 9):
        inst = m.instance(N=n)
        assert inst.analysis.gas == m.gas_for(N=n) == m.gas_formula.const + \
            dict(m.gas_formula.coeffs)["N"] * n
        assert inst.analysis.peak_memory == m.memory_for(N=n)
    assert m.hash == vm.load(encode(small(limit=8))).hash != vm.load(small(limit=9)).hash


def test_ceilings_are_checked_at_the_maximum():
    m = vm.load(small(limit=1000))
    limits = vm.Limits(max_memory=m.memory_for(N=500))
    with pytest.raises(InvalidError, match=r"peak memory .* \(at N = 1000\) exceeds"):
        vm.load(small(limit=1000), limits=limits)
    with pytest.raises(InvalidError, match=r"gas .* \(at N = 1000\) exceeds"):
        vm.load(small(limit=1000), limits=vm.Limits(max_gas=m.gas_for(N=999)))


def refused(text: str, match: str):
    with pytest.raises(InvalidError, match=match):
        parse(text)


HEAD = 'model "m"\nsymbol N <= 4\ninput %x : [N, 3, 2] p8\n'


@pytest.mark.parametrize("body, match", [
    ("%y = sum %x {axis=[0]}", r"sum .* includes the batch axis"),
    ("%y = transpose %x {axes=[1, 0, 2]}", r"axes \(1, 0, 2\) move the batch axis"),
    ("%y = argmax %x {axis=0}", r"axis 0 is the batch axis"),
    ("%y = strided_slice %x {begin=[0], end=[2]}", r"stops before the last row"),
    ("%y = strided_slice %x {begin=[1], end=[N]}", r"does not start at row 0"),
    ("%y = reshape %x {shape=[6, N]}", r"output 0 has shape \[6, 1\] for N = 1"),
    ("%y = squeeze %x", r"axis=\(\) means every axis"),
    ("const @w : [2, 2] p8 = [1, 2, 3, 4]\n%y = dense @w, %x", "shares|dense"),
    ("%y = tile %x {reps=[2, 1, 1]}", r"repeat the batch axis"),
])
def test_refusals_name_the_instruction(body, match):
    refused(HEAD + body + "\noutput %y\n", match)


def test_more_refusals():
    refused('model "m"\nsymbol N <= 4\nsymbol M <= 4\ninput %x : [N, 2] p8\n'
            'input %y : [M, 2] p8\n%z = elemwise_add %x, %y\noutput %z\n', "mixes the batches")
    refused('model "m"\nsymbol N <= 4\nsymbol M <= 4\ninput %x : [N, 2] p8\noutput %x\n',
            "symbol M is declared but no input has it")
    refused('model "m"\nsymbol N <= 4\ninput %x : [2, N] p8\noutput %x\n', "undeclared|dim 1")
    refused('model "m"\nsymbol N <= 0\ninput %x : [N] p8\noutput %x\n', "outside")
    refused('model "m"\nsymbol N <= 4\ninput %x : [N, 2] p8\ninput %s : [1, 2] p8\n'
            '%y = reshape %s {shape=[N, 2]}\noutput %y, %x\n', "reads no batched input")
    # a batched non_max_suppression: CVM's gas weight grows with the batch
    refused('model "m"\nsymbol N <= 4\ninput %d : [N, 3, 6] p8\ninput %c : [N] p8\n'
            '%y = non_max_suppression %d, %c\noutput %y\n', "gas weight .* depends on N")


def test_a_wrong_batch_rule_breaks_the_law(monkeypatch):
    """What the per-op rules guard: strided_slice reversing axis 0 keeps shapes [N, ...], so
    only its rule refuses it; with a careless rule the rows would come out reversed."""
    import ops
    from dataclasses import replace
    text = HEAD + "%y = strided_slice %x {begin=[-1], end=[-100], stride=[-1]}\noutput %y\n"
    refused(text, "skips or reverses rows|does not start")
    op = ops.get("strided_slice")
    monkeypatch.setitem(ops.registry.REGISTRY, "strided_slice", replace(op, batch="rows"))
    m = vm.load(parse(text))
    x = np.arange(24, dtype=np.int8).reshape(4, 3, 2)
    whole = m.run({"x": x})["y"]
    rows = np.concatenate([m.run({"x": x[r:r + 1]})["y"] for r in range(4)])
    assert not np.array_equal(whole, rows)


# -- the Model API -----------------------------------------------------------------------------

X = np.random.default_rng(7).integers(-127, 128, (8, 1, 4, 4)).astype(np.int8)


def test_inputs_are_checked():
    m = vm.load(small(limit=8))
    with pytest.raises(TrapError, match=r"N = 9 outside \[1, 8\]"):
        m.run({"x": np.zeros((9, 1, 4, 4), np.int8)})
    with pytest.raises(TrapError, match=r"shape \(2, 4, 4\) != \(N, 1, 4, 4\)"):
        m.run({"x": np.zeros((2, 4, 4), np.int8)})
    with pytest.raises(TrapError, match="outside"):
        m.gas_for(N=0)
    with pytest.raises(TrapError, match="unknown symbol"):
        m.gas_for(M=1)


def test_out_buffers_are_written_in_place():
    m = vm.load(small())
    want = m.run({"x": X})
    name = m.outputs[0].name
    buf = np.full(want[name].shape, 99, dtype=want[name].dtype)
    got = m.run({"x": X}, out={name: buf})
    assert got[name] is buf and np.array_equal(buf, want[name])
    ref = vm.load(small(), vm.reference())
    buf2 = np.zeros_like(buf)
    assert ref.run({"x": X}, out={name: buf2})[name] is buf2 and np.array_equal(buf2, buf)
    ro = np.zeros_like(buf)
    ro.setflags(write=False)
    for b in [np.zeros(buf.shape, np.int64), np.zeros((7, 3), buf.dtype), buf.astype(">i4"),
              ro, [1, 2]]:
        with pytest.raises(TrapError, match=r"out\["):
            m.run({"x": X}, out={name: b})
    with pytest.raises(TrapError, match="unknown output"):
        m.run({"x": X}, out={"nope": buf})
    with pytest.raises(TrapError, match="float_io"):
        m.run({"x": X}, out={name: buf}, float_io=True)


def test_out_buffer_of_a_fixed_model_and_an_output_read_later():
    b = Builder("f")
    x = b.input("x", (2, 3), 8)
    y = b.relu(x)
    z = b.op("elemwise_add", y, y)
    m = vm.load(b.output(y, z, x).build())
    xs = np.array([[1, -2, 3], [-4, 5, -6]], np.int8)
    bufs = {"relu_0": np.zeros((2, 3), np.int8), "elemwise_add_0": np.zeros((2, 3), np.int32),
            "x": np.zeros((2, 3), np.int8)}
    got = m.run({"x": xs}, out=bufs)
    assert all(got[k] is bufs[k] for k in bufs)
    assert bufs["relu_0"].tolist() == [[1, 0, 3], [0, 5, 0]]
    assert bufs["elemwise_add_0"].tolist() == [[2, 0, 6], [0, 10, 0]]
    assert np.array_equal(bufs["x"], xs)


def test_run_many_batches_and_splits():
    m = vm.load(small(limit=3))
    items = [{"x": X[k:k + 1]} for k in range(7)] + [{"x": X[:2]}]
    singles = [m.run(i) for i in items]
    got = m.run_many(items)
    assert len(got) == len(items)
    for g, s in zip(got, singles):
        assert list(g) == list(s) and all(g[k].tobytes() == s[k].tobytes() for k in g)
    assert set(m._instances) <= {(("N", n),) for n in range(1, 4)}
    with pytest.raises(TrapError, match="item 1"):
        m.run_many([{"x": X[:1]}, {"x": X[:1, :, :2]}])
    assert m.run_many([]) == []


def test_fixed_shape_consumers_refuse_symbols():
    from compiler.cvm.export import export_cvm
    from vm.runtime import CVMError, CVMModel
    with pytest.raises(InvalidError, match="CVM models have fixed shapes"):
        export_cvm(small())
    with pytest.raises(CVMError, match="needs fixed shapes"):
        CVMModel(vm.load(small()))


def test_run_many_keeps_unbatched_inputs_apart():
    b = Builder("shared")
    b.symbol("N", 4)
    x = b.input("x", ("N", 3), 8)
    s = b.input("s", (1, 3), 8)
    m = vm.load(b.output(b.op("broadcast_add", x, s)).build())
    items = [{"x": np.full((1, 3), k, np.int8), "s": np.full((1, 3), k // 2, np.int8)}
             for k in range(5)]
    got = m.run_many(items)
    assert [g["broadcast_add_0"].tolist() for g in got] == \
        [[[k + k // 2] * 3] for k in range(5)]
