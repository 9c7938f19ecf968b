"""The onnxruntime backend (vm/ort/): the ONNX writer against onnx itself, the load-time
self-test and its fallbacks, and the bytes of lowered programs against the reference
executor (every lowered op, convolution and dense heads of every shape the rules take,
random programs, real models, thread counts)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from compiler import Builder
from ops.base import bound
from tests.cases import all_cases
from tests.test_differential import check_every_case, random_feeds
from tests.test_text import programs
import ops
from ops import fastquant
from ops.quant import requantize_value
from vm.ort import kernels, plan, proto, requant, selftest
from vm.validate import SMALL_SCAN
from vm.ort import session as sessions
from vm.ort import rules
from vm.ort.rules import RULES

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ORT = vm.cpu(backend="onnxruntime")
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def same_as_reference(program, feeds, ctx=ORT, threads=None, oracle=None) -> vm.Model:
    """Run ``program`` on ``ctx`` and on the reference executor (or ``oracle``, a context
    itself tested against it); the bytes must be equal."""
    blob = vm.encode(program)
    model = vm.load(blob, ctx, threads=threads)
    got, want = model.run(feeds), vm.load(blob, oracle or vm.reference()).run(feeds)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        assert got[k].tobytes() == want[k].tobytes(), (k, model.backend)
    return model


def lowered(model) -> int:
    """How many instructions of ``model`` run on onnxruntime."""
    return sum(len(s.covers) for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel))


# ---------------------------------------------------------------------------------------------
# The ONNX writer
# ---------------------------------------------------------------------------------------------

def test_proto_bytes_equal_onnx_helpers():
    w = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    nodes = [("MatMulInteger", ["x", "w"], ["y"], {}), ("Transpose", ["y"], ["z"], {"perm": [1, 0]}),
             ("Cast", ["z"], ["c"], {"to": 7}), ("BitShift", ["c"], ["d"], {"direction": "RIGHT"}),
             ("Foo", ["d"], ["e"], {"alpha": 0.5, "betas": [1.0, 2.5], "ks": [-1, 3],
                                    "t": np.array([1, 2], np.int64)})]
    ours = proto.model(proto.graph(
        "g", [proto.node(op, i, o, **a) for op, i, o, a in nodes],
        [proto.value_info("x", np.uint8, (2, 3))], [proto.value_info("z", np.int32, (4, 2))],
        [proto.tensor("w", w)]), {"": 18})
    theirs = helper.make_model(helper.make_graph(
        [helper.make_node(op, i, o, **{k: numpy_helper.from_array(v) if isinstance(v, np.ndarray)
                                       else v for k, v in a.items()}) for op, i, o, a in nodes],
        "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 3])],
        [helper.make_tensor_value_info("z", TensorProto.INT32, [4, 2])],
        [numpy_helper.from_array(w, "w")]),
        opset_imports=[helper.make_opsetid("", 18)], ir_version=9, producer_name="detvm")
    assert ours == theirs.SerializeToString()


def test_backend_graphs_pass_the_onnx_checker():
    for form in selftest.FORMS:
        for spec, _ in selftest.cases(form):
            onnx.checker.check_model(onnx.load_from_string(spec.graph()), full_check=True)
    for todo in (selftest.cases("u8s8"), selftest.direct_cases(),
                 selftest.direct_cases(signed=True)):
        model, externals = selftest.suite_graph([spec for spec, _ in todo])
        assert not externals
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)


# ---------------------------------------------------------------------------------------------
# The self-test and the fallbacks
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_verdict():
    selftest.reset()
    yield
    selftest.reset()


def test_this_machine_has_an_exact_form():
    v = selftest.verdict()
    assert v.form in selftest.FORMS and v.version == sessions.version()
    assert "exact in the self-test" in str(v)


def per_case(accumulators):
    """The self-test's hook (all cases at once) from a function of one case."""
    return lambda todo: [accumulators(spec, xs) for spec, xs in todo]


def test_the_self_test_session_computes_each_case_as_its_own_graph():
    """All cases of a form share one session: its accumulators are those of each case's own
    graph in its own session, data set by data set."""
    for todo in (selftest.cases("u8s8"), selftest.direct_cases(),
                 selftest.direct_cases(signed=True)):
        together = selftest.accumulators(todo)
        for (spec, xs), gots in zip(todo, together, strict=True):
            alone = sessions.session(spec.graph(), 1)
            for x, got in zip(xs, gots, strict=True):
                assert np.array_equal(got, alone.run(None, {"x": x})[0].astype(np.int64))


def saturating(spec, xs):
    """The accumulators of a uint8 x int8 kernel that adds pairs of products in saturating
    int16 (AVX2 without VNNI); exact for the other form."""
    out = []
    for x in xs:
        exact = selftest.reference(spec, x)
        if spec.form != "u8s8" or spec.conv:
            out.append(exact)
            continue
        u, w = x.astype(np.int64), spec.weight.astype(np.int64)
        k = u.shape[1] + u.shape[1] % 2
        u = np.pad(u, ((0, 0), (0, k - u.shape[1])))
        w = np.pad(w, ((0, 0), (0, k - w.shape[1])))
        pairs = u[:, None, 0::2] * w[None, :, 0::2] + u[:, None, 1::2] * w[None, :, 1::2]
        out.append(np.clip(pairs, -32768, 32767).sum(axis=2))
    return out


def test_a_saturating_kernel_is_caught_and_the_other_form_used(monkeypatch, fresh_verdict):
    monkeypatch.setattr(selftest, "accumulators", per_case(saturating))
    v = selftest.verdict()
    assert v.form == "u8u8" and "uint8 x uint8" in str(v)
    assert selftest.first_difference("u8s8") is not None
    program = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    x = {"x": np.full((1, 3, 8, 8), 127, np.int8)}
    same_as_reference(program, x)


def test_an_inexact_conv_integer_is_not_used(monkeypatch, fresh_verdict):
    monkeypatch.setattr(selftest, "accumulators", per_case(lambda spec, xs: [
        selftest.reference(spec, x) + spec.direct for x in xs]))
    assert selftest.verdict().form == "u8s8" and not selftest.verdict().direct
    program = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    model = same_as_reference(program, {"x": np.full((1, 3, 8, 8), 127, np.int8)})
    assert lowered(model) == len(program.code)


def stem_and_conv_program(seed=3, readers=1):
    """A 3-channel stem whose requantized bytes (zero point 3) feed ``readers`` 16-channel
    3x3 convolutions: all ConvInteger ones."""
    rng = np.random.default_rng(seed)
    b = Builder("stem")
    x = b.input("x", (1, 3, 12, 12), 8)
    w1 = b.const("w1", rng.integers(-127, 128, (16, 3, 3, 3)), precision=8)
    z = b.op("qconv2d", x, w1, channels=16, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    q = b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, 16).tolist(),
             shift=[31] * 16, axis=1, qmin=0, qmax=255, zero_point=3)
    for k in range(readers):
        w = b.const(f"w{k + 2}", rng.integers(-127, 128, (16, 16, 3, 3)), precision=8)
        b.output(b.op("qconv2d", q, w, channels=16, kernel_size=(3, 3), padding=(1, 1),
                      use_bias=False, zero_point=3))
    return b.build()


def test_a_saturating_conv_integer_on_int8_data_keeps_the_bytes(monkeypatch, fresh_verdict,
                                                                heads_only):
    """ConvInteger on int8 data (onnxruntime's uint8 x int8 kernel) has cases of its own: a
    kernel wrong there leaves ConvInteger on bytes, with the reference's bytes."""
    monkeypatch.setattr(selftest, "accumulators", per_case(lambda spec, xs: [
        selftest.reference(spec, x) + spec.signed for x in xs]))
    v = selftest.verdict()
    assert v.form == "u8s8" and v.direct and not v.signed and "int8 data" not in str(v)
    program = stem_and_conv_program()
    model = same_as_reference(program, extreme_feeds(program, 4), vm.cpu())
    regions = [s.kernel for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)]
    assert len(regions) == 2 and not any(k.flips for k in regions)


