"""The fast CPU paths are exact: Winograd F(2x2, 3x3), chunked float GEMMs, fused tails, lanes.

* every prepared kernel equals the pure-Python scalar reference (conv2d's ``scalar`` rule, then
  the tail ops' scalar rules one by one) on hypothesis inputs with the extremes +-R(p) frequent;
* adversarial inputs at the edge of each licence (partial sums just below 2^24) stay exact, and
  one past the edge the licence splits the reduction instead of going wrong;
* whole programs (a reduced ResNet-18-shaped model with every layer kind of the bench) give the
  reference executor's bytes, whatever the batch size (batch invariance) or the thread count;
* sampled layers of the real ResNet-18 bench model equal the int64 kernel and, on sampled
  output elements, the scalar formula.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

import ops
import vm
from compiler import Builder
from bench.resnet18 import build_resnet18
from ops import blas, gemm, scratch, winograd
from ops.base import Ref, bound
from ops.scratch import Lanes, Workspace, using
from ops.tails import Requant
from tests.cases import all_cases, values_for
from vm import fusion
from vm.fusion import chains, compose_tail

pytestmark = pytest.mark.usefixtures("numpy_backend")   # the numpy executor's kernels

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
CONV = ops.get("conv2d")
CASES = all_cases()


def tails():
    """Random chains of the tail ops, as (op, attrs) pairs."""
    one = st.one_of(
        st.tuples(st.just("cvm_right_shift"), st.fixed_dictionaries(
            {"precision": st.integers(1, 32), "shift_bit": st.integers(1, 20)})),
        st.tuples(st.just("relu"), st.just({})),
        st.tuples(st.just("clip"), st.integers(-300, 300).flatmap(
            lambda lo: st.fixed_dictionaries({"a_min": st.just(lo),
                                              "a_max": st.integers(lo + 1, lo + 400)}))),
        st.tuples(st.just("cvm_clip"), st.fixed_dictionaries(
            {"precision": st.integers(1, 12), "is_sign": st.just(True)})))
    return st.lists(one, max_size=3)


def compose(chain) -> Requant:
    tail = Requant()
    for name, attrs in chain:
        tail = compose_tail(tail, type("I", (), {"op": name, "attrs": attrs})())
    return tail


def apply_scalar(ref: Ref, chain) -> Ref:
    """The tail ops' own scalar rules, one after another (the unfused semantics)."""
    for name, attrs in chain:
        ref = ops.get(name).scalar([ref], ops.get(name).check_attrs(attrs))
    return ref


@st.composite
def conv3x3(draw, max_c=6):
    """A 3x3 stride-1 conv2d case: shapes, precisions, values with the extremes frequent."""
    n, c, oc = draw(st.integers(1, 2)), draw(st.integers(1, max_c)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * ph), 9))
    w = draw(st.integers(max(1, 3 - 2 * pw), 9))
    p0, p1 = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    x = np.array(draw(values_for((n, c, h, w), p0)), np.int8).reshape(n, c, h, w)
    wt = np.array(draw(values_for((oc, c, 3, 3), p1)), np.int8).reshape(oc, c, 3, 3)
    bias = None
    if draw(st.booleans()):
        bias = np.array(draw(values_for((oc,), draw(st.integers(1, 20)))), np.int32)
    attrs = CONV.check_attrs(dict(channels=oc, kernel_size=(3, 3), padding=(ph, pw),
                                  use_bias=bias is not None))
    return x, wt, bias, attrs, p0


def reference(x, wt, bias, attrs, chain) -> np.ndarray:
    args = [Ref.from_array(a) for a in (x, wt) + ((bias,) if bias is not None else ())]
    return apply_scalar(CONV.scalar(args, attrs), chain).to_array()


class Poisoned(Workspace):
    """Scratch whose every buffer arrives filled with 0xFF bytes (NaN as floats, -1 as
    integers): a kernel reading scratch it did not write shows in its result."""

    def get(self, role, shape, dtype):
        buf = super().get(role, shape, dtype)
        buf.reshape(-1).view(np.uint8)[:] = 0xFF
        return buf

    def lane(self, k):
        return self if k == 0 else self.lanes.setdefault(k, Poisoned())


