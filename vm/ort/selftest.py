"""The load-time self-test: are this machine's onnxruntime integer kernels exact?

MatMulInteger with uint8 x int8 operands is exact integer arithmetic where the CPU has
VNNI-style dot products; on plain AVX2 onnxruntime's kernel adds pairs of products in
saturating int16 (255 * 127 * 2 > 32767), which is wrong. So before any model runs there,
graphs built exactly as the backend builds them (vm/ort/graph.py: every input conversion,
padding, strides, dilation, transposes, the split of wide data) run on adversarial operands
(all 255 against +127 / -128 pairs, the extremes of each range) and random ones, and every
accumulator must equal the exact int64 result. The first form that passes is used: ``u8s8``,
else ``u8u8`` (weights + 128 as bytes with zero point 128: no saturating pair sum); when none
passes, or onnxruntime is missing, the numpy executor runs instead. ConvInteger (``direct``)
multiplies the weights + 128 by the data's bytes, or (``signed``) by the data as int8, which
takes onnxruntime's uint8 x int8 kernel (its weight bytes against the int8 im2col: the same
saturating pairs on plain AVX2): each is used only where its own cases are exact. The verdict
is computed once per process (:func:`verdict`): the cases of the first form and ConvInteger's
run in one session.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, replace

import numpy as np

from . import session as sessions
from .graph import Graph, LinearSpec

FORMS = ("u8s8", "u8u8")
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verdict:
    """What the self-test found: onnxruntime's ``version`` (None: not importable), the exact
    MatMulInteger ``form`` (None: none), whether ConvInteger (``direct``) is exact too, and
    on int8 data (``signed``), and ``reason`` in words."""

    version: str | None
    form: str | None
    reason: str
    direct: bool = False
    signed: bool = False

    def __str__(self) -> str:
        return self.reason


def verdict() -> Verdict:
    """The cached verdict of this process."""
    with _LOCK:
        return _cached()


def known() -> Verdict | None:
    """The verdict if this process has computed it, else None (computes nothing)."""
    with _LOCK:
        return _cached() if _cached.cache_info().currsize else None


def reset() -> None:
    """Forget the cached verdict (the next :func:`verdict` runs the self-test again)."""
    with _LOCK:
        _cached.cache_clear()


@functools.lru_cache(maxsize=1)
def _cached() -> Verdict:
    version = sessions.version()
    if version is None:
        return Verdict(None, None, "onnxruntime is not installed: the numpy executor runs")
    failures, direct, signed = [], None, False
    for form in FORMS:
        if direct is None:                  # the first form: ConvInteger's cases ride along
            problem, direct, signed = _with_direct(form)
        else:
            problem = _safely(lambda: first_difference(form))
        if problem is None:
            conv = " and ConvInteger (int8 data too)" if direct and signed else \
                " and ConvInteger" if direct else ""
            return Verdict(version, form, f"onnxruntime {version}: MatMulInteger "
                           f"{'uint8 x int8' if form == 'u8s8' else 'uint8 x uint8'}"
                           f"{conv} exact in the self-test", direct, direct and signed)
        failures.append(f"{form}: {problem}")
    return Verdict(version, None, f"onnxruntime {version} failed the self-test "
                   f"({'; '.join(failures)}): the numpy executor runs")


def _with_direct(form: str) -> tuple[str | None, bool, bool]:
    """(:func:`first_difference` of ``form``, whether every ConvInteger case on bytes is
    exact, whether every one on int8 data is), all from one session; where that session does
    not build or run, each from its own."""
    linear, direct, signed = cases(form), direct_cases(), direct_cases(signed=True)
    try:
        gots = accumulators(linear + direct + signed)
    except Exception:
        return (_safely(lambda: first_difference(form)),
                _safely(lambda: first_difference(form, direct=True)) is None,
                _safely(lambda: _first_difference(signed, accumulators(signed))) is None)
    ends = (len(linear), len(linear) + len(direct))
    return (_first_difference(linear, gots[:ends[0]]),
            _first_difference(direct, gots[ends[0]:ends[1]]) is None,
            _first_difference(signed, gots[ends[1]:]) is None)


def _safely(check):
    """check(), or the description of the exception a session that does not build or run
    raises."""
    try:
        return check()
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def first_difference(form: str, direct: bool = False) -> str | None:
    """Run every case in ``form`` (``direct``: the ConvInteger cases); None when all are
    exact, else the first difference."""
    todo = direct_cases() if direct else cases(form)
    return _first_difference(todo, accumulators(todo))


def _first_difference(todo, accumulated) -> str | None:
    """The first accumulator of ``accumulated`` (as :func:`accumulators` returns them for
    ``todo``) that differs from the exact one, in words; None when all are exact."""
    for (spec, xs), gots in zip(todo, accumulated, strict=True):
        for got, want in zip(gots, references(spec, xs), strict=True):
            if got.shape != want.shape or not np.array_equal(got, want):
                bad = np.flatnonzero(got != want)[0] if got.shape == want.shape else 0
                return (f"{'conv' if spec.conv else 'dense'} case {spec.x_shape}: "
                        f"accumulator {got.reshape(-1)[bad]} != exact {want.reshape(-1)[bad]}")
    return None


def suite_graph(specs) -> tuple[bytes, dict]:
    """One ModelProto holding every spec's graph side by side (input ``x{i}``, output i the
    int32 accumulator of spec i, nodes exactly as :meth:`LinearSpec.emit` builds them), and
    the arrays of its external initializers."""
    g = Graph()
    inputs, outputs = [], []
    for i, spec in enumerate(specs):
        inputs.append((f"x{i}", spec.x_dtype, spec.x_shape))
        outputs.append((spec.emit(g, f"x{i}"), np.int32, spec.out_shape))
    return g.model(inputs, outputs), g.externals


def accumulators(todo) -> list[list[np.ndarray]]:
    """What this machine's onnxruntime computes for each (spec, [data, ...]) of ``todo``
    (int64), as [[acc per data] per case]: all cases in one session (:func:`suite_graph`),
    run once per data set (every case has as many data)."""
    counts = {len(xs) for _, xs in todo}
    if len(counts) != 1:
        raise ValueError("every self-test case needs as many data arrays")
    model, externals = suite_graph([spec for spec, _ in todo])
    session = sessions.session(model, 1, externals)
    runs = [session.run(None, {f"x{i}": xs[j] for i, (_, xs) in enumerate(todo)})
            for j in range(counts.pop())]
    return [[run[i].astype(np.int64) for run in runs] for i in range(len(todo))]


def references(spec: LinearSpec, xs) -> list[np.ndarray]:
    """:func:`reference` of each of ``xs`` (same shapes), computed as one batch."""
    n = xs[0].shape[0]
    want = reference(spec, np.concatenate(xs))
    return [want[k * n:(k + 1) * n] for k in range(len(xs))]


def reference(spec: LinearSpec, x: np.ndarray) -> np.ndarray:
    """The exact accumulator sum_k W[oc, k] * u_k (u = x + offset, padded with the pad
    byte; ``direct``: u_k - pad), in the spec's output layout (int64): one int64 matmul of
    the weight and the im2col of u per group."""
    w = spec.weight.astype(np.int64)
    u = x.astype(np.int64) + spec.offset
    if not spec.conv:
        return exact_matmul(u, w.T)
    if spec.nhwc_in:
        u = u.transpose(0, 3, 1, 2)
    (kh, kw), (sh, sw) = spec.attrs["kernel_size"], spec.attrs["strides"]
    (ph, pw), (dh, dw) = spec.attrs["padding"], spec.attrs["dilation"]
    oh, ow = spec.out_hw
    pad = spec.zero_point + spec.offset
    padded = np.pad(u, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad)
    if spec.direct:
        padded = padded - pad
    taps = [padded[:, :, r * dh:r * dh + (oh - 1) * sh + 1:sh, s * dw:s * dw + (ow - 1) * sw + 1:sw]
            for r in range(kh) for s in range(kw)]
    n, (oc, per_in) = u.shape[0], w.shape[:2]
    cols = np.stack(taps, axis=2).reshape(n, spec.groups, per_in * kh * kw, oh * ow)
    acc = exact_matmul(w.reshape(spec.groups, oc // spec.groups, per_in * kh * kw), cols)
    acc = acc.reshape(n, oc, oh, ow)
    return acc if spec.nchw_out else acc.transpose(0, 2, 3, 1)


class Noise:
    """Deterministic pseudo-random integers (splitmix64 of a running counter): the cases'
    random operands, without numpy.random (whose import would cost a fresh process more
    than the rest of the self-test's data)."""

    def __init__(self, seed: int):
        self.next = np.uint64(seed)

    def integers(self, lo: int, hi: int, shape) -> np.ndarray:
        """int64 values in [lo, hi), ``shape``."""
        n = int(np.prod(shape))
        z = np.arange(n, dtype=np.uint64) + self.next
        self.next += np.uint64(n)
        z *= np.uint64(0x9E3779B97F4A7C15)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        return (z % np.uint64(hi - lo)).astype(np.int64).reshape(shape) + lo


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of int64 arrays, exactly (int64): through float64 BLAS where every partial sum is
    provably an integer below 2^53 (K * max|a| * max|b|), else in int64."""
    top = a.shape[-1] * int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0))
    if top >= 1 << 53:
        return np.matmul(a, b)
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


def adversarial_weight(shape, rng: Noise) -> np.ndarray:
    """Rows of +127 pairs, -128 pairs, alternating pairs, alternating values, random."""
    oc, k = shape[0], int(np.prod(shape[1:]))
    rows = [np.full(k, 127), np.full(k, -128), np.resize([127, 127, -128, -128], k),
            np.resize([127, -128], k), rng.integers(-128, 128, k)]
    w = np.array([rows[i % len(rows)] for i in range(oc)], np.int8)
    return w.reshape(shape)


def direct_cases(signed: bool = False):
    """The convolution cases as ConvInteger (``direct``: few input channels), and depthwise
    (one input channel per group, two outputs each) on bytes and on split bytes, in both
    attribute sets; ``signed``: the cases of int8 data, every conversion to it (none of split
    bytes)."""
    if signed:
        return [(replace(spec, direct=True, signed=True), xs) for spec, xs in cases("u8u8")
                if spec.conv and not spec.split]
    plain = [(replace(spec, direct=True), xs) for spec, xs in cases("u8u8") if spec.conv]
    grouped = []
    for spec, xs in plain:
        if spec.offset == 0 or spec.split:
            c = spec.x_shape[3] if spec.nhwc_in else spec.x_shape[1]
            weight = np.ascontiguousarray(spec.weight[:2 * c, :1])
            grouped.append((replace(spec, weight=weight, groups=c), xs))
    return plain + grouped


def cases(form: str):
    """(LinearSpec, [data, ...]) pairs covering every graph the backend builds, in ``form``."""
    rng = Noise(20240613)
    conv = dict(kernel_size=(3, 3), strides=(1, 1), padding=(1, 1), dilation=(1, 1))
    odd = dict(kernel_size=(2, 3), strides=(2, 1), padding=(0, 2), dilation=(1, 2))
    out = []
    for m, k, n in ((1, 64, 5), (7, 100, 16), (64, 256, 33)):      # dense: GEMV and GEMM
        xs = [np.full((m, k), 255, np.uint8), rng.integers(0, 256, (m, k)).astype(np.uint8)]
        out.append((LinearSpec((m, k), np.uint8, adversarial_weight((n, k), rng), {}, 0, 0,
                               form), xs))
    # conv: x in [0, 255] (int32), int8 (the XOR conversion), a generic offset, split bytes,
    # bytes as they are, in the two layouts and attribute sets in turn: every conversion and
    # every layout runs, and the kernels see the same adversarial operands in each
    layouts = ((conv, False, False), (odd, True, True))
    for n, (lo, hi, dtype, offset, zp, split) in enumerate(((0, 255, np.int32, 0, 7, False),
                                                           (-128, 127, np.int8, 128, 0, False),
                                                           (-60, 190, np.int32, 60, 3, False),
                                                           (-255, 255, np.int32, 255, 0, True),
                                                           (0, 255, np.uint8, 0, 5, False))):
        attrs, nhwc_in, nchw_out = layouts[n % 2]
        w = adversarial_weight((16, 8) + attrs["kernel_size"], rng)
        shape = (2, 9, 10, 8) if nhwc_in else (2, 8, 9, 10)
        xs = [np.full(shape, hi, dtype), rng.integers(lo, hi + 1, shape).astype(dtype)]
        out.append((LinearSpec(shape, np.dtype(dtype), w, attrs, offset, zp, form, split,
                               nhwc_in, nchw_out), xs))
    return out
