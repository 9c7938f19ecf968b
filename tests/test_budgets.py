"""Resource budgets as contracts (docs/format.md, Budgets): memory asserted here with
tracemalloc (numpy reports its buffers to it), complexity by deterministic proxies; the time
budgets are checked by bench/budgets.py (benchmarks never live in timed tests)."""
from __future__ import annotations

import gc
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from vm.errors import InvalidError
from vm.program import Instr, Program, Tensor
from tests.cases import values_for

MiB = 1 << 20
NUMPY = vm.cpu(backend="numpy")
REJECTION_MEMORY = 64 * MiB
"""What a rejection may allocate beyond the input's own bytes (docs/format.md)."""
CONSTANT_WORK = 1000
"""Executed lines of a load refused before its entries are read (the counts claimed in those
tests are 2^16 to 2^32: reading them would take that many lines at least)."""
SAME_WORK = 100
"""Executed lines by which two loads count as the same work (a branch or a cache may differ;
the loops these tests guard against ran once per element: millions of lines)."""


def traced_peak(fn) -> tuple[BaseException | None, int]:
    """(the exception ``fn()`` raised or None, peak bytes it allocated meanwhile)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    error = None
    try:
        fn()
    except Exception as e:     # noqa: BLE001 - the caller checks the class
        error = e
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return error, peak


def steps(fn) -> int:
    """How many Python lines ``fn()`` executes (a deterministic proxy of its running time:
    numpy's C loops count as one; the exception it raises, if any, is swallowed). The garbage
    collector is paused: a collection would run other code's gc callbacks (hypothesis installs
    one) and finalizers inside the count."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += event == "line"
        return trace
    gc.collect()
    gc.disable()
    sys.settrace(trace)
    try:
        fn()
    except Exception:          # noqa: BLE001
        pass
    finally:
        sys.settrace(None)
        gc.enable()
    return count


def relu_with_const(const: np.ndarray, precision: int = 8) -> Program:
    tensors = [Tensor("x", (1,), 8, "input"), Tensor("c", const.shape, precision, "const"),
               Tensor("y", (1,), 8, "value")]
    return Program("c", tensors, {1: const}, [Instr("relu", (0,), (2,), {})], [2])


@pytest.mark.parametrize("dtype,precision,bad", [(np.int8, 8, -128), (np.int32, 20, 1 << 19),
                                                 (np.int32, 32, -(1 << 31))])
def test_a_bad_constant_value_is_found_without_a_widened_copy(dtype, precision, bad):
    """F6: the range check compares in the storage dtype, chunk by chunk."""
    data = np.zeros((4, 1 << 22) if dtype == np.int8 else (4, 1 << 20), dtype)
    data[3, -5] = bad
    blob = vm.encode(relu_with_const(data, precision))
    error, peak = traced_peak(lambda: vm.load(blob))
    assert isinstance(error, InvalidError) and f"value {bad} at flat index" in str(error)
    assert peak < 2 * MiB


def test_a_good_constant_loads_without_a_widened_copy():
    data = np.full((4, 1 << 22), -127, np.int8)
    blob = vm.encode(relu_with_const(data))
    vm.load(vm.encode(relu_with_const(data[:, :4])))   # the modules a load imports, once
    error, peak = traced_peak(lambda: vm.load(blob))
    assert error is None and peak < 2 * MiB


def conv_with_weight(k: int) -> bytes:
    """conv2d of a (1, 1, k, k) p4 input with a constant (1, 1, k, k) weight of +-7: for
    k >= 600 its GEMM licence needs the per-channel window sums (the bound is above 2^24)."""
    from compiler import Builder
    b = Builder("wide-kernel")
    x = b.input("x", (1, 1, k, k), 4)
    w = b.const("w", 7 - 14 * np.random.default_rng(0).integers(0, 2, (1, 1, k, k)), 4)
    b.output(b.op("conv2d", x, w, channels=1, kernel_size=(k, k), use_bias=False))
    return vm.encode(b.build())


def test_load_work_does_not_grow_with_a_kernel_window():
    """F4: the licence's window sums are one numpy reduction, not a Python loop per element:
    loading a 7x larger kernel executes as many Python lines, in memory linear in its bytes
    (the CPU plan keeps the weight prepared as float64 here: 8 bytes per int8 weight)."""
    small, large = conv_with_weight(768), conv_with_weight(2048)
    for blob in (small, large):
        assert vm.load(blob).analysis.licences[0].whole >= 1 << 24
    load = lambda blob: vm.load(blob, NUMPY)         # the numpy plan, which uses the licence
    assert abs(steps(lambda: load(large)) - steps(lambda: load(small))) < SAME_WORK
    error, peak = traced_peak(lambda: load(large))
    assert error is None and peak < 9 * len(large)