def run(kernel, *args, lanes: int = 1):
    """kernel(*args) with a poisoned workspace; on ``lanes`` lanes even for tiny work."""
    saved, scratch.MIN_WORK = scratch.MIN_WORK, 0
    try:
        with using(Poisoned(), Lanes(lanes) if lanes > 1 else None):
            return kernel(np, *args)
    finally:
        scratch.MIN_WORK = saved


@SETTINGS
@given(conv3x3(), tails(), st.data())
def test_winograd_equals_the_scalar_reference(case, chain, data):
    x, wt, bias, attrs, p0 = case
    lic = winograd.licence(wt, bound(p0))
    assert lic is not None and lic.chunk_bound < 1 << 24
    c = wt.shape[1]
    k = data.draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    forced = winograd.WinogradLicence(k, lic.chunk_bound, lic.out_bound, lic.u)  # any split
    tail = compose(chain)
    kernel = winograd.WinogradKernel(forced, bias, attrs, tail, np.int64)
    want = reference(x, wt, bias, attrs, chain)
    assert np.array_equal(run(kernel, x), want)
    assert np.array_equal(run(kernel, x, lanes=2), want)


@SETTINGS
@given(conv3x3(), tails())
def test_im2col_kernel_equals_the_scalar_reference(case, chain):
    x, wt, bias, attrs, p0 = case
    kernel = gemm.LinearKernel("conv2d", wt, bias, attrs, gemm.licence(wt, bound(p0)),
                               compose(chain), np.int64)
    want = reference(x, wt, bias, attrs, chain)
    assert np.array_equal(run(kernel, x), want)
    assert np.array_equal(run(kernel, x, lanes=2), want)


@SETTINGS
@given(CASES["conv2d"], tails(), st.data())
def test_im2col_any_geometry_equals_the_scalar_reference(case, chain, data):
    """Every kernel size, stride, padding and dilation of the law-suite cases (one group)."""
    attrs = CONV.check_attrs(case.attrs)
    if attrs["groups"] != 1:
        attrs = CONV.check_attrs({**case.attrs, "groups": 1, "channels": attrs["channels"]})
    x_in, w_in = case.inputs[:2]
    c = w_in.shape[1] * case.attrs.get("groups", 1)
    x = np.array(data.draw(values_for(x_in.shape, x_in.precision)), np.int8).reshape(x_in.shape)
    wt = np.array(data.draw(values_for((attrs["channels"], c, *w_in.shape[2:]), w_in.precision)),
                  np.int8).reshape(attrs["channels"], c, *w_in.shape[2:])
    bias = None
    if attrs["use_bias"]:
        bias = np.array(data.draw(values_for((attrs["channels"],), 16)), np.int32)
    lic, tail = gemm.licence(wt, bound(x_in.precision)), compose(chain)
    kernels = [gemm.LinearKernel("conv2d", wt, bias, attrs, lic, tail, np.int64)]
    reach = lic.whole + tail.add + (int(np.abs(bias).max()) if bias is not None else 0)
    if blas.available():
        one = CONV.check_attrs({**attrs, "strides": (1, 1)})
        if blas.shifted_eligible(one, lic, reach):
            kernels.append((blas.ShiftedConv(wt, bias, one, tail, np.int64), one))
    want = reference(x, wt, bias, attrs, chain)
    for kernel in kernels:
        if isinstance(kernel, tuple):
            kernel, attrs = kernel
            want = reference(x, wt, bias, attrs, chain)
        assert np.array_equal(run(kernel, x), want)
        assert np.array_equal(run(kernel, x, lanes=2), want)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_float_requantize_equals_the_scalar_reference(data):
    """ops/fastquant.py (float32 for rounding=fp32, float64 otherwise) against requantize's
    integer scalar rule, ties and 32-bit inputs included; then followed by a relu."""
    if "requantize" not in CASES:
        pytest.skip("requantize is not registered")
    from ops import fastquant
    op = ops.get("requantize")
    case = data.draw(CASES["requantize"])
    x_in = case.inputs[0]
    flat = x_in.values or data.draw(values_for(x_in.shape, x_in.precision))
    x = np.array(flat, np.int64).reshape(x_in.shape).astype(np.int32 if x_in.precision > 8
                                                              else np.int8)
    attrs = op.check_attrs(case.attrs)
    for chain in ([], [("relu", {})]):
        kernel = fastquant.prepare(attrs, x_in.precision, x.ndim, np.int64, compose(chain))
        if kernel is None:
            continue
        want = apply_scalar(op.scalar([Ref.from_array(x)], attrs), chain).to_array()
        assert np.array_equal(run(kernel, x), want)
        assert np.array_equal(run(kernel, x, lanes=2), want)


