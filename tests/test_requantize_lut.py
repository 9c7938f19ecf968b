"""requantize on the CPU's float path in cache-sized blocks, a requantize followed by a lut of
its result fused into one pass, and a lut of a lut as one composed table (ops/fastquant.py,
vm/fusion.py): the op kernels' bytes (themselves checked against the scalar rules) on every
blocking branch, and whole programs against the reference executor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import ops
import vm
from compiler import Builder
from ops import fastquant, scratch
from ops.base import bound
from ops.scratch import Lanes, Workspace, using
from ops.table import PreparedLut
from ops.tails import Requant

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
REQUANTIZE, LUT = ops.get("requantize"), ops.get("lut")


@st.composite
def requantizations(draw):
    """(input array, attrs, tail): shapes that take every blocking branch at a small BLOCK
    (channel planes, parts of one, channels-last rows, per tensor), every rounding."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    rounding = draw(st.sampled_from(["fp32", "half_even", "half_up"]))
    axis = draw(st.sampled_from([ndim - 1, ndim - 1, *range(ndim)]))   # channels last often
    if draw(st.sampled_from([True, True, False])):                      # per channel
        shape = shape[:axis] + (max(2, shape[axis]),) + shape[axis + 1:]
        n = shape[axis]
    else:
        n = 1
    top = (1 << 24) - 1 if rounding == "fp32" else (1 << 31) - 1
    precision = draw(st.sampled_from([8, 16, 22, 32]))
    attrs = dict(multiplier=draw(st.lists(st.integers(0, top), min_size=n, max_size=n)),
                 shift=draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)),
                 axis=axis, rounding=rounding,
                 zero_point_in=draw(st.sampled_from([0, 0, 3, -70000 >> 2])),
                 zero_point=draw(st.integers(-20, 20)))
    byte = draw(st.sampled_from([(0, 255), (-128, 127), (-1000, 1000)]))
    attrs["qmin"], attrs["qmax"] = byte
    rng = np.random.default_rng(draw(st.integers(0, 1 << 30)))
    r = bound(precision)
    x = rng.integers(-r, r + 1, shape)
    x[rng.random(shape) < 0.2] = r
    x[rng.random(shape) < 0.2] = -r
    dtype = np.int8 if precision == 8 else np.int16 if precision == 16 else np.int32
    tail = Requant().then_clip(0, None) if draw(st.booleans()) else Requant()
    return x.astype(dtype), REQUANTIZE.check_attrs(attrs), precision, tail


def branch(kernel, shape, block: int) -> str:
    """Which blocking of RequantizeKernel._chunks a case takes."""
    if kernel.axis is None:
        return "per tensor"
    post = int(np.prod(shape[kernel.axis + 1:]))
    return "channels last" if post == 1 else "parts of a plane" if post >= block else "planes"


def on_lanes(lanes: int, fn):
    """fn() in a workspace of its own, on ``lanes`` lanes (a pool of its own beyond one)."""
    pool = Lanes(lanes) if lanes > 1 else None
    try:
        with using(Workspace(), pool):
            return fn()
    finally:
        if pool is not None:
            pool.close()


def requantized(x, attrs, tail) -> np.ndarray:
    """requantize's int64 kernel, then the tail's clip."""
    y = REQUANTIZE.kernel(np, x, **attrs).astype(np.int64)
    return np.clip(y, tail.lo, tail.hi)


@SETTINGS
@given(requantizations(), st.sampled_from([1, 5, 64, 1 << 17]), st.sampled_from([1, 2]),
       st.sampled_from(["byte", "int16", "int32", "int64"]))