def test_a_conv_integer_reads_held_bytes_as_int8(heads_only, monkeypatch):
    """Where ConvInteger on int8 data is exact, a convolution reading bytes a numpy step
    holds (uint8, offset 0) gets them XOR 0x80 as int8 (value - 128), flipped before its
    session (at any size: FLIP_MIN 0); the program input (int8 range, offset 128) goes in as
    it is."""
    monkeypatch.setattr(rules, "FLIP_MIN", 0)
    assert selftest.verdict().signed
    program = stem_and_conv_program()
    feeds = extreme_feeds(program, 4)
    model = same_as_reference(program, feeds, vm.cpu())
    regions = [s.kernel for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)]
    assert [k.flips for k in regions] == [(), (0,)]
    assert [i.type for r in regions for i in r.session.get_inputs()][1] == "tensor(int8)"
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for array in (values, values.astype(np.int32), values.T):
        got = kernels.flipped(array)
        assert got.dtype == np.int8 and got.flags.c_contiguous
        assert np.array_equal(got, array.astype(np.int64) - 128)


def test_two_convolutions_of_one_region_share_the_flipped_input(heads_only, monkeypatch):
    """Two ConvInteger convolutions in one session reading the same held bytes: one input,
    flipped once."""
    monkeypatch.setattr(rules, "FLIP_MIN", 0)
    program = stem_and_conv_program(5, readers=2)
    model = same_as_reference(program, extreme_feeds(program, 6), vm.cpu())
    regions = [s.kernel for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)]
    assert [(len(k.inputs), k.flips) for k in regions] == [(1, ()), (1, (0,))]


def test_a_conv_integer_that_does_not_build_leaves_the_matmul_form(monkeypatch, fresh_verdict):
    """ConvInteger's cases share the first form's session; where that session fails, each
    set of cases runs alone, so only ConvInteger is given up."""
    exact = per_case(lambda spec, xs: selftest.references(spec, xs))

    def no_conv_integer(todo):
        if any(spec.direct for spec, _ in todo):
            raise RuntimeError("ConvInteger: not implemented")
        return exact(todo)
    monkeypatch.setattr(selftest, "accumulators", no_conv_integer)
    v = selftest.verdict()
    assert v.form == "u8s8" and not v.direct and "ConvInteger" not in str(v)


def test_the_self_test_reference_is_exact_on_both_paths():
    """exact_matmul through float64 (partial sums below 2^53) and through int64 (not)."""
    rng = np.random.default_rng(5)
    for hi in (255, 1 << 50):
        a = rng.integers(-hi, hi + 1, (2, 3, 17))
        b = rng.integers(-255, 256, (2, 17, 4))
        want = [[[sum(int(x) * int(y) for x, y in zip(a[g, i], b[g, :, j])) for j in range(4)]
                 for i in range(3)] for g in range(2)]
        got = selftest.exact_matmul(a, b)
        assert got.dtype == np.int64 and got.tolist() == want


def test_no_exact_form_means_the_numpy_executor(monkeypatch, fresh_verdict, auto_lowers):
    monkeypatch.setattr(selftest, "accumulators", per_case(
        lambda spec, xs: [selftest.reference(spec, x) + 1 for x in xs]))
    program = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    model = vm.load(program)
    assert model.backend.startswith("numpy (onnxruntime") and "failed the self-test" in \
        model.backend and lowered(model) == 0
    with pytest.raises(vm.EnvironmentFault, match="not available"):
        vm.load(program, ORT)


def test_without_onnxruntime_the_numpy_executor_runs(monkeypatch, fresh_verdict, auto_lowers):
    monkeypatch.setattr(sessions, "runtime", lambda: None)
    program = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    model = vm.load(program)
    assert model.backend == "numpy (onnxruntime is not installed: the numpy executor runs)"
    with pytest.raises(vm.EnvironmentFault, match="not installed"):
        vm.load(program, ORT)
    assert vm.load(program, vm.cpu(backend="numpy")).backend == "numpy"


def test_unknown_backend_is_an_environment_fault():
    with pytest.raises(vm.EnvironmentFault, match="unknown backend"):
        vm.cpu(backend="tensorrt")
    with pytest.raises(vm.EnvironmentFault, match="unknown backend"):
        vm.Context("gpu", 0, "numpy")


# ---------------------------------------------------------------------------------------------
# Every lowered op, random programs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(RULES) & set(all_cases())))
def test_every_lowered_op_equals_the_reference(name):
    check_every_case(name, same_as_reference, SETTINGS)


@SETTINGS
@given(programs(), st.data())
def test_random_programs_equal_the_reference(program, data):
    same_as_reference(program, random_feeds(vm.load(program, ORT), data))


def test_a_table_index_near_the_int32_limit():
    """A requantize table of a p32 input: x - first reaches 2^31 (found by hypothesis: the
    index was computed in int32 and wrapped)."""
    b = Builder("rq")
    x = b.input("x", (2, 3, 4), 32)
    b.output(b.op("requantize", x, multiplier=[1], shift=[1], qmin=-1, qmax=0,
                  rounding="half_even"))
    xs = np.zeros((2, 3, 4), np.int32)
    xs.reshape(-1)[-2:] = bound(32) - 1, bound(32)
    xs.reshape(-1)[:2] = -bound(32), -2
    same_as_reference(b.build(), {"x": xs})


@pytest.mark.parametrize("path", ["table", "rounding"])
@SETTINGS
@given(data=st.data())
def test_requantize_equals_the_reference_on_each_path(path, monkeypatch, data):
    """Per-channel requantize of every rounding, zero points and ranges, forced through the
    table or through the integer rounding (TABLE_ENTRIES 0)."""
    monkeypatch.setattr(requant, "TABLE_ENTRIES", requant.TABLE_ENTRIES if path == "table" else 0)
    rounding = data.draw(st.sampled_from(["fp32", "half_even", "half_up"]))
    c, p = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 20))
    ms = data.draw(st.lists(st.integers(0, (1 << 24) - 1), min_size=c, max_size=c))
    shift = data.draw(st.integers(1, 36))
    qmin = data.draw(st.integers(-300, 100))
    b = Builder("r")
    x = b.input("x", (2, c, 3, 5), p)
    b.output(b.op("requantize", x, multiplier=ms, shift=[shift] * c, axis=1, rounding=rounding,
                  zero_point_in=data.draw(st.integers(-300, 300)),
                  zero_point=data.draw(st.integers(-200, 200)), qmin=qmin,
                  qmax=data.draw(st.integers(qmin, 400))))
    program = b.build()
    same_as_reference(program, random_feeds(vm.load(program, ORT), data))


def test_float32_rounding_in_integers_where_it_differs_from_exact_rounding(monkeypatch):
    """Inputs whose float32 product rounds onto, or across, a half-integer (found with the op's
    own kernel: fp32 and half_even results differ there), through the integer rounding."""
    monkeypatch.setattr(requant, "TABLE_ENTRIES", 0)
    rng = np.random.default_rng(0)
    d = np.arange(-(1 << 20), 1 << 20, dtype=np.int64)
    for _ in range(4):
        m, s = int(rng.integers(1 << 23, 1 << 24)), int(rng.integers(28, 36))
        a = dict(multiplier=[m], shift=[s], axis=0, zero_point_in=0, zero_point=3,
                 qmin=-30000, qmax=30000)
        results = [fastquant.RequantizeKernel(dict(a, rounding=r), 22, 1, np.int32)(np, d)
                   for r in ("fp32", "half_even")]
        hard = d[results[0] != results[1]]
        assert hard.size
        values = np.concatenate([hard, hard - 1, hard + 1, [0, 1, -1]])[:3000]
        b = Builder("r")
        b.output(b.op("requantize", b.input("x", (values.size,), 23), rounding="fp32", **a))
        program = b.build()
        assert requant.how(program.code[0].attrs, -bound(23), bound(23))[0] == "rounding"
        same_as_reference(program, {"x": values.astype(np.int32)})


# ---------------------------------------------------------------------------------------------
# Convolutions and dense heads of every kind the rules take
# ---------------------------------------------------------------------------------------------

DATA = {"signed8": (8, False), "relu8": (8, True), "bytes": (9, True), "signed10": (10, False),
        "zp": (9, True)}
"""Data kinds: precision and whether it is made non-negative (relu / requantize to bytes);
``zp``: bytes entering a qconv2d with a zero point; ``signed10`` needs the split operand."""