@SETTINGS
@given(st.sampled_from(["elemwise_add", "elemwise_sub"]), st.integers(1, 31),
       st.integers(1, 31), tails(), st.data())
def test_fused_add_equals_the_ops_one_by_one(name, pa, pb, chain, data):
    """elemwise_add / _sub and a tail through the VM's fused plan and the reference executor."""
    b = Builder(f"fused-{name}")
    x, y = b.input("x", (2, 3, 4), pa), b.input("y", (2, 3, 4), pb)
    out = b.op(name, x, y)
    for op_name, attrs in chain:
        out = b.op(op_name, out, **attrs)
    try:
        program = b.output(out).build()
    except vm.InvalidError:           # a chain the format refuses (precision above 32)
        return
    feeds = {"x": np.array(data.draw(values_for((2, 3, 4), pa))).reshape(2, 3, 4),
             "y": np.array(data.draw(values_for((2, 3, 4), pb))).reshape(2, 3, 4)}
    got, want = vm.load(program).run(feeds), vm.load(program, vm.reference()).run(feeds)
    assert same_bytes(got, want)


@SETTINGS
@given(tails(), st.integers(-(1 << 40), 1 << 40))
def test_composed_tail_equals_the_ops_one_by_one(chain, z):
    want = apply_scalar(Ref((1,), [z]), chain).data[0]
    assert compose(chain).scalar(z) == want


@SETTINGS
@given(tails(), tails(), st.integers(-(1 << 40), 1 << 40))
def test_a_tail_then_a_tail_is_their_composition(first, second, z):
    assert compose(first).then(compose(second)).scalar(z) == \
        compose(second).scalar(compose(first).scalar(z)) == compose(first + second).scalar(z)


@SETTINGS
@given(tails().filter(bool), st.integers(1, 31), st.data())
def test_a_chain_of_tail_ops_alone_equals_the_ops_one_by_one(chain, p, data):
    """A chain headed by a tail op (no linear head or add before it) runs in integers."""
    b = Builder("tails")
    y = b.input("x", (2, 3, 4), p)
    for name, attrs in chain:
        y = b.op(name, y, **attrs)
    b.output(y)
    program = b.build()
    model = vm.load(program, vm.cpu(backend="numpy"))
    assert type(model.plan.fast[0].kernel).__name__ == "_Pointwise"
    feeds = {"x": np.array(data.draw(values_for((2, 3, 4), p))).reshape(2, 3, 4)}
    want = vm.load(program, vm.reference()).run(feeds)
    assert same_bytes(model.run(feeds), want)
    small, fusion.SMALL = fusion.SMALL, 0          # the blocked path, with scratch
    try:
        assert same_bytes(model.run(feeds), want)
    finally:
        fusion.SMALL = small


# ---------------------------------------------------------------------------------------------
# At the edge of each licence
# ---------------------------------------------------------------------------------------------

EDGE = (1 << 24) // (127 * 127)       # 1040 products of 127 * 127 stay below 2^24