def test_blocked_requantize_equals_the_op_kernel(monkeypatch, case, block, lanes, narrow):
    """Into the byte type the clipped results fit when there is one (the rounder's low bytes,
    odd zero points included), or the ``narrow`` integer type when they fit it (the rounder's
    bits minus a constant), else int64; on two lanes the blocks are spread over them whatever
    the tensor's size (MIN_WORK 0)."""
    x, attrs, precision, tail = case
    monkeypatch.setattr(fastquant, "BLOCK", block)
    monkeypatch.setattr(scratch, "MIN_WORK", 0)
    want = requantized(x, attrs, tail)
    lo = min(attrs["qmin"] if tail.lo is None else max(attrs["qmin"], tail.lo), want.min())
    hi = max(attrs["qmax"] if tail.hi is None else min(attrs["qmax"], tail.hi), want.max())
    byte = next((t for t in (np.uint8, np.int8) if np.iinfo(t).min <= lo and
                 hi <= np.iinfo(t).max), None)
    wide = np.dtype(narrow) if narrow != "byte" else None
    out_dtype = byte if narrow == "byte" and byte is not None else wide if wide is not None \
        and np.iinfo(wide).min <= lo and hi <= np.iinfo(wide).max else np.int64
    kernel = fastquant.prepare(attrs, precision, x.ndim, out_dtype, tail)
    if kernel is None:
        return
    event(branch(kernel, x.shape, block))
    event(f"{np.dtype(out_dtype)}, rounder: {kernel.rounder is not None}, odd zero point: "
          f"{attrs['zero_point'] % 2}")
    got = on_lanes(lanes, lambda: kernel(np, x))
    assert got.dtype == out_dtype and np.array_equal(got, want)


@SETTINGS
@given(requantizations(), st.sampled_from([1, 5, 64, 1 << 17]), st.integers(-300, 300),
       st.integers(1, 300), st.sampled_from([np.uint8, np.int8, np.int32]),
       st.sampled_from([1, 2]), st.data())
def test_requantize_then_lut_equals_the_op_kernels(monkeypatch, case, block, low, size,
                                                   out_dtype, lanes, data):
    """Bytes of either kind, tables shorter or longer than the requantized range (clamped
    indices), results of one byte (pairs gathered) or wider, odd block sizes, blocks on one
    lane or spread over two."""
    x, attrs, precision, tail = case
    monkeypatch.setattr(fastquant, "BLOCK", block)
    monkeypatch.setattr(scratch, "MIN_WORK", 0)
    info = np.iinfo(out_dtype)
    rng = np.random.default_rng(data.draw(st.integers(0, 1 << 30)))
    table = rng.integers(max(info.min, -1 << 20), min(info.max, 1 << 20) + 1, size)
    kernel = fastquant.prepare_lut(attrs, precision, x.ndim, tail, table, low, out_dtype)
    if kernel is None:
        assert attrs["qmin"] == -1000 or fastquant.prepare(attrs, precision, x.ndim,
                                                            np.int64, tail) is None
        return
    event(branch(kernel, x.shape, block))
    event(f"translated: {kernel.by_bits is not None}, rounder: {kernel.rounder is not None}")
    got = on_lanes(lanes, lambda: kernel(np, x))
    want = LUT.kernel(np, table, requantized(x, attrs, tail), low=[low])
    assert got.dtype == np.dtype(out_dtype) and np.array_equal(got, want)


@pytest.mark.parametrize("zero_point,qmin,qmax", [(130, 0, 255), (-3, -128, 127), (7, 0, 100),
                                                  (-8, -128, 127)])