def conv_program(n, c, h, w, oc, k, stride, pad, dil, data, tail, bias=True, seed=0,
                 dense=False, groups=1):
    """x (data kind) -> conv2d / qconv2d (or dense / qdense) -> tail ("shift": cvm_right_shift
    + relu; "fp32" / "half_even": per-channel requantize; "raw": nothing)."""
    rng = np.random.default_rng(seed)
    p, nonneg = DATA[data]
    b = Builder("conv")
    x = b.input("x", (n, c, h, w), p)
    if nonneg and data in ("bytes", "zp"):
        x = b.op("requantize", x, multiplier=[3 << 20], shift=[21], qmin=0, qmax=255,
                 zero_point=3)
    elif nonneg:
        x = b.op("relu", x)
    q = p > 8
    wshape = (oc, c * h * w) if dense else (oc, c // groups, *k)
    weight = b.const("w", rng.integers(-128 if q else -127, 128, wshape), precision=8 + q)
    args = [b.const("b", rng.integers(-3000, 3000, (oc,)), precision=16)] if bias else []
    if dense:
        x = b.op("flatten", x)
        z = b.op("qdense" if q else "dense", x, weight, *args, units=oc, use_bias=bias,
                 **({"zero_point": 17 if data == "zp" else 0} if q else {}))
    else:
        z = b.op("qconv2d" if q else "conv2d", x, weight, *args, channels=oc, kernel_size=k,
                 strides=stride, padding=pad, dilation=dil, use_bias=bias, groups=groups,
                 **({"zero_point": 17 if data == "zp" else 0} if q else {}))
    if tail == "shift":
        z = b.op("relu", b.op("cvm_right_shift", z, precision=8, shift_bit=9))
    elif tail in ("fp32", "half_even"):
        ms = rng.integers(1 << 22, 1 << 24, oc).tolist()
        z = b.op("requantize", z, multiplier=ms, shift=[34] * oc, axis=1, qmin=0, qmax=255,
                 zero_point=120, rounding=tail)
    b.output(z)
    return b.build()


def extreme_feeds(program, seed):
    """Random inputs with the extremes of the precision frequent."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in program.inputs:
        t = program.tensors[i]
        r = bound(t.precision)
        x = rng.integers(-r, r + 1, t.shape)
        x.reshape(-1)[::3] = r
        x.reshape(-1)[1::5] = -r
        out[t.name] = x.astype(t.dtype)
    return out


def test_licences_of_lowered_convolutions_are_never_computed():
    """Loading computes no GEMM licence for a step onnxruntime runs; the numpy executor
    computes its step's, equal to ops.gemm.licence of its weight."""
    from ops import gemm
    program = conv_program(1, 8, 9, 9, 16, (3, 3), (1, 1), (1, 1), (1, 1), "relu8", "shift")
    index = next(k for k, ins in enumerate(program.code) if ins.op == "conv2d")
    model = vm.load(program, ORT)
    assert lowered(model) == len(program.code) and index in model.analysis.licences
    assert not model.analysis.licences.computed()
    numpy_model = same_as_reference(program, extreme_feeds(program, 0), vm.cpu(backend="numpy"))
    assert numpy_model.analysis.licences.computed() == {index}
    weight = program.consts[program.code[index].inputs[1]]
    assert numpy_model.analysis.licences[index] == gemm.licence(weight, 127, True)


conv_cases = st.tuples(
    st.integers(1, 2), st.integers(1, 6), st.integers(3, 9), st.integers(3, 9),
    st.integers(1, 7), st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 2), st.integers(1, 2)), st.tuples(st.integers(0, 2),
                                                              st.integers(0, 2)),
    st.tuples(st.integers(1, 2), st.integers(1, 2)), st.sampled_from(sorted(DATA)),
    st.sampled_from(["shift", "fp32", "half_even", "raw"]), st.booleans(), st.integers(0, 99),
    st.booleans())


@pytest.mark.parametrize("direct", [8, 0])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=conv_cases)
def test_convolutions_and_dense_equal_the_reference(direct, monkeypatch, case):
    """Convolutions of up to ``direct`` channels run as ConvInteger, the others (and dense)
    as MatMulInteger on the im2col."""
    monkeypatch.setattr(rules, "DIRECT_CHANNELS", direct)
    n, c, h, w, oc, k, stride, pad, dil, data, tail, bias, seed, dense = case
    pad = tuple(min(p, kk - 1) for p, kk in zip(pad, k))
    if any(s + 2 * p < (kk - 1) * d + 1 for s, p, kk, d in zip((h, w), pad, k, dil)):
        return
    program = conv_program(n, c, h, w, oc, k, stride, pad, dil, data, tail, bias, seed, dense)
    model = same_as_reference(program, extreme_feeds(program, seed))
    head = "dense" if dense else "conv2d"
    assert any(program.code[k].op.endswith(head) for s in model.plan.fast
               if isinstance(s.kernel, plan.RegionKernel) for k in s.covers)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=conv_cases, multiplier=st.integers(1, 2))
def test_depthwise_convolutions_equal_the_reference(case, multiplier):
    """Depthwise convolutions (one input channel per group, ``multiplier`` outputs each) run
    as ConvInteger with its group attribute."""
    n, c, h, w, _, k, stride, pad, dil, data, tail, bias, seed, _ = case
    pad = tuple(min(p, kk - 1) for p, kk in zip(pad, k))
    if any(s + 2 * p < (kk - 1) * d + 1 for s, p, kk, d in zip((h, w), pad, k, dil)):
        return
    program = conv_program(n, c, h, w, c * multiplier, k, stride, pad, dil, data, tail, bias,
                           seed, groups=c)
    model = same_as_reference(program, extreme_feeds(program, seed))
    assert any(program.code[k].op.endswith("conv2d") for s in model.plan.fast
               if isinstance(s.kernel, plan.RegionKernel) for k in s.covers)


def channel_cuts(model) -> list:
    """The channel ranges of each ChannelSplitKernel step of ``model`` (and its input axis)."""
    return [([part[-2:] for part in s.kernel.parts], s.kernel.axis) for s in model.plan.fast
            if isinstance(s.kernel, plan.ChannelSplitKernel)]