@pytest.mark.parametrize("k", [EDGE, EDGE + 1, 3 * EDGE + 7, 8 * EDGE])
@pytest.mark.parametrize("sign", [1, -1])
def test_dense_at_the_float32_edge(k, sign):
    """All weights and inputs at +-R(8): every partial sum climbs to 127^2 K."""
    w = np.full((3, k), 127, np.int8)
    w[1] = -127
    w[2, ::2] = -127
    x = np.full((2, k), sign * 127, np.int8)
    x[1, ::3] = -sign * 127
    lic = gemm.licence(w, 127)
    chunks = -(-k // EDGE)
    assert (lic.dtype, len(lic.splits) - 1) == (("float32", chunks) if chunks <= 4
                                                 else ("float64", 1))
    assert lic.bound < (1 << 24 if lic.dtype == "float32" else 1 << 53)
    if k == EDGE:
        assert lic.bound > (1 << 24) - 127 * 127
    attrs = ops.get("dense").check_attrs(dict(units=3, use_bias=False))
    kernel = gemm.LinearKernel("dense", w, None, attrs, lic, Requant(), np.int64)
    want = x.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(run(kernel, x), want)


def test_one_past_the_edge_float32_is_wrong():
    """What the licence prevents: 1041 products 127 * 127 sum to an odd number above 2^24,
    which float32 cannot hold."""
    ones = np.full(EDGE + 1, 127, np.float32)
    assert int(ones @ ones) != 127 * 127 * (EDGE + 1)


@pytest.mark.parametrize("c", [16, 64, 128])
def test_winograd_at_its_edge(c):
    """Weights and inputs at +-R(8) with the signs that maximise one transformed position."""
    rng = np.random.default_rng(c)
    w = np.where(rng.random((4, c, 3, 3)) < 0.5, -127, 127).astype(np.int8)
    w[0] = 127                                       # U[1, 1] = 9 * 127 for every channel
    lic = winograd.licence(w, 127)
    assert lic is not None and lic.chunk_bound < 1 << 24
    assert lic.chunk_bound * lic.chunks > (1 << 24) // 2 or c < 64
    attrs = CONV.check_attrs(dict(channels=4, kernel_size=(3, 3), padding=(1, 1),
                                  use_bias=False))
    kernel = winograd.WinogradKernel(lic, None, attrs, Requant(), np.int64)
    for x in (np.full((1, c, 6, 6), 127, np.int8), np.full((1, c, 6, 6), -127, np.int8),
              np.where(rng.random((1, c, 6, 6)) < 0.5, -127, 127).astype(np.int8)):
        want = CONV.kernel(np, x, w, **attrs, gemm="int64")
        assert np.array_equal(run(kernel, x), want)


def test_bias_and_rounding_offset_push_past_float32():
    """A bias that takes |z + add| past 2^24 moves the kernel off the float32 ones-row path
    and stays exact."""
    w = np.full((2, 1000), 127, np.int8)
    bias = np.array([(1 << 23), -(1 << 23)], np.int32)
    lic = gemm.licence(w, 127)
    attrs = ops.get("dense").check_attrs(dict(units=2))
    tail = Requant().then_shift(3)
    kernel = gemm.LinearKernel("dense", w, bias, attrs, lic, tail, np.int64)
    assert kernel.mode != "ones"
    x = np.full((1, 1000), 127, np.int8)
    z = x.astype(np.int64) @ w.astype(np.int64).T + bias
    assert np.array_equal(run(kernel, x), (z + 4) >> 3)


# ---------------------------------------------------------------------------------------------
# Whole programs
# ---------------------------------------------------------------------------------------------

def same_bytes(got: dict, want: dict) -> bool:
    """Every output of ``want`` has exactly its bytes in ``got``."""
    return all(got[k].tobytes() == want[k].tobytes() for k in want)


def small_resnet(batch: int):
    return build_resnet18(batch, size=32, classes=10, width=4)


def feeds(model, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, model.inputs[0].shape).astype(np.int8)
    x.reshape(-1)[::7] = 127
    x.reshape(-1)[3::11] = -127
    return x


def test_reduced_resnet_equals_the_reference_executor():
    program = small_resnet(1)
    assert any(len(group) > 1 for group, _ in chains(program))
    fast, ref = vm.load(program), vm.load(program, vm.reference())
    x = feeds(fast, 0)
    got, want = fast.run(x), ref.run(x)
    assert same_bytes(got, want)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_batch_invariance_and_thread_invariance(threads, monkeypatch):
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(scratch, "MIN_WORK", 0)          # spread even these small convs
    whole = vm.load(small_resnet(4), threads=threads)
    one = vm.load(small_resnet(1), threads=threads)
    x = feeds(whole, 1)
    batch = whole.run(x)
    rows = [one.run(x[k:k + 1]) for k in range(4)]
    for name in batch:
        assert batch[name].tobytes() == np.concatenate([r[name] for r in rows]).tobytes()
    base = vm.load(small_resnet(4), threads=1).run(x)
    assert all(batch[k].tobytes() == base[k].tobytes() for k in base)


def test_every_conv_plan_gives_the_same_bytes(monkeypatch):
    """Shifted-view GEMMs (BLAS direct), Winograd (without them, one lane), im2col (without
    them, two lanes) and one step per instruction: the same bytes."""
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(scratch, "MIN_WORK", 0)
    program = build_resnet18(2, size=64, classes=10, width=16)
    x = feeds(vm.load(program), 2)
    default = vm.load(program, threads=1)
    monkeypatch.setattr(blas, "_sgemm", False)
    single, lanes = vm.load(program, threads=1), vm.load(program, threads=2)
    assert any(v is not None for v in single.analysis.winograd.values())
    kinds = lambda m: {type(s.kernel).__name__ for s in m.plan.fast}
    assert "WinogradKernel" in kinds(single) and "WinogradKernel" not in kinds(lanes)
    runs = [m.run(x) for m in (default, single, lanes)]
    runs.append(single.run(x, trace=lambda step, values: None))   # one step per instruction
    assert all(r[k].tobytes() == runs[0][k].tobytes() for r in runs for k in r)


def test_shipped_digits_cnn_equals_the_reference_executor():
    """The digits CNN (an imported int8 model: qconv2d, requantize, max_pool2d, qdense)."""
    from pathlib import Path
    root = Path(vm.__file__).parent / "models"
    if not (root / "digits.dvm").exists():
        pytest.skip("vm/models/digits.dvm not shipped")
    data = (root / "digits.dvm").read_bytes()
    with np.load(root / "digits_inputs.npz") as f:
        feeds = {t.name: f[t.name] for t in vm.load(data).inputs}
    want = vm.load(data, vm.reference()).run(feeds)
    for threads in (None, 2) if _has_threadpoolctl() else (None,):
        got = vm.load(data, threads=threads).run(feeds)
        assert same_bytes(got, want)


def _has_threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401
        return True
    except ImportError:
        return False


def test_sampled_layers_of_the_bench_resnet18():
    """The real 224x224 model: each sampled conv, fused with its tail (and a residual add with
    its tail), against the int64 kernel plus the tail ops, and 40 output elements against the
    scalar formula and the unfused ops' scalar rules."""
    program = build_resnet18(1)
    model = vm.load(program)
    rng = np.random.default_rng(3)
    convs = [s for s in model.plan.fast if program.code[s.index].op == "conv2d"]
    assert sum(getattr(s.kernel, "residual", None) is not None for s in convs) == 8
    for step in [convs[k] for k in (0, 1, 2, 5, 10, 16, 19)]:
        ins = program.code[step.index]
        x_t = program.tensors[ins.inputs[0]]
        x = rng.integers(-127, 128, x_t.shape).astype(np.int8)
        x.reshape(-1)[rng.random(x.size) < 0.2] = 127
        w, b = (program.consts[i] for i in ins.inputs[1:])
        z = CONV.kernel(np, x, w, b, **ins.attrs, gemm="int64")
        covered = [program.code[i] for i in step.covers[1:]]
        cut = next((k for k, c in enumerate(covered) if c.op.startswith("elemwise")),
                   len(covered))
        chain = [(c.op, c.attrs) for c in covered[:cut]]
        after = [(c.op, c.attrs) for c in covered[cut + 1:]]
        expect = np.vectorize(compose(chain).scalar, otypes=[np.int64])(z)
        args = [x]
        if cut < len(covered):                       # a fused residual add
            add, residual = covered[cut], step.kernel.residual
            other = rng.integers(-127, 128, expect.shape).astype(np.int8)
            args.append(other)
            expect = np.vectorize(residual.scalar, otypes=[np.int64])(expect, other)
        with using(Workspace()):
            got = step.kernel(np, *args)
        assert np.array_equal(got, expect), ins.attrs
        for _ in range(40):
            n, o, p, q = (int(rng.integers(d)) for d in got.shape)
            (kh, kw), (sh, sw), (ph, pw) = (ins.attrs[k] for k in
                                            ("kernel_size", "strides", "padding"))
            acc = int(b[o])
            for c in range(w.shape[1]):
                for r in range(kh):
                    for s in range(kw):
                        y, xx = p * sh + r - ph, q * sw + s - pw
                        if 0 <= y < x.shape[2] and 0 <= xx < x.shape[3]:
                            acc += int(x[n, c, y, xx]) * int(w[o, c, r, s])
            ref = apply_scalar(Ref((1,), [acc]), chain)
            if cut < len(covered):
                pair = [ref, Ref((1,), [int(other[n, o, p, q])])]
                if add.inputs[0] != program.code[step.covers[cut]].outputs[0]:
                    pair.reverse()
                ref = apply_scalar(ops.get(add.op).scalar(pair, ops.get(add.op).check_attrs(
                    add.attrs)), after)
            assert int(got[n, o, p, q]) == ref.data[0]


def load_fast(program, shifted: bool, threads: int | None = None):
    """vm.load(program, threads=threads) on the CPU; with ``shifted``, every conv the
    shifted-view kernel may take takes it, however small."""
    from vm import fusion
    saved = fusion.MIN_SHIFTED_WORK, fusion.MIN_SHIFTED_PIXELS
    if shifted:
        fusion.MIN_SHIFTED_WORK = fusion.MIN_SHIFTED_PIXELS = 0
    try:
        return vm.load(program, threads=threads)
    finally:
        fusion.MIN_SHIFTED_WORK, fusion.MIN_SHIFTED_PIXELS = saved


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), tails(), tails(), st.sampled_from(["elemwise_add", "elemwise_sub"]),
       st.booleans(), st.booleans())