def test_the_rounder_path_on_ties_and_clip_edges(zero_point, qmin, qmax):
    """Every input in [-5000, 5000] and the bound's extremes at scales 1/2 and 3/8 (ties
    rounding to even, up and down), per tensor and per channel, odd and even zero points,
    through the low byte of ROUNDER + v, then a lut or not: the op kernels' bytes, and the
    path taken."""
    row = np.concatenate([np.arange(-5000, 5001), [-(1 << 20) + 1, (1 << 20) - 1]])
    x = np.stack([row, row[::-1]]).astype(np.int32).reshape(1, 2, -1, 1)
    table = np.random.default_rng(qmax).integers(-128, 128, 256)
    for multiplier, shift in (([1 << 23], [24]), ([1 << 23, 3 << 21], [24, 24])):
        attrs = REQUANTIZE.check_attrs(dict(multiplier=multiplier, shift=shift, axis=1,
                                            rounding="fp32", zero_point=zero_point,
                                            qmin=qmin, qmax=qmax))
        requantized = REQUANTIZE.kernel(np, x, **attrs)
        kernel = fastquant.prepare_lut(attrs, 21, 4, Requant(), table, qmin, np.int8)
        plain = fastquant.prepare(attrs, 21, 4, np.uint8 if qmin == 0 else np.int8, Requant())
        assert kernel.rounder is not None and plain.rounder is not None
        with using(Workspace()):
            got, bytes_ = kernel(np, x), plain(np, x)
        want = LUT.kernel(np, table, requantized, low=[qmin])
        assert got.dtype == np.int8 and np.array_equal(got, want)
        assert bytes_.dtype == plain.out_dtype and np.array_equal(bytes_, requantized)


def test_a_table_entry_wider_than_the_result_is_not_fused():
    attrs = REQUANTIZE.check_attrs(dict(multiplier=[1], shift=[0], qmin=0, qmax=255))
    table = np.arange(256) * 2
    assert fastquant.prepare_lut(attrs, 8, 2, Requant(), table, 0, np.uint8) is None
    assert fastquant.prepare_lut(attrs, 8, 2, Requant(), table, 0, np.int32) is not None


@pytest.mark.parametrize("zero_point", [0, 7, -4])
def test_a_wider_result_takes_its_entries_where_the_rounder_is_licensed(zero_point):
    """A requantize whose rounder licence holds, then a table of int32 entries: the blocks'
    bytes index the entries (the result is the table's, not the requantized value)."""
    attrs = REQUANTIZE.check_attrs(dict(multiplier=[1 << 23], shift=[30], rounding="fp32",
                                        qmin=-128, qmax=127, zero_point=zero_point))
    table = np.arange(-128, 128) * 1000 + 17
    kernel = fastquant.prepare_lut(attrs, 16, 2, Requant(), table, -128, np.int32)
    assert kernel.rounder is not None and kernel.by_bits is None
    x = np.arange(-32767, 32768, 3, dtype=np.int32).reshape(1, -1)
    got = on_lanes(1, lambda: kernel(np, x))
    want = LUT.kernel(np, table, requantized(x, attrs, Requant()), low=[-128])
    assert got.dtype == np.int32 and np.array_equal(got, want)


def chain_program(shape, per_channel: bool, rounding: str, unsigned: bool, second_reader: bool,
                  table_size: int = 256):
    """x -> requantize -> relu -> lut (-> + the requantized value, with ``second_reader``)."""
    rng = np.random.default_rng(7)
    c = shape[1]
    n = c if per_channel else 1
    top = (1 << 24) - 1 if rounding == "fp32" else (1 << 31) - 1
    b = Builder("requantize-lut")
    x = b.input("x", shape, 22)
    q = b.op("requantize", x, multiplier=[int(v) for v in rng.integers(1, top, n)],
             shift=[int(v) for v in rng.integers(20, 34, n)], rounding=rounding,
             qmin=0 if unsigned else -128, qmax=255 if unsigned else 127,
             zero_point=5 if unsigned else -3)
    q = b.op("relu", q)
    table = rng.integers(-127, 128, table_size)
    y = b.op("lut", b.const("t", table, precision=8), q, low=[0 if unsigned else -128])
    if second_reader:
        y = b.op("elemwise_add", y, q)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("per_channel,rounding,unsigned,second_reader", [
    (True, "fp32", True, False), (False, "half_even", False, False),
    (True, "half_up", False, False), (True, "fp32", True, True)])