@pytest.mark.parametrize("threads, c, stride", [(2, 16, 1), (3, 15, 2), (2, 3, 1)])
def test_a_depthwise_convolution_is_cut_by_channels_over_the_lanes(monkeypatch, threads, c,
                                                                    stride):
    """A depthwise convolution of one image (here of any size: THREADED_MACS 0) runs as one
    session per lane, each on its channels, writing its part of the one result."""
    monkeypatch.setattr(plan, "THREADED_MACS", 0)
    program = conv_program(1, c, 9, 8, c, (3, 3), (stride, stride), (1, 1), (1, 1), "signed8",
                           "raw", True, c, groups=c)
    model = same_as_reference(program, extreme_feeds(program, c), threads=threads)
    cuts = [(c * j // threads, c * (j + 1) // threads) for j in range(threads)]
    assert channel_cuts(model) == [(cuts, 1)]
    assert f"in 1 session (1 cut by channels over {threads} lanes)" in model.backend
    assert channel_cuts(vm.load(vm.encode(program), ORT, threads=1)) == []
    batch = conv_program(2, c, 9, 8, c, (3, 3), (stride, stride), (1, 1), (1, 1), "signed8",
                         "raw", True, c, groups=c)
    assert channel_cuts(vm.load(vm.encode(batch), ORT, threads=threads)) == []


def test_a_depthwise_convolution_cuts_an_input_held_channels_last(heads_only, matmul_from_9,
                                                                  monkeypatch):
    """A depthwise convolution reading the bytes of a MatMulInteger convolution (held channels
    last) cuts them on their last axis."""
    monkeypatch.setattr(plan, "THREADED_MACS", 0)
    rng = np.random.default_rng(7)
    b = Builder("dw")
    x, q = conv_requantized(b, rng, (1, 12, 10, 10), 0, 255, zero_point=9)
    w = b.const("w2", rng.integers(-127, 128, (8, 1, 3, 3)), precision=8)
    b.output(b.op("qconv2d", q, w, channels=8, kernel_size=(3, 3), padding=(1, 1), groups=8,
                  use_bias=False, zero_point=9))
    program = b.build()
    model = same_as_reference(program, extreme_feeds(program, 7), vm.cpu(), threads=2)
    assert channel_cuts(model) == [([(0, 4), (4, 8)], 3)]


def test_only_graphs_computing_from_constants_get_graph_optimizations():
    """onnxruntime's basic optimizations run only where a graph computes values from constants
    alone (they fold them once); a convolution's region has nothing for them."""
    level = lambda model: {step.kernel.session.get_session_options().graph_optimization_level
                           for step in model.plan.fast if isinstance(step.kernel,
                                                                     plan.RegionKernel)}
    conv = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    levels = onnxruntime.GraphOptimizationLevel
    assert level(same_as_reference(conv, {"x": np.full((1, 3, 8, 8), 127, np.int8)})) == \
        {levels.ORT_DISABLE_ALL}
    b = Builder("constants")
    x = b.input("x", (4, 6), 8)
    k = b.op("elemwise_add", b.const("a", np.arange(24).reshape(4, 6) - 12, precision=8),
             b.const("c", np.full((4, 6), 3), precision=8))
    b.output(b.op("elemwise_add", x, k))
    model = same_as_reference(b.build(), {"x": np.arange(-12, 12, dtype=np.int8).reshape(4, 6)})
    assert level(model) == {levels.ORT_ENABLE_BASIC}


def test_small_sessions_run_on_one_thread():
    """A session of little work runs on one intra-op thread whatever the plan's threads; one
    of at least THREADED_MACS multiply-adds on the plan's, but a grouped convolution's."""
    threads = lambda model: {s.kernel.session.get_session_options().intra_op_num_threads
                             for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)}
    small = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    assert threads(same_as_reference(small, extreme_feeds(small, 0), threads=2)) == {1}
    big = conv_program(1, 16, 64, 64, 16, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "raw")
    assert plan._macs(big, big.code[-1]) >= plan.THREADED_MACS
    model = vm.load(vm.encode(big), ORT, threads=2)
    assert threads(model) == {2}
    # a depthwise convolution's session, however large, on one thread
    depthwise = conv_program(1, 16, 256, 256, 16, (3, 3), (1, 1), (1, 1), (1, 1), "signed8",
                             "raw", groups=16)
    assert plan._footprint(depthwise, depthwise.code[-1]) >= plan.THREADED_SIZE
    assert threads(vm.load(vm.encode(depthwise), ORT, threads=2)) == {1}


def test_sessions_share_the_process_arena():
    """Every session of a plan, small or large, allocates from the one arena registered in
    onnxruntime's environment; runs after the first give the same bytes."""
    assert sessions.shared_arena()
    program = conv_program(1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), "signed8", "shift")
    x = extreme_feeds(program, 0)
    model = same_as_reference(program, x)
    options = [step.kernel.session.get_session_options() for step in model.plan.fast
               if isinstance(step.kernel, plan.RegionKernel)]
    assert options and all(o.get_session_config_entry("session.use_env_allocators") == "1"
                           for o in options)
    first = model.run(x)
    assert all(model.run(x)[k].tobytes() == v.tobytes() for k, v in first.items())


@SETTINGS
@given(st.sampled_from(["i1", "i2", "<i4", ">i4", "i8", "u1", "u2", "u4", "u8"]),
       st.sampled_from([1, 7, SMALL_SCAN, SMALL_SCAN + 1, 3000]), st.data())
def test_bytes_only_is_every_value_in_0_255(dtype, n, data):
    """The guard's check, on both of its paths (a Python integer of the bytes, a numpy pass),
    on every integer dtype and byte order, contiguous or strided."""
    info = np.iinfo(np.dtype(dtype))
    x = np.random.default_rng(data.draw(st.integers(0, 99))).integers(
        0, min(256, int(info.max) + 1), 2 * n).astype(dtype)
    for _ in range(data.draw(st.integers(0, 2))):
        x[data.draw(st.integers(0, 2 * n - 1))] = data.draw(
            st.integers(max(int(info.min), -300), min(int(info.max), 300)))
    for view in (x[:n], x[::2]):
        assert kernels.bytes_only(view) == bool(((view >= 0) & (view <= 255)).all())


@pytest.mark.parametrize("shape", [(1, 3, 80, 80), (1, 3, 8, 8)])
def test_a_wide_input_holding_bytes_runs_the_guarded_session(shape):
    """A p9 input (values in [-255, 255]) into a convolution needs two bytes per value; when
    the values at hand are bytes, the narrower session runs (at any size), on those bytes
    - 128 as int8 where ConvInteger on int8 data is exact (made in numpy: ``guarded_flips``);
    both give the reference's bytes (the numpy executor's on the large image: the reference
    takes seconds there); a single negative value takes the wide one."""
    oracle = vm.cpu(backend="numpy") if shape[-1] > 8 else None
    b = Builder("wide")
    x = b.input("x", shape, 9)
    w = b.const("w", np.random.default_rng(0).integers(-127, 128, (8, 3, 3, 3)), precision=8)
    b.output(b.op("qconv2d", x, w, channels=8, kernel_size=(3, 3), padding=(1, 1),
                  use_bias=False))
    program = b.build()
    model = vm.load(program, ORT)
    (step,) = model.plan.fast
    assert step.kernel.guarded is not None and step.kernel.flips == ()
    large = int(np.prod(shape)) >= rules.FLIP_MIN
    assert step.kernel.guarded_flips == ((0,) if selftest.verdict().signed and large else ())
    calls = []
    kernel = step.kernel
    wide, (positions, narrow, names) = kernel._run, kernel.guarded
    kernel._run = lambda *a: calls.append("wide") or wide(*a)
    kernel.guarded = (positions, lambda *a: calls.append("bytes") or narrow(*a), names)
    rng = np.random.default_rng(1)
    for lo, hi, which in ((0, 255, "bytes"), (-255, 255, "wide")):
        x = rng.integers(lo, hi + 1, shape).astype(np.int32)
        x.reshape(-1)[::5] = hi
        same_as_reference(program, {"x": x}, oracle=oracle)
        model.run({"x": x})
        assert calls[-1] == which
    for odd in (-1, -255):
        x = rng.integers(0, 256, shape).astype(np.int32)
        x.reshape(-1)[-1] = odd
        same_as_reference(program, {"x": x}, oracle=oracle)
        model.run({"x": x})
        assert calls[-1] == "wide"
    same_as_reference(program, {"x": rng.integers(0, 256, shape).astype(np.uint8)},
                      oracle=oracle)


@pytest.fixture
def auto_lowers(monkeypatch):
    """``auto`` lowers where it pays (its default policy)."""
    monkeypatch.setattr(plan, "AUTO", plan.Policy())


@pytest.fixture
def matmul_from_9(monkeypatch):
    """Convolutions of more than 8 input channels run as MatMulInteger (channels last): the
    layout tests put small channel counts on both sides of DIRECT_CHANNELS."""
    monkeypatch.setattr(rules, "DIRECT_CHANNELS", 8)


@pytest.fixture
def heads_only(monkeypatch):
    """``auto`` lowers the convolutions alone: their results pass through numpy steps held
    channels last (the twin program)."""
    monkeypatch.setattr(plan, "AUTO", plan.Policy(min_macs=0, small=0, small_requantize=0,
                                                  tables=False))


def residual_program(seed=0, rounding="fp32", c=4):
    """QDQ-style residual block after a max pool: conv -> requantize -> conv -> requantize,
    the shortcut and the branch rescaled (requantize), added, requantized; a max pool and a
    dense head; ``c`` channels (up to 8 the convolutions are ConvInteger ones)."""
    rng = np.random.default_rng(seed)
    b = Builder("block")
    x = b.op("requantize", b.input("x", (2, c, 11, 11), 9), multiplier=[1 << 21], shift=[21],
             qmin=0, qmax=255)
    x = b.op("max_pool2d", x, pool_size=(2, 2))

    def conv(v, zp, name):
        w = b.const(name, rng.integers(-128, 128, (c, c, 3, 3)), precision=9)
        z = b.op("qconv2d", v, w, channels=c, kernel_size=(3, 3), padding=(1, 1),
                 use_bias=False, zero_point=zp)
        return b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, c).tolist(),
                    shift=[33] * c, axis=1, qmin=0, qmax=255, zero_point=118, rounding=rounding)
    y = conv(conv(x, 0, "w1"), 118, "w2")
    a = b.op("requantize", y, multiplier=[1 << 30], shift=[14], zero_point_in=118,
             qmin=-(1 << 24), qmax=1 << 24)
    s = b.op("requantize", x, multiplier=[1415450055], shift=[15], qmin=-(1 << 24),
             qmax=1 << 24)
    out = b.op("requantize", b.op("broadcast_add", a, s), multiplier=[15170247], shift=[40],
               qmin=0, qmax=255, rounding=rounding)
    out = b.op("max_pool2d", out, pool_size=(2, 2), strides=(2, 2))
    w = b.const("fc", rng.integers(-128, 128, (5, 25 * c)), precision=9)
    b.output(b.op("qdense", b.op("flatten", out), w, units=5, use_bias=False))
    return b.build()