def test_fused_residual_equals_the_reference_executor(data, chain, after, add, conv_first,
                                                      shifted):
    """conv2d + tail, then add / sub with another tensor (either order) + tail, fused into one
    step (ShiftedConv or im2col), gives the reference executor's bytes."""
    from vm.errors import InvalidError
    c, oc = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    h, w = data.draw(st.integers(3, 8)), data.draw(st.integers(3, 8))
    p0, po = data.draw(st.integers(2, 8)), data.draw(st.integers(2, 8))
    wt = np.array(data.draw(values_for((oc, c, 3, 3), 8)), np.int8).reshape(oc, c, 3, 3)
    try:                                          # random tails may need precision > 32
        b = Builder("residual")
        x = b.input("x", (1, c, h, w), p0)
        other = b.input("other", (1, oc, h, w), po)
        y = b.op("conv2d", x, b.const("w", wt, precision=8), channels=oc, kernel_size=(3, 3),
                 padding=(1, 1), use_bias=False)
        for name, attrs in chain:
            y = b.op(name, y, **attrs)
        s = b.op(add, y, other) if conv_first else b.op(add, other, y)
        for name, attrs in after:
            s = b.op(name, s, **attrs)
        b.output(s)
        program = b.build()
        ref = vm.load(program, vm.reference())
    except InvalidError:
        assume(False)
    fast = load_fast(program, shifted)
    step = fast.plan.fast[0]
    fused = getattr(step.kernel, "residual", None) is not None
    event(f"{type(step.kernel).__name__}, residual fused: {fused}")
    feeds_ = {}
    for t in fast.inputs:
        r = (1 << (t.precision - 1)) - 1
        v = np.array(data.draw(values_for(t.shape, t.precision)), np.int64).reshape(t.shape)
        feeds_[t.name] = np.clip(v, -r, r).astype(t.dtype)
    got, want = fast.run(feeds_), ref.run(feeds_)
    assert same_bytes(got, want)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), st.sampled_from(["fp32", "half_even", "half_up"]), st.booleans(),
       st.booleans(), st.booleans())