def test_requantize_then_lut_programs_equal_the_reference(backend, per_channel, rounding,
                                                          unsigned, second_reader):
    """The fused step where the lut is the requantized value's only reader, the two steps
    where it is not: the reference executor's bytes."""
    program = chain_program((1, 3, 5, 7), per_channel, rounding, unsigned, second_reader)
    blob = vm.encode(program)
    model = vm.load(blob, vm.cpu(backend=backend))
    x = np.random.default_rng(1).integers(-(1 << 21), 1 << 21, (1, 3, 5, 7)).astype(np.int32)
    x[0, 0, 0, :3] = [bound(22), -bound(22), 0]
    got, want = model.run(x), vm.load(blob, vm.reference()).run(x)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)
    if backend == "numpy":
        fused = [type(s.kernel).__name__ for s in model.plan.fast]
        assert ("RequantizeLut" in fused) == (not second_reader), fused


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("two, second_reader", [(True, False), (False, False), (True, True)])
def test_a_lut_of_a_lut_is_one_gather_with_the_reference_bytes(backend, two, second_reader):
    """A lut of one input reading a lut's result alone runs as one gather in the composed
    table (the first table's entries outside the second's window clamped, as lut clamps);
    with another reader of the first result, as two. Bytes: the reference executor's."""
    rng = np.random.default_rng(2 * two + second_reader)
    b = Builder("luts")
    data, low, dims = [b.input("x", (3, 40), 8)], [-127], (255,)
    if two:                                              # broadcasting a second argument
        data, low, dims = data + [b.input("y", (40,), 8)], low + [-127], dims + (255,)
    first = b.op("lut", b.const("t1", rng.integers(-300, 300, dims), precision=10), *data,
                 low=low)
    b.output(b.op("lut", b.const("t2", rng.integers(-128, 128, 200), precision=8), first,
                  low=[-100]))
    if second_reader:
        b.output(b.op("relu", first))
    program = b.build()
    blob = vm.encode(program)
    model = vm.load(blob, vm.cpu(backend=backend))
    feeds = {"x": rng.integers(-127, 128, (3, 40)).astype(np.int8),
             "y": rng.integers(-127, 128, 40).astype(np.int8)}
    feeds = {t.name: feeds[t.name] for t in model.inputs}
    got, want = model.run(feeds), vm.load(blob, vm.reference()).run(feeds)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)
    if backend == "numpy":
        covers = [s.covers for s in model.plan.fast]
        assert ((0, 1) in covers) == (not second_reader), covers


@pytest.mark.parametrize("shape,axis", [((1, 2, 1, fastquant.BLOCK + 3), 1),
                                        ((2, 3, 150, 151), 1), ((1, 97, 89, 16), 3)])
def test_full_size_blocks_equal_the_op_kernels(shape, axis):
    """At the real BLOCK: parts of a channel plane, whole planes, channels-last rows."""
    rng = np.random.default_rng(3)
    attrs = REQUANTIZE.check_attrs(dict(
        multiplier=[int(v) for v in rng.integers(1, 1 << 24, shape[axis])],
        shift=[int(v) for v in rng.integers(20, 30, shape[axis])], axis=axis, rounding="fp32",
        qmin=-128, qmax=127, zero_point=-7))
    x = rng.integers(-bound(22), bound(22) + 1, shape).astype(np.int32)
    table = rng.integers(-128, 128, 256)
    kernel = fastquant.prepare_lut(attrs, 22, x.ndim, Requant(), table, -128, np.int8)
    lanes = Lanes(2)
    try:
        with using(Workspace(), lanes):
            got = kernel(np, x)
            alone = fastquant.prepare(attrs, 22, x.ndim, np.int64, Requant())(np, x)
    finally:
        lanes.close()
    want = requantized(x, attrs, Requant())
    assert np.array_equal(alone, want)
    assert np.array_equal(got, LUT.kernel(np, table, want, low=[-128]))


@SETTINGS
@given(st.data(), st.sampled_from([np.uint8, np.int8, np.uint8, np.int8, np.int16, np.int32]),
       st.sampled_from([np.uint8, np.int8, np.int32]), st.sampled_from([False, False, True]),
       st.booleans())