@pytest.mark.parametrize("rounding, c", [("fp32", 4), ("half_even", 4), ("fp32", 12)])
def test_held_numpy_steps_between_lowered_convolutions(heads_only, matmul_from_9, rounding,
                                                       c):
    """Between lowered convolutions the numpy steps run on tensors held as bytes, channels
    last around MatMulInteger convolutions (more than 8 channels), NCHW around ConvInteger
    ones."""
    program = residual_program(rounding=rounding, c=c)
    feeds = extreme_feeds(program, 1)
    model = same_as_reference(program, feeds, vm.cpu())
    assert 0 < lowered(model) < len(program.code)
    shapes = []
    model.plan.run({i: feeds[program.tensors[i].name] for i in program.inputs}, fused=True,
                   trace=lambda step, values: shapes.extend(
                       (type(step.kernel).__name__, v.shape, v.dtype) for v in values))
    # the convolutions' requantizes, and the residual addition as one table, held as bytes
    held = (2, 10, 10, c) if c > 8 else (2, c, 10, 10)
    assert ("RequantizeKernel", held, np.uint8) in shapes
    assert ("TableKernel", held, np.uint8) in shapes
    everything = same_as_reference(program, feeds)
    assert lowered(everything) > lowered(model)


def test_a_conv_integer_accumulator_is_not_transposed_for_its_reader(heads_only, matmul_from_9):
    """A ConvInteger stem (3 channels) whose requantized bytes feed a MatMulInteger
    convolution: the int32 accumulator and the requantize after it stay NCHW (as ConvInteger
    writes them); the next session transposes the bytes."""
    program = stem_and_conv_program()
    feeds = extreme_feeds(program, 4)
    model = same_as_reference(program, feeds, vm.cpu())
    held = fused_values(model, feeds)
    assert ("qconv2d", (1, 16, 12, 12), np.int32) in held, held
    assert ("requantize", (1, 16, 12, 12), np.uint8) in held, held


@pytest.mark.parametrize("n, side, direct", [(8, 4, True), (9, 4, False), (9, 8, True)])
def test_a_batch_of_small_images_runs_as_one_matmul_integer(monkeypatch, n, side, direct):
    """A convolution of few channels is ConvInteger up to DIRECT_IMAGES images, or for images
    of at least DIRECT_POSITIONS output positions (8x8); a larger batch of smaller images runs
    as one MatMulInteger on the im2col."""
    selftest.verdict()                                   # its graphs made before
    graphs = []
    create = plan.sessions.session
    monkeypatch.setattr(plan.sessions, "session",
                        lambda model, *a, **k: graphs.append(model) or create(model, *a, **k))
    rng = np.random.default_rng(n)
    b = Builder("batch")
    b.output(conv_requantized(b, rng, (n, 4, side, side), 0, 255)[1])
    program = b.build()
    same_as_reference(program, extreme_feeds(program, 2), vm.cpu())
    convs = [op for op in (b"ConvInteger", b"MatMulInteger") if any(op in g for g in graphs)]
    assert convs == [b"ConvInteger" if direct else b"MatMulInteger"]


def fused_values(model, feeds) -> list[tuple[str, tuple, np.dtype]]:
    """(the op of the last instruction a fused step covers, shape, dtype) of each value the
    steps of ``model`` hand on, run on ``feeds``."""
    program, held = model.program, []
    model.plan.run({i: feeds[program.tensors[i].name] for i in program.inputs}, fused=True,
                   trace=lambda step, values: held.extend(
                       (program.code[step.covers[-1]].op, v.shape, v.dtype) for v in values))
    return held


def conv_requantized(b, rng, shape, qmin: int, qmax: int, zero_point: int = 0):
    """(x, q): the p8 input ``x`` of ``shape`` through a 3x3 qconv2d to 8 channels and a
    per-channel requantize to [qmin, qmax]."""
    x = b.input("x", shape, 8)
    w1 = b.const("w1", rng.integers(-127, 128, (8, shape[1], 3, 3)), precision=8)
    z = b.op("qconv2d", x, w1, channels=8, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    return x, b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, 8).tolist(),
                   shift=[31] * 8, axis=1, qmin=qmin, qmax=qmax, zero_point=zero_point)


def lut_program(selections: bool, seed=0):
    """conv -> requantize -> lut (an activation table of bytes) -> conv, with the table's
    result split and concatenated again and max-pooled before the second conv where
    ``selections``: the second convolution reads one byte per value only through the table's
    (and the selections') ranges (the table's entries lie in [3, 250])."""
    rng = np.random.default_rng(seed)
    b = Builder("lut")
    x, q = conv_requantized(b, rng, (1, 4, 9, 9), 0, 255, 100)
    table = b.const("table", rng.integers(3, 251, 256), precision=9)
    a = b.op("lut", table, q, low=[0])
    if selections:
        left = b.op("strided_slice", a, begin=[0, 0, 0, 0], end=[1, 4, 9, 9],
                    stride=[1, 1, 1, 1])
        right = b.op("strided_slice", a, begin=[0, 4, 0, 0], end=[1, 8, 9, 9],
                     stride=[1, 1, 1, 1])
        a = b.op("max_pool2d", b.op("concatenate", right, left, axis=1), pool_size=(2, 2),
                 padding=(1, 1))
    w2 = b.const("w2", rng.integers(-127, 128, (8, 8, 3, 3)), precision=8)
    b.output(b.op("qconv2d", a, w2, channels=8, kernel_size=(3, 3), padding=(1, 1),
                  use_bias=False, zero_point=7))
    return b.build()


def test_tables_and_selections_narrow_the_proven_ranges():
    from vm.ranges import Ranges
    program = lut_program(True)
    ranges, names = Ranges(program), {t.name: k for k, t in enumerate(program.tensors)}
    table = program.consts[names["table"]]
    want = (int(table.min()), int(table.max()))
    assert program.code[-1].op == "qconv2d"
    for ins in program.code[2:-1]:                        # the lut and the selections
        assert ranges.of(ins.outputs[0]) == want, ins.op
    assert ranges.of(program.code[1].outputs[0]) == (0, 255)   # requantize: [qmin, qmax]
    facts = plan.Facts(program, vm.validate(program), "u8s8")
    assert rules.linear_parts(facts, len(program.code) - 1)[4] is False    # one byte


@pytest.mark.parametrize("selections", [False, True])
def test_a_table_between_lowered_convolutions(heads_only, selections):
    """The lut runs in numpy between the two sessions (on bytes held in the layout of the
    ConvInteger convolutions, NCHW, when it feeds the convolution directly); the bytes are
    the reference's."""
    program = lut_program(selections)
    feeds = extreme_feeds(program, 2)
    model = same_as_reference(program, feeds, vm.cpu())
    convs = [k for k, ins in enumerate(program.code) if ins.op == "qconv2d"]
    covered = {k for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)
               for k in s.covers}
    assert set(convs) <= covered
    held = fused_values(model, feeds)
    if not selections:          # the lut's result (fused with the requantize before it)
        assert ("lut", (1, 8, 9, 9), np.uint8) in held
    same_as_reference(program, feeds)


@pytest.mark.parametrize("two, low, side", [(False, 0, 256), (False, -128, 256),
                                             (False, 3, 200), (True, 0, 16), (True, -5, 7)])