def test_fused_requantize_equals_the_reference_executor(data, rounding, per_channel, unsigned,
                                                        shifted):
    """qconv2d (data zero point, bias) whose raw result is requantized (per tensor or per
    channel, every rounding, either output range), then a relu, fused into one step
    (ShiftedConv or im2col): the reference executor's bytes."""
    c, oc = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    h, w = data.draw(st.integers(3, 8)), data.draw(st.integers(3, 8))
    zp = data.draw(st.integers(0, 255)) if unsigned else 0
    wt = np.array(data.draw(values_for((oc, c, 3, 3), 8)), np.int8).reshape(oc, c, 3, 3)
    bias = np.array(data.draw(values_for((oc,), 16)), np.int32)
    n = oc if per_channel else 1
    top = (1 << 24) - 1 if rounding == "fp32" else (1 << 31) - 1
    mult = data.draw(st.lists(st.integers(1, top), min_size=n, max_size=n))
    shift = data.draw(st.lists(st.integers(8, 40), min_size=n, max_size=n))
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    b = Builder("requant")
    x = b.input("x", (1, c, h, w), 9 if unsigned else 8)
    y = b.op("qconv2d", x, b.const("w", wt, precision=8), b.const("b", bias, precision=16),
             channels=oc, kernel_size=(3, 3), padding=(1, 1), zero_point=zp)
    q = b.op("requantize", y, multiplier=mult, shift=shift, rounding=rounding,
             qmin=qmin, qmax=qmax, zero_point=data.draw(st.integers(-20, 20)))
    b.output(b.op("relu", q))
    program = b.build()
    fast = load_fast(program, shifted)
    kernel = fast.plan.fast[0].kernel
    event(f"{type(kernel).__name__}, requantize fused: {kernel.epilogue is not kernel.tail}"
          if hasattr(kernel, "epilogue") else type(kernel).__name__)
    t = fast.inputs[0]
    v = np.array(data.draw(values_for(t.shape, t.precision)), np.int64).reshape(t.shape)
    x_ = np.clip(v, 0 if unsigned else -127, 255 if unsigned else 127).astype(t.dtype)
    got, want = fast.run(x_), vm.load(program, vm.reference()).run(x_)
    assert same_bytes(got, want)


