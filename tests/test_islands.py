"""Elementwise islands of byte inputs as tables (vm/islands.py): the bytes of the instructions
run one by one, on random islands of every elementwise op, one or two inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from compiler import Builder
from ops.base import bound
from tests.cases import values_for
from vm.islands import TableKernel

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
NUMPY = vm.cpu(backend="numpy")


def byte_input(b, name, kind):
    """An input taking at most 256 values: int8 (p8), or bytes by a requantize / relu."""
    if kind == "int8":
        return b.input(name, (2, 3, 4, 5), 8)
    x = b.input(name, (2, 3, 4, 5), 12)
    if kind == "relu":
        return b.op("clip", x, a_min=0, a_max=200)
    return b.op("requantize", x, multiplier=[5 << 20], shift=[24], qmin=0, qmax=255,
                zero_point=7)


@st.composite
def unary(draw):
    return draw(st.sampled_from([
        ("relu", {}), ("abs", {}), ("negative", {}),
        ("cvm_clip", {"precision": draw(st.integers(2, 9))}),
        ("cvm_right_shift", {"precision": draw(st.integers(2, 12)),
                             "shift_bit": draw(st.integers(1, 6))}),
        ("cvm_left_shift", {"precision": 16, "shift_bit": draw(st.integers(1, 4))}),
        ("clip", {"a_min": -draw(st.integers(0, 90)), "a_max": draw(st.integers(1, 90))}),
        ("requantize", {"multiplier": [draw(st.integers(0, (1 << 24) - 1))],
                        "shift": [draw(st.integers(1, 30))],
                        "zero_point_in": draw(st.integers(-40, 40)),
                        "zero_point": draw(st.integers(-40, 40)), "qmin": -300, "qmax": 300,
                        "rounding": draw(st.sampled_from(["fp32", "half_even", "half_up"]))})]))


def island_program(kind_a, kind_b, left, right, join, after):
    """The builder checks each op as it is added: an invalid chain raises there."""
    b = Builder("island")
    ys = []
    for name, kind, chain in (("a", kind_a, left), ("b", kind_b, right)):
        y = byte_input(b, name, kind)
        for op, attrs in chain:
            y = b.op(op, y, **attrs)
        ys.append(y)
    y = ys[0] if join is None else b.op(join, *ys)
    for op, attrs in after:
        y = b.op(op, y, **attrs)
    b.output(b.op("requantize", y, multiplier=[3 << 21], shift=[22], qmin=-100, qmax=100))
    return b.build()


@SETTINGS
@given(st.sampled_from(["int8", "relu", "bytes"]), st.sampled_from(["int8", "relu", "bytes"]),
       st.lists(unary(), max_size=3), st.lists(unary(), max_size=3),
       st.sampled_from(["elemwise_add", "elemwise_sub", "broadcast_add", "broadcast_mul",
                        "broadcast_max", None]), st.lists(unary(), max_size=2), st.data())
def test_islands_equal_the_reference(kind_a, kind_b, left, right, join, after, data):
    try:
        program = island_program(kind_a, kind_b, left, right, join, after)
    except vm.InvalidError:
        return                                    # a precision above 32 on the way
    feeds = {}
    for i in program.inputs:
        t = program.tensors[i]
        feeds[t.name] = np.array(data.draw(values_for(t.shape, t.precision))).reshape(t.shape)
    want = vm.load(program, vm.reference()).run(feeds)
    for ctx in (NUMPY, vm.cpu()):
        model = vm.load(program, ctx)
        got = model.run(feeds)
        assert all(got[k].tobytes() == want[k].tobytes() for k in want), ctx
    kinds = [type(s.kernel) for s in vm.load(program, NUMPY).plan.fast]
    assert TableKernel in kinds          # the final requantize, at least, reads bytes


def test_residual_merge_is_one_table_step():
    """A quantized model's residual addition: two rescales, an add, a requantize."""
    b = Builder("merge")
    y = byte_input(b, "y", "bytes")
    s = byte_input(b, "s", "bytes")
    a = b.op("requantize", y, multiplier=[1 << 30], shift=[14], zero_point_in=118,
             qmin=-(1 << 24), qmax=1 << 24)
    c = b.op("requantize", s, multiplier=[1415450055], shift=[15], qmin=-(1 << 24),
             qmax=1 << 24)
    b.output(b.op("requantize", b.op("broadcast_add", a, c), multiplier=[15170247],
                  shift=[40], qmin=0, qmax=255, rounding="fp32"))
    program = b.build()
    model = vm.load(program, NUMPY)
    tables = [s for s in model.plan.fast if isinstance(s.kernel, TableKernel)]
    assert len(tables) == 1 and len(tables[0].covers) == 4
    rng = np.random.default_rng(0)
    feeds = {n: rng.integers(-bound(12), bound(12) + 1, (2, 3, 4, 5)) for n in ("y", "s")}
    want = vm.load(program, vm.reference()).run(feeds)
    assert all(model.run(feeds)[k].tobytes() == want[k].tobytes() for k in want)