def sum_pool(side: int) -> bytes:
    """The 339-byte sum_pool2d of a (1, 1, side, side) input (1x1 windows)."""
    a = dict(pool_size=(1, 1), strides=(1, 1), padding=(0, 0), zero_point=0,
             count_include_pad=False)
    return vm.encode(Program("sp", [Tensor("x", (1, 1, side, side), 8, "input"),
                                    Tensor("y", (1, 1, side, side), 32, "value")],
                             {}, [Instr("sum_pool2d", (0,), (1,), a)], [1]))


def test_precision_rules_do_not_enumerate_the_output():
    """F1: sum_pool2d's precision rule costs O(attributes): validating a 2^24-pixel output
    executes as many lines as a 2^8-pixel one, in kilobytes; 2^28 and 2^30 pixels exceed the
    memory ceiling (the kernel's int64 scratch, F2) and are refused as cheaply."""
    small, large, huge = sum_pool(1 << 4), sum_pool(1 << 12), sum_pool(1 << 15)
    vm.load(small)                                  # caches warm
    assert abs(steps(lambda: vm.load(large)) - steps(lambda: vm.load(small))) < SAME_WORK
    error, peak = traced_peak(lambda: vm.load(large))
    assert error is None and peak < MiB
    error, peak = traced_peak(lambda: vm.load(huge))
    assert isinstance(error, InvalidError) and "peak memory" in str(error) and peak < MiB


def with_count(blob: bytes, tag: bytes, count: int) -> bytes:
    """``blob`` with the entry count of section ``tag`` replaced (hash fixed up)."""
    import hashlib
    from vm.encoding import HASH_BYTES
    body = bytearray(blob[:-HASH_BYTES])
    at = body.index(tag) + 12                       # tag, u64 length, then the u32 count
    body[at:at + 4] = count.to_bytes(4, "little")
    return bytes(body) + hashlib.sha256(body).digest()


@pytest.mark.parametrize("tag,count,error,words", [
    (b"CODE", (1 << 20) + 1, InvalidError, "instructions exceed the ceiling"),
    (b"CODE", 1 << 20, vm.MalformedError, "instruction entries claimed"),
    (b"TENS", (1 << 21) + 1, InvalidError, "tensors exceed the ceiling"),
    (b"TENS", 1 << 21, vm.MalformedError, "tensor entries claimed"),
    (b"CONS", (1 << 32) - 1, vm.MalformedError, "constant entries claimed"),
    (b"OUTS", (1 << 32) - 1, vm.MalformedError, "output entries claimed"),
    (b"META", (1 << 32) - 1, vm.MalformedError, "truncated model name"),
])
def test_counts_are_checked_before_their_entries(tag, count, error, words):
    """F5: a count above a ceiling, or more entries than the bytes left can hold, is refused
    before any entry is read: O(1) lines, no allocation."""
    blob = with_count(vm.encode(relu_with_const(np.zeros((4,), np.int8))), tag, count)
    failure, peak = traced_peak(lambda: vm.load(blob))
    assert isinstance(failure, error) and words in str(failure) and peak < 64 * 1024
    assert steps(lambda: vm.load(blob)) < CONSTANT_WORK


def relu_chain(n: int) -> bytes:
    """A chain of ``n`` relus on (4,) p8 values."""
    tensors = [Tensor("x", (4,), 8, "input")] + [Tensor(f"t{k}", (4,), 8, "value")
                                                 for k in range(n)]
    code = [Instr("relu", (k,), (k + 1,), {}) for k in range(n)]
    return vm.encode(Program("chain", tensors, {}, code, [n]))


def test_instruction_ceiling_is_checked_before_decoding():
    """F5: 2^16 + 1 instructions under a ceiling of 2^16 are refused in O(1) lines (the issue's
    case: 2^20 + 1 under the default ceiling took 19-31 s and ~1 GB)."""
    blob, limits = relu_chain((1 << 16) + 1), vm.Limits(max_instructions=1 << 16)
    failure, peak = traced_peak(lambda: vm.load(blob, limits=limits))
    assert isinstance(failure, InvalidError) and "exceed the ceiling" in str(failure)
    assert peak < 64 * 1024 and steps(lambda: vm.load(blob, limits=limits)) < CONSTANT_WORK