def test_joins_never_raise_the_validated_peak_memory():
    """A joined step runs at the add's place, keeping its conv's input alive until then; where
    that would exceed the validated peak of live tensors, the plan does not join (same bytes).
    Here the deferred conv reads 64 channels and writes one, while a large upsampling runs in
    between."""
    from vm.memory import peak_bytes
    rng = np.random.default_rng(5)
    w = lambda *shape: rng.integers(-127, 128, shape, dtype=np.int8)
    b = Builder("late-join")
    x = b.input("x", (1, 64, 8, 8), 8)
    y = b.op("cvm_right_shift", b.op("conv2d", x, b.const("w1", w(64, 64, 3, 3), precision=8),
                                     channels=64, kernel_size=(3, 3), padding=(1, 1),
                                     use_bias=False), precision=8, shift_bit=12)
    z = b.op("cvm_right_shift", b.op("conv2d", y, b.const("w2", w(1, 64, 3, 3), precision=8),
                                     channels=1, kernel_size=(3, 3), padding=(1, 1),
                                     use_bias=False), precision=8, shift_bit=12)
    big = b.op("upsampling", x, scale=8)
    s = b.op("cvm_right_shift", b.op("conv2d", big, b.const("w3", w(1, 64, 8, 8), precision=8),
                                     channels=1, kernel_size=(8, 8), strides=(8, 8),
                                     use_bias=False), precision=8, shift_bit=14)
    b.output(b.op("elemwise_add", z, s))
    program = b.build()
    fast, ref = vm.load(program), vm.load(program, vm.reference())
    steps = fast.plan.fast
    assert all(getattr(st.kernel, "residual", None) is None for st in steps)
    assert peak_bytes(program, [(st.outputs, st.frees) for st in steps]) <= \
        fast.analysis.live_peak
    xs = rng.integers(-127, 128, (1, 64, 8, 8)).astype(np.int8)
    got, want = fast.run(xs), ref.run(xs)
    assert same_bytes(got, want)
    resnet = vm.load(small_resnet(1))                       # where joins fit, they are made
    assert any(getattr(st.kernel, "residual", None) is not None for st in resnet.plan.fast)
    assert peak_bytes(resnet.program, [(st.outputs, st.frees) for st in resnet.plan.fast]) <= \
        resnet.analysis.live_peak