def test_a_lowered_lut_equals_the_reference(two, low, side):
    """lut inside a session (GatherElements on the flat index): one or two inputs (of one
    shape, or broadcasting), indices clipped where the proven range exceeds the table, between
    two lowered convolutions and alone; the values at both ends of every input."""
    rng = np.random.default_rng(side)
    b = Builder("lut")
    x, q = conv_requantized(b, rng, (1, 4, 6, 6), -128, 127)
    shape = (side, side) if two else (side,)
    table = b.const("table", rng.integers(-127, 128, shape), precision=8)
    a = b.op("lut", table, q, q, low=[low, low]) if two else b.op("lut", table, q, low=[low])
    w2 = b.const("w2", rng.integers(-127, 128, (8, 8, 3, 3)), precision=8)
    y = b.op("qconv2d", a, w2, channels=8, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    outputs = [y, b.op("lut", table, *([x, x] if two else [x]), low=[low] * (1 + two))]
    if two:                             # broadcasting: a value per channel as the column
        per_channel = b.op("max_pool2d", q, pool_size=(6, 6))
        outputs.append(b.op("lut", table, q, per_channel, low=[low, low]))
    b.output(*outputs)
    program = b.build()
    model = same_as_reference(program, extreme_feeds(program, 3))
    luts = [k for k, ins in enumerate(program.code) if ins.op == "lut"]
    assert set(luts) <= {k for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)
                         for k in s.covers}
    for v in (-127, 127):
        same_as_reference(program, {"x": np.full((1, 4, 6, 6), v, np.int8)})


def split_program(c: int = 12, seed: int = 0):
    """A YOLOv8 C2f-like block: conv -> requantize -> lut, split in two along the channels
    (strided_slice, one with a stride), a conv on one half, the halves concatenated again
    (axis -3) and a last conv."""
    rng = np.random.default_rng(seed)
    b = Builder("split")
    x = b.input("x", (1, c, 7, 6), 8)

    def conv(v, cin, cout, name):
        w = b.const(name, rng.integers(-127, 128, (cout, cin, 3, 3)), precision=8)
        z = b.op("qconv2d", v, w, channels=cout, kernel_size=(3, 3), padding=(1, 1),
                 use_bias=False)
        return b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, cout).tolist(),
                    shift=[31] * cout, axis=1, qmin=0, qmax=255, zero_point=90,
                    rounding="fp32")
    a = b.op("lut", b.const("table", rng.integers(2, 250, 256), precision=9),
             conv(x, c, 2 * c, "w1"), low=[0])
    left = b.op("strided_slice", a, begin=[0, 0, 0, 0], end=[1, c, 7, 6])
    right = b.op("strided_slice", a, begin=[0, c, 6, 0], end=[1, 2 * c, -8, 6],
                 stride=[1, 1, -1, 1])
    both = b.op("concatenate", left, conv(right, c, c, "w2"), axis=-3)
    b.output(conv(both, 2 * c, c, "w3"))
    return b.build()


def test_selections_between_channels_last_convolutions(heads_only, matmul_from_9):
    """A split and a concatenation between MatMulInteger convolutions run on bytes held
    channels last (their axes permuted): no tensor between the sessions is int32 or NCHW;
    the bytes are the reference's."""
    program = split_program()
    feeds = extreme_feeds(program, 3)
    model = same_as_reference(program, feeds, vm.cpu())
    held = fused_values(model, feeds)
    assert ("strided_slice", (1, 7, 6, 12), np.uint8) in held
    assert ("concatenate", (1, 7, 6, 24), np.uint8) in held
    same_as_reference(program, feeds)


@pytest.mark.parametrize("c", [6, 12])
def test_a_broadcast_table_between_lowered_convolutions(heads_only, matmul_from_9, c):
    """A two-input lut broadcasting a (1, C, 1, 1) scale over the feature map (squeeze and
    excitation) between lowered convolutions runs on the bytes held in their layout (NCHW
    around ConvInteger, channels last around MatMulInteger convolutions)."""
    rng = np.random.default_rng(c)
    b = Builder("se")
    x = b.input("x", (1, c, 5, 7), 8)

    def conv(v, name, k=(3, 3), pad=(1, 1)):
        w = b.const(name, rng.integers(-127, 128, (c, c, *k)), precision=8)
        z = b.op("qconv2d", v, w, channels=c, kernel_size=k, padding=pad, use_bias=False)
        return b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, c).tolist(),
                    shift=[31] * c, axis=1, qmin=0, qmax=255, zero_point=77, rounding="fp32")
    y = conv(x, "w1")
    scale = conv(y, "pool", (5, 7), (0, 0))            # (1, C, 1, 1)
    table = b.const("t", rng.integers(0, 256, (256, 256)), precision=9)
    b.output(conv(b.op("lut", table, y, scale, low=[0, 0]), "w2"))
    program = b.build()
    feeds = extreme_feeds(program, 5)
    model = same_as_reference(program, feeds, vm.cpu())
    held = fused_values(model, feeds)
    shape = (1, 5, 7, c) if c > 8 else (1, c, 5, 7)
    assert ("lut", shape, np.uint8) in held, held
    same_as_reference(program, feeds)


@pytest.mark.parametrize("c", [6, 12])
def test_bytes_between_lowered_convolutions_through_any_numpy_step(heads_only, matmul_from_9,
                                                                   c):
    """A feature-pyramid merge (the PP-OCR detector's neck): a max pool, nearest upsampling, a
    two-input lut adding the lateral map, a global sum pool, none of them elementwise, between
    lowered convolutions. Every tensor they touch whose range fits a byte is held in bytes
    (in NCHW), so the lut gathers bytes and the second convolution reads one byte per value;
    the bytes are the reference's."""
    rng = np.random.default_rng(c)
    b = Builder("neck")
    x = b.input("x", (1, 4, 8, 8), 8)

    def conv(v, name, cin):
        w = b.const(name, rng.integers(-127, 128, (c, cin, 3, 3)), precision=8)
        z = b.op("qconv2d", v, w, channels=c, kernel_size=(3, 3), padding=(1, 1),
                 use_bias=False, zero_point=0 if v == x else 3)
        return b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, c).tolist(),
                    shift=[31] * c, axis=1, qmin=0, qmax=255, zero_point=90, rounding="fp32")
    lateral = conv(x, "w1", 4)
    coarse = b.op("upsampling", b.op("max_pool2d", lateral, pool_size=(2, 2), strides=(2, 2)),
                  scale=2)
    table = b.const("add", rng.integers(0, 256, (256, 256)), precision=9)
    merged = b.op("lut", table, lateral, coarse, low=[0, 0])
    pooled = b.op("sum_pool2d", merged, pool_size=(8, 8), zero_point=90)
    b.output(b.op("requantize", pooled, multiplier=[1 << 23], shift=[30], qmin=0, qmax=255))
    b.output(conv(merged, "w2", c))
    program = b.build()
    for seed in (1, 2):
        feeds = extreme_feeds(program, seed)
        model = same_as_reference(program, feeds, vm.cpu())
    held = fused_values(model, feeds)
    for op, shape in (("max_pool2d", (1, c, 4, 4)), ("upsampling", (1, c, 8, 8)),
                      ("lut", (1, c, 8, 8))):
        assert (op, shape, np.uint8) in held, (op, held)
    same_as_reference(program, feeds)


BYTE_CHAIN = ("max_pool2d", "upsampling", "lut", "concatenate", "strided_slice")


@SETTINGS
@given(signed=st.booleans(), chain=st.lists(st.sampled_from(BYTE_CHAIN), min_size=1,
                                            max_size=3), seed=st.integers(0, 1 << 16))