def test_prepared_lut_equals_the_op_kernel(data, in_dtype, out_dtype, two, strided):
    """ops/table.PreparedLut: bytes by their bits (pairs of them where the result is a byte,
    odd sizes, strided data), any other data, one or two inputs, entries that fit the result
    or not."""
    rng = np.random.default_rng(data.draw(st.integers(0, 1 << 30)))
    info = np.iinfo(in_dtype)
    low = data.draw(st.sampled_from([int(info.min)] * 3 + [0, -3, 5]))
    sizes = data.draw(st.lists(st.sampled_from([7, 256, 256, 300]), min_size=1 + two,
                               max_size=1 + two))
    o = np.iinfo(out_dtype)
    wide = data.draw(st.booleans())
    table = rng.integers(o.min if not wide else -70000, (o.max if not wide else 70000) + 1,
                         sizes)
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    args = []
    for _ in range(1 + two):
        x = rng.integers(info.min, int(info.max) + 1, (2 * shape[0], *shape[1:]))
        x = x.astype(in_dtype)
        args.append(x[::2] if strided else x[:shape[0]])
    kernel = PreparedLut(table, [low] * (1 + two), out_dtype)
    got, want = kernel(np, *args), LUT.kernel(np, table, *args, low=[low] * (1 + two))
    assert np.array_equal(got, want)
    assert got.dtype == (np.dtype(out_dtype) if not wide else table.dtype) or \
        np.array_equal(table.astype(out_dtype), table)
    event(f"bits: {len(args) == 1 and kernel._bits != {}}, translated: "
          f"{any(t is not None for _, t in kernel._bits.values())}")


@pytest.mark.parametrize("in_dtype,low", [(np.uint8, 0), (np.int8, -128)])
@pytest.mark.parametrize("n", [0, 1, 6, 7, 3 * (1 << 16) + 10])
def test_prepared_lut_translates_bytes(in_dtype, low, n):
    rng = np.random.default_rng(n)
    table = rng.integers(-128, 128, 256)
    x = rng.integers(np.iinfo(in_dtype).min, int(np.iinfo(in_dtype).max) + 1, n)
    x = x.astype(in_dtype)
    kernel = PreparedLut(table, [low], np.int8)
    got = kernel(np, x)
    assert got.dtype == np.int8 and np.array_equal(got, LUT.kernel(np, table, x, low=[low]))
    assert kernel._bits[np.dtype(in_dtype)][1] is not None


@pytest.mark.parametrize("dtypes", [(np.uint8, np.uint8), (np.int8, np.uint8),
                                    (np.uint8, np.int8), (np.int8, np.int8)])
@pytest.mark.parametrize("lanes", [1, 2])
def test_pairs_of_bytes_gather_in_blocks(monkeypatch, dtypes, lanes):
    """Two byte arguments of one shape over a 256 x 256 table (a residual addition's):
    uint16 indices of their two bytes, int8 sign bits flipped, in blocks over the lanes (all
    of them: MIN_WORK 0); the table's rows and columns by numpy's own indexing."""
    monkeypatch.setattr(scratch, "MIN_WORK", 0)
    rng = np.random.default_rng(7)
    shape = (1, 3, 257, 257)                                  # more than two blocks
    a, b = (rng.integers(np.iinfo(t).min, int(np.iinfo(t).max) + 1, shape).astype(t)
            for t in dtypes)
    low = [np.iinfo(t).min for t in dtypes]
    table = rng.integers(-128, 128, (256, 256)).astype(np.int8)
    def gather():
        assert scratch.lane_count(a.size) == lanes
        return LUT.kernel(np, table, a, b, low=low)
    got = on_lanes(lanes, gather)
    want = table[a.astype(np.int64) - low[0], b.astype(np.int64) - low[1]]
    assert got.dtype == np.int8 and np.array_equal(got, want)
