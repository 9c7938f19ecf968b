"""lut (ops/table.py): the full 256 x 256 form on every argument pair, broadcasting in both
orders, the assembly round trip, validation errors, the formal executor and the certificate."""
from __future__ import annotations

import numpy as np
import pytest

import ops
import vm
from compiler import Builder, disassemble, parse
from ops.base import Ref
from tests.test_text import roundtrip
from vm.errors import InvalidError

LUT = ops.get("lut")


def _pair_table(rng):
    """A 256 x 256 uint8-valued table (row: an int8 argument, column: a uint8 one)."""
    return rng.integers(0, 256, (256, 256))


def _program(table, shape_a, shape_b, low=(-128, 0)):
    b = Builder("pairs")
    t = b.const("t", table)
    a, c = b.input("a", shape_a, 10), b.input("b", shape_b, 10)
    b.output(b.op("lut", t, a, c, low=list(low), outputs=["y"]))
    return b.build()


def test_every_pair_of_the_full_table():
    rng = np.random.default_rng(0)
    table = _pair_table(rng)
    a, c = np.meshgrid(np.arange(-128, 128), np.arange(256), indexing="ij")
    out = vm.load(_program(table, (256, 256), (256, 256))).run(
        {"a": a.astype(np.int16), "b": c.astype(np.int16)})["y"]
    assert np.array_equal(out, table)


@pytest.mark.parametrize("shape_a, shape_b", [((3, 1, 5), (4, 1)), ((4, 1), (3, 1, 5)),
                                              ((1,), (2, 3)), ((2, 3), (1,)), ((2, 3), (2, 3))])
def test_broadcasting_in_both_orders_equals_the_reference(shape_a, shape_b):
    rng = np.random.default_rng(1)
    table = _pair_table(rng)
    a = rng.integers(-140, 140, shape_a)               # some values outside: clamped
    c = rng.integers(-10, 270, shape_b)
    want = table[np.clip(a + 128, 0, 255), np.clip(c, 0, 255)]
    model = vm.load(_program(table, shape_a, shape_b))
    feeds = {"a": a.astype(np.int16), "b": c.astype(np.int16)}
    assert np.array_equal(model.run(feeds)["y"], want)
    ref = vm.load(model.program, vm.reference()).run(feeds)["y"]
    assert ref.tobytes() == model.run(feeds)["y"].tobytes()
    scalar = LUT.scalar([Ref.from_array(table), Ref.from_array(a), Ref.from_array(c)],
                        dict(low=(-128, 0)))
    assert scalar.to_array().tolist() == want.tolist()


@pytest.mark.parametrize("dtype, low", [(np.uint8, 0), (np.int8, -128), (np.uint8, 1),
                                        (np.int8, -127), (np.int8, 0)])
@pytest.mark.parametrize("dims", [(256, 256), (256, 255), (255, 256)])
def test_byte_arguments_equal_the_scalar_rule(dtype, low, dims):
    """The kernel's byte path (bytes used as indices where they need no clamping) and its
    int64 path give the scalar rule's values, one and two arguments, broadcast."""
    rng = np.random.default_rng(dims[0] + low)
    info = np.iinfo(dtype)
    table = rng.integers(-(1 << 20), 1 << 20, dims)
    a = rng.integers(info.min, info.max + 1, (2, 3, 4)).astype(dtype)
    c = rng.integers(info.min, info.max + 1, (3, 1)).astype(dtype)
    a.reshape(-1)[:2], c.reshape(-1)[:2] = (info.min, info.max), (info.max, info.min)
    one = rng.integers(-(1 << 20), 1 << 20, dims[0] + 44)
    for args, t in (((a, c), table), ((a,), table[:, 0]), ((c,), one)):
        got = LUT.kernel(np, t, *args, low=[low] * len(args))
        want = LUT.scalar([Ref.from_array(t), *map(Ref.from_array, args)],
                          dict(low=[low] * len(args)))
        assert got.tolist() == want.to_array().tolist()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint8, np.int8])
@pytest.mark.parametrize("low", [0, -128, 77, -(2**31 - 1), 2**31 - 1, 2**31 - 300])
def test_wide_arguments_equal_the_scalar_rule(dtype, low):
    """The kernel's clamped indices (in the argument's own dtype where the window fits it, else
    in int64), one and two arguments, values inside, at and beyond both ends of the window and
    at the ends of the dtype (values are at most 32-bit: an int64 array holds int32 values)."""
    rng = np.random.default_rng(abs(low) % 1000)
    info = np.iinfo(dtype if dtype != np.int64 else np.int32)
    for dims in ((300,), (256, 40)):
        table = rng.integers(-(1 << 20), 1 << 20, dims)
        args = []
        for n in dims:
            window = [low + v for v in (-1, 0, 1, n - 2, n - 1, n)]
            values = [v for v in window if info.min <= v <= info.max] + [info.min, info.max]
            values += rng.integers(info.min, info.max, 24, endpoint=True).tolist()
            args.append(np.array(values[:32] + [values[0]] * (32 - len(values[:32])), dtype))
        args = args if len(dims) == 2 else args[:1]
        if len(args) == 2:
            args[1] = args[1][:8].reshape(8, 1)                  # broadcast: (8, 32)
        lows = [low] * len(args)
        got = LUT.kernel(np, table, *args, low=lows)
        want = LUT.scalar([Ref.from_array(table), *map(Ref.from_array, args)], dict(low=lows))
        assert got.tolist() == want.to_array().tolist()