def test_random_byte_chains_between_lowered_convolutions(heads_only, signed, chain, seed):
    """A random chain of the numpy ops a byte-held tensor may pass through (BYTE_SAFE), on
    uint8 or int8 ranges, between two lowered convolutions, with a sum pool reading the
    chain's end too: the bytes are the reference's, and the chain's values are held in the
    byte type of their range."""
    rng = np.random.default_rng(seed)
    b = Builder("chain")
    x = b.input("x", (1, 3, 6, 6), 8)
    lo, hi = (-128, 127) if signed else (0, 255)
    w1 = b.const("w1", rng.integers(-127, 128, (4, 3, 3, 3)), precision=8)
    z = b.op("qconv2d", x, w1, channels=4, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    v = b.op("requantize", z, multiplier=rng.integers(1 << 22, 1 << 24, 4).tolist(),
             shift=[29] * 4, axis=1, qmin=lo, qmax=hi, rounding="fp32")
    c, side = 4, 6
    for k, op in enumerate(chain):
        if op == "max_pool2d":
            v = b.op(op, v, pool_size=(2, 2), padding=(1, 1))
            side += 1
        elif op == "upsampling" and side <= 8:
            v, side = b.op(op, v, scale=2), side * 2
        elif op == "lut":
            table = b.const(f"t{k}", rng.integers(lo, hi + 1, 256), precision=9)
            v = b.op(op, table, v, low=[lo])
        elif op == "concatenate":
            v, c = b.op(op, v, v, axis=1), c * 2
        elif op == "strided_slice" and c > 1:
            v, c = b.op(op, v, begin=[0, 1, 0, 0], end=[1, c, side, side],
                        stride=[1, 1, 1, 1]), c - 1
    w2 = b.const("w2", rng.integers(-127, 128, (5, c, 3, 3)), precision=8)
    b.output(b.op("qconv2d", v, w2, channels=5, kernel_size=(3, 3), padding=(1, 1),
                  use_bias=False, zero_point=int(rng.integers(lo, hi + 1))))
    b.output(b.op("sum_pool2d", v, pool_size=(side, side), zero_point=3))
    program = b.build()
    feeds = extreme_feeds(program, seed)
    model = same_as_reference(program, feeds, vm.cpu())
    byte = np.int8 if signed else np.uint8
    held = fused_values(model, feeds)
    assert all(dtype == byte for op, shape, dtype in held if op in BYTE_CHAIN), held


# ---------------------------------------------------------------------------------------------
# Real models, thread counts
# ---------------------------------------------------------------------------------------------

def test_shipped_digits_model_on_every_backend():
    from detvm.common import DEMO_DIR
    data = dict(np.load(DEMO_DIR / "digits_inputs.npz"))
    want = dict(np.load(DEMO_DIR / "digits_expected.npz"))["logits"]
    for ctx in (vm.cpu(), ORT, vm.cpu(backend="numpy")):
        model = vm.load(DEMO_DIR / "digits.dvm", ctx)
        assert model.run({"image": data["image"]})["logits"].tobytes() == want.tobytes()
    assert lowered(vm.load(DEMO_DIR / "digits.dvm", ORT)) == len(model.program.code)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_reduced_resnet18_equals_the_reference_on_any_thread_count(threads, auto_lowers):
    pytest.importorskip("threadpoolctl")
    from bench.resnet18 import build_resnet18
    program = build_resnet18(2, size=32, classes=10, width=4)
    for ctx in (ORT, vm.cpu()):
        model = same_as_reference(program, extreme_feeds(program, 3), ctx, threads)
        assert lowered(model) > 0


def test_auto_lowers_grouped_convolutions_of_any_size_and_small_requantizes(auto_lowers):
    """A depthwise convolution far below ``min_macs`` is lowered (numpy's grouped kernel is
    slow at any size); its requantize only up to ``small_requantize`` elements (onnxruntime's
    table lookups cost more per element than numpy's)."""
    for h, requantized in ((8, True), (40, False)):
        program = conv_program(1, 4, h, h, 4, (3, 3), (1, 1), (1, 1), (1, 1), "bytes", "fp32",
                               groups=4)
        code = program.code
        assert plan._macs(program, code[1]) < plan.AUTO.min_macs
        model = same_as_reference(program, extreme_feeds(program, 0), vm.cpu())
        ops_ = [code[k].op for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)
                for k in s.covers]
        assert "qconv2d" in ops_ and ("requantize" in ops_[1:]) == requantized, ops_


@pytest.mark.parametrize("multiplier, shift, lowered", [(1 << 23, 29, True), (1 << 19, 31, False)])
def test_auto_lowers_a_requantize_of_a_small_table(auto_lowers, multiplier, shift, lowered):
    """A requantize beyond ``small_requantize`` elements (within ``small``) is lowered when its
    table has at most ``small_table`` bytes (a scale of 1/64: ~16 K entries), not when it
    would be larger (1/4096: ~1 M entries)."""
    rng = np.random.default_rng(0)
    b = Builder("rq")
    x = b.input("x", (1, 4, 40, 40), 8)
    w = b.const("w", rng.integers(-127, 128, (4, 4, 3, 3)), precision=8)
    z = b.op("qconv2d", x, w, channels=4, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    b.output(b.op("requantize", z, multiplier=[multiplier], shift=[shift], qmin=0, qmax=255,
                  rounding="fp32"))
    program = b.build()
    assert plan.AUTO.small_requantize < program.tensors[-1].size <= plan.AUTO.small
    model = same_as_reference(program, extreme_feeds(program, 0), vm.cpu())
    ops_ = [program.code[k].op for s in model.plan.fast
            if isinstance(s.kernel, plan.RegionKernel) for k in s.covers]
    assert ("requantize" in ops_) == lowered, ops_


@pytest.mark.parametrize("side, lowered", [(80, False), (16, True)])
def test_auto_leaves_a_large_lut_alone_in_numpy(auto_lowers, side, lowered):
    """A lut whose session would hold luts only is lowered up to ``small`` elements, not
    beyond (numpy's lookup is cheaper than a session of lookups and its copies); a
    convolution elsewhere in the program is lowered either way."""
    rng = np.random.default_rng(side)
    b = Builder("lone")
    x = b.input("x", (1, 16, side, side), 8)
    table = b.const("t", rng.integers(-127, 128, 256), precision=8)
    w = b.const("w", rng.integers(-127, 128, (16, 16, 3, 3)), precision=8)
    z = b.op("qconv2d", b.input("c", (1, 16, 8, 8), 8), w, channels=16, kernel_size=(3, 3),
             padding=(1, 1), use_bias=False)       # small: the reference computes it quickly
    n = b.op("negative", x)                         # numpy steps between the sessions
    y = b.op("lut", table, x, low=[-128])
    b.output(z, n, b.op("negative", y), b.op("lut", table, y, low=[-128]))
    program = b.build()
    model = same_as_reference(program, extreme_feeds(program, 0), vm.cpu())
    ops_ = [program.code[k].op for s in model.plan.fast
            if isinstance(s.kernel, plan.RegionKernel) for k in s.covers]
    assert "qconv2d" in ops_ and ("lut" in ops_) == lowered, ops_


def test_a_whole_program_of_small_ops_is_one_session_up_to_its_limit(auto_lowers):
    """``auto`` runs a chain of small ops as one session up to ``whole_max`` instructions,
    and a longer one in numpy (it costs more to lower than it saves); ``onnxruntime``
    lowers every instruction, in sessions of at most REGION_MAX."""
    def chain(n):
        b = Builder("chain")
        v = b.input("x", (4,), 8)
        for _ in range(n):
            v = b.op("relu", v)
        b.output(v)
        return b.build()
    feeds = {"x": np.array([1, -2, 3, -4])}
    limit = plan.AUTO.whole_max
    assert lowered(vm.load(chain(limit))) == limit
    longer = vm.load(chain(limit + 1))
    assert longer.plan.fast is None or lowered(longer) == 0
    model = same_as_reference(chain(2 * plan.REGION_MAX + 1), feeds)
    regions = [s for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)]
    assert [len(s.covers) for s in regions] == [plan.REGION_MAX, plan.REGION_MAX, 1]