@pytest.mark.parametrize("threads", [3, 4])
def test_more_lanes_than_blocks(threads, monkeypatch):
    """A batch of 2 on 3 or 4 lanes: each image's blocks split their output channels (every
    image computed, not just the first), shifted-view and im2col kernels alike."""
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(scratch, "MIN_WORK", 0)
    program = small_resnet(2)
    x = feeds(vm.load(program), 4)
    want = vm.load(program, vm.reference()).run(x)
    for shifted in (True, False):
        got = load_fast(program, shifted, threads).run(x)
        assert same_bytes(got, want)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("shifted", [False, True])
def test_clip_bounds_beyond_the_float_limit(residual, shifted):
    """Clip bounds of 2^24 and more are not exact in float32: such tails (after the conv, or
    after a joined residual add) leave the float epilogue, and the bytes stay exact."""
    rng = np.random.default_rng(6)
    b = Builder("clip-big")
    x = b.input("x", (1, 2, 6, 6), 4)
    y = b.op("conv2d", x, b.const("w", rng.integers(-3, 4, (2, 2, 3, 3)), precision=8),
             channels=2, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    if residual:
        y = b.op("elemwise_add", y, b.input("o", (1, 2, 6, 6), 4))
    b.output(b.op("clip", y, a_min=20000001, a_max=20000003))
    program = b.build()
    fast = load_fast(program, shifted)
    xs = {t.name: rng.integers(-7, 8, t.shape).astype(t.dtype) for t in fast.inputs}
    got, want = fast.run(xs), vm.load(program, vm.reference()).run(xs)
    assert same_bytes(got, want)


@pytest.mark.parametrize("rounding", ["fp32", "half_even"])
def test_requantize_bounds_beyond_the_float_limit(rounding):
    """qmin / qmax beyond the float's exact limit (2^24 in fp32) once the zero point is added
    back: the float kernel is not used there, and the bytes stay exact."""
    b = Builder("zp-big")
    x = b.input("x", (1, 2, 4, 4), 8)
    b.output(b.op("requantize", x, multiplier=[1 << 20], shift=[20], rounding=rounding,
                  qmin=(1 << 24) + 1, qmax=(1 << 24) + 3, zero_point=65536))
    program = b.build()
    xs = np.arange(-16, 16).reshape(1, 2, 4, 4).astype(np.int8)
    got, want = vm.load(program).run(xs), vm.load(program, vm.reference()).run(xs)
    assert same_bytes(got, want)