@pytest.mark.parametrize("dtype,low", [(np.uint8, 0), (np.int8, -128), (np.int16, -3),
                                       (np.int32, -(1 << 31) + 5)])
def test_blocks_and_lanes_equal_the_scalar_rule(monkeypatch, dtype, low):
    """Arguments of one shape beyond BLOCK elements (BYTES_WHOLE for bytes) are gathered in
    blocks spread over the lanes: the same values as the scalar rule, one and two arguments,
    with the limits made small so that a few hundred elements take that path."""
    from ops import table as kernels
    from ops.scratch import Lanes, Workspace, using
    monkeypatch.setattr(kernels, "BLOCK", 64)
    monkeypatch.setattr(kernels, "BYTES_WHOLE", 64)
    monkeypatch.setattr("ops.scratch.MIN_WORK", 1)
    rng = np.random.default_rng(abs(low) % 97)
    info = np.iinfo(dtype)
    lanes = Lanes(2)
    try:
        for dims in ((256,), (256, 256), (300, 7)):
            table = rng.integers(-(1 << 20), 1 << 20, dims)
            args = [rng.integers(max(info.min, low - 3), min(info.max, low + n + 3), 333,
                                 endpoint=True).astype(dtype) for n in dims]
            want = LUT.scalar([Ref.from_array(table), *map(Ref.from_array, args)],
                              dict(low=[low] * len(dims))).to_array()
            for ctx in (using(Workspace()), using(Workspace(), lanes)):
                with ctx:
                    got = LUT.kernel(np, table, *args, low=[low] * len(dims))
                assert got.tolist() == want.tolist(), (dims, ctx)
    finally:
        lanes.close()


def test_one_input_form_and_its_precision():
    b = Builder("sigmoid")
    t = b.const("t", np.arange(256) // 2)             # 0..127: p8
    x = b.input("x", (2, 5), 10)
    y = b.op("lut", t, x, low=[-128], outputs=["y"])
    program = b.output(y).build()
    assert program.tensors[program.code[0].outputs[0]].precision == 8
    x = np.array([[-128, -1, 0, 127, -300], [5, 6, 7, 8, 300]], np.int16)
    out = vm.load(program).run({"x": x})["y"]
    assert out.tolist() == [[0, 63, 64, 127, 0], [66, 67, 67, 68, 127]]


def test_assembly_round_trip():
    rng = np.random.default_rng(2)
    roundtrip(_program(rng.integers(-3, 4, (4, 8)), (2, 1, 3), (5, 1), low=(-2, 7)))
    text = roundtrip(_program(_pair_table(rng), (2, 3), (3,)))
    assert "= lut @t, %a, %b {low=[-128, 0]}" in text
    b = Builder("one")
    b.output(b.op("lut", b.const("t", [5, -6, 7]), b.input("x", (3,), 4), low=[1]))
    assert parse(disassemble(b.build())).code == b.build().code


@pytest.mark.parametrize("shapes, low, message", [
    ([(4,), (2,), (2,)], [0, 0], "needs a 2-D table, got shape (4,)"),
    ([(4, 4), (2,)], [0], "needs a 1-D table, got shape (4, 4)"),
    ([(4,), (2,)], [0, 0], "low has 2 value(s) for 1 data input(s)"),
    ([(4, 4), (2, 3), (4,)], [0, 0], "do not broadcast"),
    ([(257, 256), (1,), (1,)], [0, 0], "65792 entries (at most 65536)"),
])
def test_validation_errors_quote_the_instruction(shapes, low, message):
    b = Builder("bad")
    t = b.const("t", np.zeros(shapes[0], np.int64))
    data = [b.input(f"x{k}", s, 9) for k, s in enumerate(shapes[1:])]
    with pytest.raises(InvalidError, match="lut") as e:
        b.op("lut", t, *data, low=low)
    assert message in str(e.value)


def test_three_data_inputs_are_refused():
    b = Builder("bad")
    t = b.const("t", np.zeros((2, 2), np.int64))
    x = b.input("x", (1,), 9)
    with pytest.raises(InvalidError, match="lut takes 2..3 inputs, got 4"):
        b.op("lut", t, x, x, x, low=[0, 0])


def test_formal_executor_and_certificate():
    pytest.importorskip("z3")
    import verify
    rng = np.random.default_rng(3)
    program = _program(rng.integers(0, 256, (40, 24)), (2, 1, 3), (4, 1), low=(-20, 0))
    model = vm.load(program)
    feeds = {"a": rng.integers(-30, 30, (2, 1, 3)).astype(np.int16),
             "b": rng.integers(-5, 30, (4, 1)).astype(np.int16)}
    cpu = model.run(feeds)["y"]
    formal = vm.load(program, vm.formal()).run(feeds)["y"]
    assert formal.tobytes() == cpu.tobytes()
    cert = verify.certify(model)
    assert cert.proved, [(o.name, o.status, o.detail) for o in cert.obligations]