def test_a_wide_input_keeps_the_instructions():
    b = Builder("wide")
    x = b.input("x", (2, 3), 20)
    b.output(b.op("requantize", x, multiplier=[1 << 20], shift=[30], qmin=0, qmax=255))
    model = vm.load(b.build(), NUMPY)
    assert not any(isinstance(s.kernel, TableKernel) for s in model.plan.fast)


@pytest.mark.parametrize("threads", [None, 2])
def test_tables_on_lanes(monkeypatch, threads):
    """On two lanes the channel blocks spread over both whatever the size (MIN_WORK 0)."""
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr("ops.scratch.MIN_WORK", 0)
    b = Builder("lanes")
    y = byte_input(b, "y", "bytes")
    b.output(b.op("requantize", y, multiplier=[12345678], shift=[27], qmin=-128, qmax=127))
    program = b.build()
    x = {"y": np.random.default_rng(1).integers(-bound(12), bound(12) + 1, (2, 3, 4, 5))}
    want = vm.load(program, vm.reference()).run(x)
    got = vm.load(program, NUMPY, threads=threads).run(x)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)


def test_table_index_of_bytes_and_of_wider_storage_agree():
    rng = np.random.default_rng(2)
    table = rng.integers(-100, 100, 65536).astype(np.int16)
    kernel = TableKernel(table, [0, 0], [256, 256], np.int16)
    a, b = (rng.integers(0, 256, (3, 5, 7)) for _ in range(2))
    want = table[a * 256 + b]
    for dtype in (np.uint8, np.int32):
        assert np.array_equal(kernel(np, a.astype(dtype), b.astype(dtype)), want)
    shifted = TableKernel(table[:200 * 300], [-50, 7], [200, 300], np.int16)
    x, y = rng.integers(-50, 150, (4, 6)), rng.integers(7, 307, (4, 6))
    assert np.array_equal(shifted(np, x.astype(np.int32), y.astype(np.int16)),
                          table[(x + 50) * 300 + (y - 7)])


@st.composite
def per_channel(draw):
    """An island member reading a constant of one value per channel (or one value), a
    per-channel requantize, or a table."""
    c = 3
    vals = lambda lo, hi: draw(st.lists(st.integers(lo, hi), min_size=c, max_size=c))
    return draw(st.sampled_from([
        ("requantize", {"multiplier": vals(1, (1 << 24) - 1), "shift": vals(8, 30),
                        "axis": 1, "qmin": -(1 << 12), "qmax": 1 << 12,
                        "zero_point_in": draw(st.integers(-9, 9)),
                        "rounding": draw(st.sampled_from(["fp32", "half_even", "half_up"]))},
         None),
        ("broadcast_add", {}, np.array(vals(-900, 900)).reshape(1, c, 1, 1)),
        ("broadcast_sub", {}, np.array(vals(-900, 900)).reshape(1, c, 1, 1)),
        ("broadcast_mul", {}, np.array(vals(-3, 3)).reshape(1, c, 1, 1)),
        ("broadcast_max", {}, np.array([[[[draw(st.integers(-50, 50))]]]])),
        ("lut", {"low": [draw(st.integers(-300, 0))]},
         np.array(draw(st.lists(st.integers(-2000, 2000), min_size=1, max_size=600))))]))


@SETTINGS
@given(st.sampled_from(["int8", "relu", "bytes"]), st.lists(per_channel(), min_size=1,
                                                            max_size=4), st.data())
def test_islands_of_channel_constants_equal_the_reference(kind, chain, data):
    """Islands whose members read constants of one value per channel ((1, C, 1, 1)) or
    requantize per channel: a table per channel; the bytes of the instructions one by one."""
    b = Builder("channels")
    y = byte_input(b, "a", kind)
    try:
        for n, (op, attrs, const) in enumerate(chain):
            if op == "lut":
                y = b.op(op, b.const(f"t{n}", const, precision=12), y, **attrs)
            elif const is None:
                y = b.op(op, y, **attrs)
            else:
                y = b.op(op, y, b.const(f"c{n}", const, precision=12), **attrs)
        b.output(b.op("requantize", y, multiplier=[3 << 21], shift=[22], qmin=-100, qmax=100,
                      rounding="fp32"))
        program = b.build()
    except vm.InvalidError:
        return                                    # a precision above 32 on the way
    t = program.tensors[program.inputs[0]]
    feeds = {t.name: np.array(data.draw(values_for(t.shape, t.precision))).reshape(t.shape)}
    want = vm.load(program, vm.reference()).run(feeds)
    for ctx in (NUMPY, vm.cpu()):
        got = vm.load(program, ctx).run(feeds)
        assert all(got[k].tobytes() == want[k].tobytes() for k in want), ctx
    from vm.ranges import Ranges
    ranges = Ranges(program)
    covered = {k for s in vm.load(program, NUMPY).plan.fast if isinstance(s.kernel, TableKernel)
               for k in s.covers}
    span = lambda k: -np.subtract(*ranges.of(program.code[k].outputs[0])) + 1
    chained = []                 # the final requantize and the wide results it reads, back
    for k in range(len(program.code) - 1, -1, -1):  # to a result of at most 256 values
        if chained and span(k) <= 256 or program.code[k].op not in {op for op, _, _ in chain} \
                | {"requantize"}:
            break
        chained.append(k)
    assert set(chained) <= covered, (chain, chained, covered)