# -- every hostile rejection: bounded memory (bench/budgets.py checks its < 50 ms) -------------

HOSTILE = None


def hostile_cases():
    global HOSTILE
    if HOSTILE is None:
        from tests.hostile import corpus
        HOSTILE = corpus()
    return HOSTILE


def test_every_hostile_rejection_is_cheap():
    """Every case of the hostile corpus (tests/hostile.py: the campaign's claims, bombs and
    foreign exceptions) fails with its detvm error in < 64 MB beyond its input's bytes, and
    (a hang guard, 40x the 50 ms budget that bench/budgets.py checks) within 2 s."""
    import time
    for case in hostile_cases():
        start = time.process_time()
        error, peak = traced_peak(case.run)
        seconds = time.process_time() - start
        assert isinstance(error, case.error), (case.name, error)
        assert peak < REJECTION_MEMORY, (case.name, peak)
        assert seconds < 2, (case.name, seconds)


def mixed_chain(n: int, width: int = 16) -> bytes:
    """About ``n`` instructions of a quantized block on (1, ``width``) p8 values, repeated: a
    dense (one constant weight for all), its shift and clips, a residual addition, a
    requantize and reshapes / a transpose between them."""
    from compiler import Builder
    side = int(width ** 0.5)
    b = Builder(f"mixed{n}")
    x = b.input("x", (1, width), 8)
    w = b.const("w", np.random.default_rng(0).integers(-127, 128, (width, width)), 8)
    for _ in range(-(-n // 10)):
        h = b.op("dense", x, w, units=width, use_bias=False)
        h = b.op("relu", b.op("cvm_right_shift", h, shift_bit=8, precision=8))
        a = b.op("cvm_clip", b.op("elemwise_add", h, x), precision=8)
        a = b.op("requantize", a, multiplier=(3 << 20,), shift=(22,), qmin=-127, qmax=127)
        r = b.op("transpose", b.op("reshape", a, shape=(side, side)), axes=(1, 0))
        x = b.op("reshape", b.op("flatten", r), shape=(1, width))
    return vm.encode(b.output(x).build())


def wide_chain(n: int) -> bytes:
    """A requantize to p16, then ``n`` - 1 relus of p16 values: every relu may end a table
    island (vm/islands.py) whose search walks back through the wide values before it."""
    from compiler import Builder
    b = Builder(f"wide{n}")
    x = b.op("requantize", b.input("x", (4,), 16), multiplier=(1 << 20,), shift=(20,),
             qmin=-32767, qmax=32767)
    for _ in range(n - 1):
        x = b.op("relu", x)
    return vm.encode(b.output(x).build())


@pytest.mark.parametrize("chain,ctx", [(relu_chain, None), (mixed_chain, NUMPY),
                                       (wide_chain, NUMPY)])
def test_load_work_is_linear_in_the_instructions(chain, ctx):
    """Load executes the same Python lines per instruction at 200 and 2000 instructions (a
    quadratic pass would show as a 10x larger count per instruction; the wide chain's island
    search took 25x as many at 2000)."""
    small, large = chain(200), chain(2000)
    vm.load(small, ctx)
    per_small = steps(lambda: vm.load(small, ctx)) / 200
    per_large = steps(lambda: vm.load(large, ctx)) / 2000
    assert per_large < 1.2 * per_small


def shared_weight(uses: int) -> bytes:
    """``uses`` dense layers of (1, 256) p8 values, all with one constant (256, 256) weight."""
    from compiler import Builder
    b = Builder(f"shared{uses}")
    x = b.input("x", (1, 256), 8)
    w = b.const("w", np.random.default_rng(1).integers(-127, 128, (256, 256)), 8)
    for _ in range(uses):
        h = b.op("dense", x, w, units=256, use_bias=False)
        x = b.op("cvm_clip", b.op("cvm_right_shift", h, shift_bit=10, precision=8), precision=8)
    return vm.encode(b.output(x).build())


def test_a_shared_weight_is_prepared_once():
    """A weight read by many instructions is licensed and prepared (its float copy) once: load
    memory does not grow with the uses (it grew by a prepared copy per use: 100 uses of a
    1 MiB weight took 389 MB)."""
    few, many = shared_weight(4), shared_weight(64)
    _, peak_few = traced_peak(lambda: vm.load(few, NUMPY))
    error, peak_many = traced_peak(lambda: vm.load(many, NUMPY))
    assert error is None and peak_many < peak_few + 64 * len(many)
    model = vm.load(many, NUMPY)
    kernels = {id(s.kernel) for s in model.plan.fast}
    assert len(kernels) == 1 and len(model.plan.fast) == 64


def test_a_repeated_island_is_tabulated_once():
    """The mixed chain repeats one quantized block: its table islands (vm/islands.py) share
    one table, computed once."""
    from vm.islands import TableKernel
    model = vm.load(mixed_chain(200), NUMPY)
    tables = [s.kernel for s in model.plan.fast if isinstance(s.kernel, TableKernel)]
    assert len(tables) == 20 and len({id(k) for k in tables}) == 1


@pytest.mark.parametrize("ctx", [None, NUMPY, vm.reference()])
def test_a_dropped_model_is_freed_at_once(ctx):
    """A model holds no reference cycle: dropping it frees its millions of objects at once,
    not at the cyclic collector's next full pass (a plan's lazily bound steps held their plan:
    10^5 instructions waited for a 0.3 s collection)."""
    import weakref
    blob = mixed_chain(100)
    gc.collect()
    gc.disable()
    try:
        model = vm.load(blob, ctx)
        model.trace({"x": np.zeros((1, 16), np.int8)})     # every step bound
        plan = weakref.ref(model.plan)
        del model
        assert plan() is None
    finally:
        gc.enable()


def test_a_long_program_of_small_ops_runs_on_numpy():
    """``auto`` lowers small ops to onnxruntime only in programs of at most
    Policy.small_max instructions (each costs about 70 us of load there, more in short
    regions); the result is the same bytes either way."""
    from vm.ort.plan import AUTO
    blob = mixed_chain(AUTO.small_max + 10)
    model = vm.load(blob)
    assert model.backend == "numpy" or model.backend.startswith("numpy (")
    x = np.random.default_rng(2).integers(-127, 128, (1, 16)).astype(np.int8)
    (got,), (want,) = model.run({"x": x}).values(), vm.load(blob, NUMPY).run({"x": x}).values()
    assert np.array_equal(got, want)


# -- run time within the gas (docs/format.md, Budgets) ------------------------------------------

GAS_RATE = 10 ** 7
"""Gas per second every op sustains at its worst case per gas unit (numpy executor)."""
RUN_FIXED = 2e-3
"""Seconds of a run beyond its instructions (checks, copies)."""
RUN_PER_INSTRUCTION = 5e-4
"""Seconds of an instruction beyond its gas (dispatch, small temporaries)."""
GENEROUS = 20
"""The tests' margin over the budget (a loaded CI machine); bench/budgets.py checks it
exactly."""


def run_budget(gas: int, instructions: int) -> float:
    return RUN_FIXED + RUN_PER_INSTRUCTION * instructions + gas / GAS_RATE


def _one_op(name: str, inputs: list, **attrs):
    """(program, feeds): ``name`` on inputs (array, precision)."""
    from compiler import Builder
    b, feeds, args = Builder(f"worst-{name}"), {}, []
    for k, (a, p) in enumerate(inputs):
        args.append(b.input(f"x{k}", a.shape, p))
        feeds[f"x{k}"] = a
    out = b.op(name, *args, **attrs)
    b.output(*(out if isinstance(out, tuple) else (out,)))
    return b.build(), feeds


def _nms_disjoint(n: int = 2048):
    k = np.arange(n)
    rows = np.stack([0 * k, n - k, 4 * k, 0 * k, 4 * k + 3, 0 * k + 3], 1)[None]
    return _one_op("non_max_suppression", [(rows.astype(np.int32), 16),
                                           (np.array([n], np.int32), 16)],
                   iou_threshold=100)


def _rng(*shape, p=8):
    r = (1 << (p - 1)) - 1
    return np.random.default_rng(0).integers(-r, r + 1, shape).astype(
        np.int8 if p <= 8 else np.int32)


WORST_CASES = {
    "non_max_suppression:2048 disjoint boxes (every pair tested)": _nms_disjoint,
    "conv2d:a 32x32 kernel given as an input": lambda: _one_op(
        "conv2d", [(_rng(1, 1, 160, 160), 8), (_rng(1, 1, 32, 32), 8)], channels=1,
        kernel_size=(32, 32), use_bias=False),
    "conv2d:dilated 3x3 with a large padding": lambda: _one_op(
        "conv2d", [(_rng(1, 8, 32, 32), 8), (_rng(8, 8, 3, 3), 8)], channels=8,
        kernel_size=(3, 3), padding=(64, 64), dilation=(60, 60), use_bias=False),
    "sum_pool2d:padding with a stride as large as the window": lambda: _one_op(
        "sum_pool2d", [(_rng(1, 1, 8, 8), 8)], pool_size=(512, 512), padding=(511, 511),
        strides=(512, 512)),
    "max_pool2d:padding with a stride as large as the window": lambda: _one_op(
        "max_pool2d", [(_rng(1, 1, 8, 8), 8)], pool_size=(512, 512), padding=(511, 511),
        strides=(512, 512)),
    "sum_pool2d:a stride larger than the window": lambda: _one_op(
        "sum_pool2d", [(_rng(1, 1, 2048, 2048), 8)], pool_size=(1, 1), strides=(2048, 2048)),
    "max_pool2d:a stride larger than the window": lambda: _one_op(
        "max_pool2d", [(_rng(1, 1, 2048, 2048), 8)], pool_size=(1, 1), strides=(2048, 2048)),
    "sum:one long reduction": lambda: _one_op("sum", [(_rng(1 << 20, p=8), 8)], axis=(0,)),
    "max:one long reduction": lambda: _one_op("max", [(_rng(1 << 20, p=8), 8)], axis=(0,)),
    "argmax:one long reduction": lambda: _one_op("argmax", [(_rng(1, 1 << 20, p=8), 8)],
                                                 axis=1),
    "topk:k of a long row": lambda: _one_op("topk", [(_rng(1, 1 << 16, p=8), 8)], k=1 << 15,
                                            axis=1),
    "strided_slice:a sparse slice of a large input": lambda: _one_op(
        "strided_slice", [(_rng(1 << 20, p=8), 8)], begin=(0,), end=(1 << 20,),
        stride=(1 << 19,)),
}


def assert_runs_within_budget(program, feeds) -> None:
    """The CPU time of a second run of ``program`` on the numpy executor is within GENEROUS x
    the run budget of its gas and instruction count."""
    import time
    model = vm.load(program, ctx=vm.Context("cpu", backend="numpy"))
    typed = {t.name: feeds[t.name].astype(t.dtype) for t in model.inputs}
    model.run(typed)
    start = time.process_time()
    model.run(typed)
    seconds = time.process_time() - start
    assert seconds <= GENEROUS * run_budget(model.gas, len(program.code)), (seconds, model.gas)


@pytest.mark.parametrize("case", sorted(WORST_CASES))
def test_worst_cases_run_within_their_gas(case):
    """Run time within the gas at hand-made worst cases per gas unit: CPU time of a run <=
    GENEROUS x (RUN_FIXED + RUN_PER_INSTRUCTION + gas / GAS_RATE); bench/budgets.py checks the
    budget itself, with every op's law cases scaled up as well."""
    assert_runs_within_budget(*WORST_CASES[case]())


def _law_ops() -> list[str]:
    from tests.cases import all_cases
    return sorted(all_cases())


@pytest.mark.parametrize("name", _law_ops())
@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_op_runs_within_its_gas(name, data):
    """Every op, at its law cases scaled up (tests/test_memory.py), within GENEROUS x the run
    budget; bench/budgets.py searches each op's worst case per gas unit and checks the budget
    itself."""
    from tests.test_memory import CASES, scaled_case
    built = scaled_case(name, data.draw(CASES[name]), data)
    if built is None:
        return
    program, feeds = built
    assert_runs_within_budget(program, feeds)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_sum_pool_prefix_sums_equal_the_reference(data):
    """sum_pool2d's prefix-sum path (windows of more than PREFIX_TAPS cells; here every
    window) gives the reference executor's bytes."""
    from unittest import mock
    from ops import pool
    from tests.cases import all_cases
    from tests.test_memory import _build
    case = data.draw(all_cases()["sum_pool2d"])
    values = [np.array(i.values if i.values is not None else
                       data.draw(values_for(i.shape, i.precision)), np.int64).reshape(i.shape)
              for i in case.inputs]
    built = _build("sum_pool2d", case, values, (), 1)
    if built is None:
        return
    program, feeds = built[:2]
    with mock.patch.object(pool, "PREFIX_TAPS", 0):
        got = vm.load(program, ctx=vm.Context("cpu", backend="numpy")).run(feeds)
    want = vm.load(program, vm.reference()).run(feeds)
    assert got["out" if "out" in got else next(iter(got))].tobytes() == \
        want["out" if "out" in want else next(iter(want))].tobytes()