def two_outputs_program():
    """A convolution, its requantized bytes and their max: two outputs from one session."""
    b = Builder("two")
    x = b.input("x", (1, 3, 6, 6), 8)
    w = b.const("w", np.random.default_rng(3).integers(-127, 128, (4, 3, 3, 3)), precision=8)
    y = b.op("qconv2d", x, w, channels=4, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    q = b.op("requantize", y, multiplier=[11], shift=[12], zero_point=0, zero_point_in=0,
             qmin=-128, qmax=127, rounding="half_even", axis=1)
    b.output(y)
    b.output(b.op("relu", q))
    return b.build()


def test_a_model_that_is_one_session_runs_it_without_the_loop():
    """A plan of one session reading the inputs and writing the outputs calls it directly
    (``Plan.single``): the loop's bytes, dtypes and shapes; fresh arrays each run, shared with
    nothing; ``out=`` and traced runs still take the loop."""
    program = two_outputs_program()
    x = np.random.default_rng(4).integers(-128, 128, (1, 3, 6, 6)).astype(np.int8)
    model = same_as_reference(program, {"x": x})
    assert model.plan.single is not None and len(model.plan.fast) == 1
    first = model.run({"x": x})
    looped = dict(zip(first, model.plan.run({model.plan.input_ids[0]: x},
                                            fused=True)))
    for k, v in first.items():
        assert v.tobytes() == looped[k].tobytes() and v.dtype == looped[k].dtype
        assert v.flags.writeable and not np.shares_memory(v, x)
    a, b = first.values()
    assert not np.shares_memory(a, b)
    want = {k: v.copy() for k, v in first.items()}
    for v in first.values():
        v[...] = 7
    again = model.run({"x": x})
    assert all(again[k].tobytes() == want[k].tobytes() for k in want)
    out = {k: np.empty_like(v) for k, v in want.items()}
    assert all(model.run({"x": x}, out=out)[k] is out[k] for k in out)
    assert all(out[k].tobytes() == want[k].tobytes() for k in want)
    assert model.trace({"x": x}).results.keys() == want.keys()


def test_a_plan_of_numpy_steps_or_several_sessions_has_no_shortcut():
    program = two_outputs_program()
    assert vm.load(program, vm.cpu(backend="numpy")).plan.single is None
    assert vm.load(program, vm.reference()).plan.single is None
    passthrough = Builder("pass")
    x = passthrough.input("x", (4,), 8)
    passthrough.output(x)
    passthrough.output(passthrough.op("relu", x))
    assert vm.load(passthrough.build(), ORT).plan.single is None      # an input is an output


def test_the_direct_run_takes_what_the_checked_run_takes_with_the_same_bytes():
    """``Model.run``'s shortcut for a one-session model (vm/model.py ``_direct_run``): exact
    storage dtype and shape, values tested for bytes first (the guarded session's choice) or
    against the precision; anything else goes through the full check: the same bytes for
    every accepted input, the same errors for the rest."""
    b = Builder("wide")
    x = b.input("x", (1, 3, 8, 8), 9)
    w = b.const("w", np.random.default_rng(0).integers(-127, 128, (4, 3, 3, 3)), precision=8)
    b.output(b.op("qconv2d", x, w, channels=4, kernel_size=(3, 3), padding=(1, 1),
                  use_bias=False))
    program = b.build()
    model = vm.load(program, ORT)
    assert model._direct is not None and model.plan.single_bytes == (0,)
    reference = vm.load(program, vm.reference())
    rng = np.random.default_rng(5)
    dtype = model.inputs[0].dtype
    feeds = [rng.integers(0, 256, (1, 3, 8, 8)), rng.integers(-255, 256, (1, 3, 8, 8)),
             np.full((1, 3, 8, 8), 255), np.full((1, 3, 8, 8), -255)]
    for values in feeds:
        (want,) = reference.run({"x": values}).values()
        for given in (values.astype(dtype), values.astype(np.int64), values.tolist(),
                      values.astype(dtype).astype(dtype.newbyteorder(">")),
                      np.asfortranarray(values.astype(dtype))):
            (got,) = model.run({"x": given}).values()
            assert got.tobytes() == want.tobytes() and got.dtype == want.dtype
    bad = [({"x": np.full((1, 3, 8, 8), 256, dtype)}, "outside precision 9"),
           ({"x": np.zeros((1, 3, 8, 9), dtype)}, "shape"),
           ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "not an integer type"),
           ({"x": np.zeros((1, 3, 8, 8), dtype), "z": 1}, "unknown input"),
           ({}, "missing input")]
    for inputs, message in bad:
        with pytest.raises(vm.TrapError, match=message):
            model.run(inputs)
    model.close()
    with pytest.raises(vm.TrapError, match="closed"):
        model.run({"x": np.zeros((1, 3, 8, 8), dtype)})


@pytest.mark.parametrize("raised, error", [(RuntimeError("boom"), vm.InternalError),
                                           (MemoryError(), vm.EnvironmentFault)])
def test_a_session_failing_in_the_shortcut_names_the_instruction(raised, error):
    model = vm.load(two_outputs_program(), ORT)
    (step,) = model.plan.fast

    def fail(*args):
        raise raised
    step.kernel._run = fail
    x = np.zeros((1, 3, 6, 6), np.int8)
    with pytest.raises(error, match="qconv2d"):
        model.run({"x": x})


# ---------------------------------------------------------------------------------------------
# What a load makes stays within the model's own size
# ---------------------------------------------------------------------------------------------

def test_a_shared_weight_is_lowered_only_within_the_weight_budget():
    """A session holds its own copy of each weight its nodes read: the weights of lowered
    GEMMs add up to the program's constant bytes at most, so a weight shared by many
    instructions is lowered once and the rest run on numpy (100 denses sharing 1 MiB took
    +233 MB of RSS to load on auto before); the bytes are the reference's."""
    rng = np.random.default_rng(0)
    b = Builder("shared")
    x = b.input("x", (4, 256), 8)
    w = b.const("w", rng.integers(-127, 128, (256, 256)).astype(np.int8), 8)
    for _ in range(6):
        y = b.op("dense", x, w, units=256, use_bias=False)
        x = b.op("requantize", y, multiplier=[1], shift=[10], qmin=-127, qmax=127,
                 rounding="half_even")
    b.output(x)
    program = b.build()
    feeds = {"x": rng.integers(-127, 128, (4, 256))}
    for ctx in (ORT, vm.cpu()):
        model = same_as_reference(program, feeds, ctx)
        gemms = [k for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)
                 for k in s.covers if program.code[k].op == "dense"]
        assert len(gemms) == 1, model.backend


def test_tables_made_at_load_stay_within_the_table_budget():
    """Each requantize of a wide input below would lower to a 2^20-entry table: a plan makes
    tables of at most TABLE_BUDGET bytes beyond the program's constants, the rest take the
    table-free form (500 of them, a 104 KB model, took 1 GB and 2.2 s to load on auto
    before); the bytes stay the reference's."""
    b = Builder("tables")
    x = b.input("x", (4,), 24)
    b.output(*[b.op("requantize", x, multiplier=[1], shift=[12], zero_point=k, qmin=-128,
                    qmax=127, rounding="fp32") for k in range(12)])
    program = b.build()
    feeds = {"x": np.array([-(1 << 23) + 1, -5000, 77777, (1 << 23) - 1])}
    model = same_as_reference(program, feeds)
    tables = sum(a.nbytes for s in model.plan.fast if isinstance(s.kernel, plan.RegionKernel)
                 for arrays in s.kernel.constants for a in arrays.values())
    assert requant.TABLE_BUDGET < 12 << 20          # the twelve tables would not fit
    assert requant.TABLE_BUDGET // 2 < tables <= requant.TABLE_BUDGET
    assert lowered(model) == len(program.code)      # past the budget: rounding in int64


@SETTINGS
@given(st.sampled_from([1, 3, 12]), st.sampled_from(["fp32", "half_even", "half_up"]),
       st.sampled_from([(0, 255), (-128, 127), (-7, 7)]), st.integers(0, 2 ** 32 - 1))
def test_requantize_window_is_the_brute_force_one(channels, rounding, q, seed):
    """requant.window (a binary search per channel: on the scalar rule for few channels, on
    the kernel for many) against every input of a small range."""
    rng = np.random.default_rng(seed)
    a = ops.get("requantize").check_attrs(dict(
        multiplier=[int(m) for m in rng.integers(1, 1 << 24, channels)],
        shift=[int(s) for s in rng.integers(14, 30, channels)], rounding=rounding,
        zero_point_in=int(rng.integers(-50, 50)), zero_point=int(rng.integers(-9, 9)),
        qmin=q[0], qmax=q[1], axis=0))
    lo, hi = -int(rng.integers(0, 1000)), int(rng.integers(0, 1000))
    values = np.arange(lo, hi + 1, dtype=np.int64)
    firsts, lasts = [], []
    for m, s in zip(a["multiplier"], a["shift"]):
        y = np.array([requantize_value(int(v), m, s, a) for v in values])
        first = values[y == a["qmin"]].max() if y[0] == a["qmin"] else lo
        top = (y == a["qmax"]) & (values >= first)
        firsts.append(first)
        lasts.append(values[top].min() if y[-1] == a["qmax"] else hi)
    assert requant.window(a, lo, hi) == (min(firsts), max(lasts))