def test_a_batch_normalization_after_a_table_is_one_table_per_channel():
    """The PP-OCRv4 detector's head after its transposed convolution: a per-channel table's
    result rescaled, a per-channel constant added, requantized to bytes: one table step of 4
    channels x 256 values."""
    rng = np.random.default_rng(3)
    b = Builder("bn")
    x = byte_input(b, "x", "bytes")                      # (2, 3, 4, 5)
    y = b.op("requantize", x, multiplier=[1 << 30], shift=[14], zero_point_in=7,
             qmin=-(1 << 24), qmax=1 << 24)
    y = b.op("broadcast_add", y, b.const("bias", rng.integers(-(1 << 20), 1 << 20,
                                                             (1, 3, 1, 1)), precision=22))
    b.output(b.op("requantize", y, multiplier=[15170247], shift=[36], qmin=0, qmax=255,
                  rounding="fp32"))
    program = b.build()
    model = vm.load(program, NUMPY)
    tables = [s for s in model.plan.fast if isinstance(s.kernel, TableKernel)]
    assert [len(s.covers) for s in tables] == [3] and tables[0].kernel.table.size == 3 * 256
    feeds = {"x": rng.integers(-bound(12), bound(12) + 1, (2, 3, 4, 5))}
    want = vm.load(program, vm.reference()).run(feeds)
    for ctx in (NUMPY, vm.cpu()):
        assert all(vm.load(program, ctx).run(feeds)[k].tobytes() == want[k].tobytes()
                   for k in want)


def test_channel_tables_index_by_channel():
    rng = np.random.default_rng(4)
    table = rng.integers(-100, 100, 4 * 10).astype(np.int16)
    kernel = TableKernel(table, [-3], [10], np.int16, channels=4)
    a = rng.integers(-3, 7, (2, 4, 5, 6))
    want = table.reshape(4, 10)[np.arange(4)[None, :, None, None], a + 3]
    for dtype in (np.int8, np.int32):
        assert np.array_equal(kernel(np, a.astype(dtype)), want)


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("dtype,low", [(np.uint8, 0), (np.uint8, 17), (np.int8, -128),
                                       (np.int8, -3)])
def test_one_byte_input_tables_translate(channels, dtype, low):
    """One byte input and a byte result: each part's 256 entries by bit pattern through
    bytearray.translate, per channel plane (batch 2): the int32 index's values."""
    rng = np.random.default_rng(low + 200)
    span = 40
    table = rng.integers(-128, 128, channels * span).astype(np.int8)
    kernel = TableKernel(table, [low], [span], np.int8, channels=channels)
    a = rng.integers(low, low + span, (2, 4, 5, 6))
    want = table.reshape(channels, span)[np.arange(4)[None, :, None, None] % channels,
                                         a - low]
    got = kernel(np, a.astype(dtype))
    assert kernel._bytes and got.dtype == np.int8 and np.array_equal(got, want)
    assert np.array_equal(kernel(np, a.astype(np.int32)), want)


def test_channel_tables_stay_within_their_budget():
    """Four islands of two byte inputs and 16 channels, 4 MB of int32 tables each, in a small
    program: the tables of one part per channel a plan makes total at most CHANNEL_BYTES, the
    other islands run as instructions; the bytes stay the reference's."""
    from vm import islands
    rng = np.random.default_rng(5)
    b = Builder("budget")
    a, c = (b.op("requantize", b.input(n, (1, 16, 2, 2), 12), multiplier=[5 << 20],
                 shift=[24], qmin=0, qmax=255) for n in ("a", "c"))
    outs = []
    for n in range(4):
        y = b.op("broadcast_add", b.op("elemwise_add", a, c),
                 b.const(f"k{n}", rng.integers(-999, 999, (1, 16, 1, 1)), precision=12))
        outs.append(b.op("requantize", y, multiplier=[int(rng.integers(1, 1 << 24))],
                         shift=[8], qmin=-(1 << 20), qmax=1 << 20))
    b.output(*outs)
    program = b.build()
    model = vm.load(program, NUMPY)
    tables = [s.kernel.table.nbytes for s in model.plan.fast
              if isinstance(s.kernel, TableKernel) and s.kernel.offsets is not None]
    assert 0 < sum(tables) <= islands.CHANNEL_BYTES < 4 * 16 * 65536 * 4
    assert len(tables) < 4
    feeds = {n: rng.integers(-bound(12), bound(12) + 1, (1, 16, 2, 2)) for n in ("a", "c")}
    want = vm.load(program, vm.reference()).run(feeds)
    assert all(model.run(feeds)[k].tobytes() == want[k].tobytes() for k in want)
