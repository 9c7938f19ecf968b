"""Quantized-model ops: qconv2d and qdense (conv2d / dense on ``x - zero_point``, with wider
precisions) and requantize (fixed-point rescaling with a named rounding).

These carry ONNX/onnxruntime quantized models (compiler/onnx/): a uint8 or int8 activation
``q`` with zero point ``z`` enters a linear op as the exact integer ``q - z``; the int32
accumulator leaves through ``requantize``. qconv2d and qdense reuse every rule of conv2d and
dense (ops/nn.py) on the centred data, so they share their kernels, GEMM licences and Z3
encodings.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, bitlen, bound, clip_ints, precision_for, require, size_of
from .base import wide
from .batch import requantize_rule
from .registry import get, register
from .z3util import build

INT31 = (1 << 31) - 1
ZERO_POINT = Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16)
MAX_DATA_PRECISION = 16
FP32_BITS = 24
"""Significand bits of an IEEE-754 float32 (the ``fp32`` rounding of requantize)."""


# ---------------------------------------------------------------------------------------------
# qconv2d, qdense: conv2d / dense on centred data
# ---------------------------------------------------------------------------------------------

def _base_attrs(a) -> dict:
    return {k: v for k, v in a.items() if k != "zero_point"}


def _centred_ref(x: Ref, zp: int) -> Ref:
    return Ref(x.shape, [v - zp for v in x.data])


def _q_precision(base: str, reduce_len):
    """|Y| <= K * (R(P0) + |zp|) * R(P1) (+ R(P2) with a bias): the exact magnitude rule."""
    def rule(precs, shapes, a):
        require(precs[0] <= MAX_DATA_PRECISION and precs[1] <= MAX_DATA_PRECISION,
                f"q{base} data and weight precisions must be <= {MAX_DATA_PRECISION}, "
                f"got {precs[0]} and {precs[1]}")
        top = reduce_len(shapes) * (bound(precs[0]) + abs(a["zero_point"])) * bound(precs[1])
        return precision_for(top + (bound(precs[2]) if a["use_bias"] else 0))
    return rule


def _q_const_precision(plain):
    """With a constant weight: max over output channels c of (R(P0) + |zp|) * sum |W[c]|
    + |B[c]| (R(P2) for a computed bias), the bound of each channel's exact sum; else
    ``plain``."""
    def rule(precs, shapes, a, consts):
        weight = consts[1] if len(consts) > 1 else None
        if weight is None:
            return plain(precs, shapes, a)
        return _channel_precision(precs, shapes, a, weight, consts[2] if len(consts) > 2
                                  else None)
    return rule


def _channel_precision(precs, shapes, a, weight, bias) -> int:
    import numpy as np
    rows = np.abs(np.asarray(weight).astype(np.int64).reshape(shapes[1][0], -1)).sum(axis=1)
    top = rows.astype(object) * (bound(precs[0]) + abs(a["zero_point"]))
    if a["use_bias"]:
        top = top + (np.abs(np.asarray(bias).astype(np.int64).reshape(-1)).astype(object)
                     if bias is not None else bound(precs[2]))
    return precision_for(int(max(top, default=0)))


def _q_acc_bound(precs, shapes, a, consts) -> int:
    """Bound of every partial sum (bias excluded): (R(P0) + |zp|) * max_c sum |W[c]| with a
    constant weight, else K * (R(P0) + |zp|) * R(P1)."""
    data = bound(precs[0]) + abs(a["zero_point"])
    weight = consts[1] if len(consts) > 1 else None
    if weight is not None:
        from .gemm import row_abs_sums
        return data * int(row_abs_sums(weight).max(initial=0))
    return size_of(shapes[1][1:]) * data * bound(precs[1])


def _register_q(base: str, opcode: int, doc: str, reduce_len) -> None:
    """Register q<base>: <base>'s rules applied to ``data - zero_point``."""
    def kernel(xp, x, *args, zero_point, **attrs):
        return get(base).kernel(xp, wide(xp, x) - zero_point, *args, **attrs)

    def z3(zx, x, *args, zero_point, **attrs):
        return get(base).z3(zx, _centred_ref(x, zero_point), *args, **attrs)

    register(OpDef(
        name=f"q{base}", opcode=opcode, doc=doc,
        inputs=("data", "weight", "bias?"), outputs=("out",),
        attrs=get(base).attrs + (ZERO_POINT,),
        shape=lambda shapes, a: get(base).shape(shapes, _base_attrs(a)),
        precision=_q_precision(base, reduce_len),
        const_precision=_q_const_precision(_q_precision(base, reduce_len)),
        cost=lambda shapes, a: get(base).cost(shapes, _base_attrs(a)) + 1,
        scalar=lambda args, a: get(base).scalar(
            [_centred_ref(args[0], a["zero_point"]), *args[1:]], _base_attrs(a)),
        kernel=kernel, z3=z3, acc_bound=_q_acc_bound, batch="rows",
        scratch=lambda ins, outs, a: (get(base).scratch_bytes(ins, outs, _base_attrs(a))
                                      + 8 * size_of(ins[0])),     # the centred int64 data
    ))


_register_q("conv2d", 100, """conv2d (ops/nn.py) applied to X - zero_point, exactly.

    Y[n,oc,p,q] = B[oc] + sum (X[n, ch, y, z] - zp) * W[oc, ic, kh, kw] over the in-range
    taps (a tap outside the input contributes 0, i.e. the input is padded with zp, as ONNX
    QLinearConv / ConvInteger do). Same attributes, shape rule, kernel and GEMM licence as
    conv2d, plus zero_point in [-2^16, 2^16]. Precision: P0, P1 <= 16 and
    p = precision_for(K * (R(P0) + |zp|) * R(P1) (+ R(P2))), K = C/groups*KH*KW; where that
    exceeds 32 and the weight is a constant, p = precision_for(max_oc (R(P0) + |zp|) *
    sum |W[oc]| + |B[oc]|) (R(P2) for a computed bias): each channel's exact bound.""",
            lambda shapes: size_of(shapes[1][1:]))

_register_q("dense", 101, """dense (ops/nn.py) applied to X - zero_point, exactly.

    Y[m,n] = B[n] + sum_k (X[m,k] - zp) * W[n,k] (ONNX MatMulInteger / QLinearMatMul / QGemm
    accumulators). zero_point in [-2^16, 2^16]. Precision: P0, P1 <= 16 and
    p = precision_for(K * (R(P0) + |zp|) * R(P1) (+ R(P2))); past 32 bits with a constant
    weight, per output channel as qconv2d.""",
            lambda shapes: shapes[0][1])


# ---------------------------------------------------------------------------------------------
# requantize: rounding helpers (Python ints; the kernel and Z3 rule mirror them)
# ---------------------------------------------------------------------------------------------

def round_shift(v: int, s: int, mode: str) -> int:
    """v / 2^s rounded to an integer: ``half_even`` (ties to even) or ``half_up`` (ties
    toward +inf, cvm_right_shift's rounding)."""
    if s == 0:
        return v
    if mode == "half_up":
        return (v + (1 << (s - 1))) >> s
    q, rem, half = v >> s, v & ((1 << s) - 1), 1 << (s - 1)
    return q + (rem > half or (rem == half and q & 1))


def round_fp32(v: int) -> int:
    """The float32 nearest to the integer v (ties to even), as an integer."""
    t = max(bitlen(abs(v)) - FP32_BITS, 0)
    r = round_shift(abs(v), t, "half_even") << t
    return r if v >= 0 else -r


def requantize_value(v: int, m: int, s: int, a) -> int:
    """One element of requantize (see its doc)."""
    d = v - a["zero_point_in"]
    if a["rounding"] == "fp32":
        r = round_shift(round_fp32(round_fp32(d) * m), s, "half_even")
    else:
        r = round_shift(d * m, s, a["rounding"])
    return min(max(r + a["zero_point"], a["qmin"]), a["qmax"])


def _pair_of(a):
    """The (multiplier, shift) of the element at multi-index ``i`` (one pair: per tensor)."""
    pairs = list(zip(a["multiplier"], a["shift"]))
    if len(pairs) == 1:
        return lambda i: pairs[0]
    return lambda i: pairs[i[a["axis"]]]


def _requantize_shape(shapes, a):
    x, n = shapes[0], len(a["multiplier"])
    require(len(a["shift"]) == n, f"requantize has {n} multipliers but {len(a['shift'])} shifts")
    require(n == 1 or (a["axis"] < len(x) and x[a["axis"]] == n),
            f"requantize: {n} multipliers for axis {a['axis']} of shape {x}")
    require(a["qmin"] <= a["qmax"], f"requantize needs qmin <= qmax, got {a['qmin']} > {a['qmax']}")
    if a["rounding"] == "fp32":
        require(max(a["multiplier"]) < 1 << FP32_BITS,
                "requantize rounding=fp32 needs multipliers < 2^24 (a float32 significand)")
    return x


def _requantize_precision(precs, shapes, a):
    _requantize_shape(shapes, a)
    require(precs[0] <= 32, f"requantize input precision must be <= 32, got {precs[0]}")
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _requantize_scalar(args, a):
    x, pair = args[0], _pair_of(a)
    return Ref.build(x.shape, lambda i: requantize_value(x.at(i), *pair(i), a))


# -- array kernel ------------------------------------------------------------------------------

def _per_channel(xp, values, axis: int, ndim: int):
    a = xp.asarray(values, dtype=xp.int64)
    if a.size == 1:
        return a.reshape((1,) * ndim)
    return a.reshape(tuple(-1 if d == axis else 1 for d in range(ndim)))


def _round_shift_xp(xp, v, s, mode: str):
    """Elementwise :func:`round_shift` on int64 arrays (``s`` broadcasts, 0 <= s <= 62)."""
    one = xp.ones_like(s)
    half = xp.right_shift(xp.left_shift(one, s), 1)            # 0 when s = 0
    if mode == "half_up":
        return xp.right_shift(v + half, s)
    q = xp.right_shift(v, s)
    rem = v - xp.left_shift(q, s)
    up = (rem > half) | ((rem == half) & (half > 0) & ((q & 1) == 1))
    return q + up.astype(xp.int64)


def _bitlen_xp(xp, n):
    """bitlen of a non-negative int64 array (0 for 0), by a binary search."""
    y = xp.zeros(n.shape, dtype=xp.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = n >= (1 << step)
        y = y + xp.where(big, step, 0)
        n = xp.where(big, xp.right_shift(n, step), n)
    return y + n


def _round_fp32_xp(xp, v):
    mag = xp.abs(v)
    t = xp.maximum(_bitlen_xp(xp, mag) - FP32_BITS, 0)
    r = xp.left_shift(_round_shift_xp(xp, mag, t, "half_even"), t)
    return xp.where(v >= 0, r, -r)


REQUANTIZE_BLOCK = 1 << 15
"""Elements requantized at a time: the int64 temporaries of the fp32 chain (about six words
per element) stay one block's, whatever the tensor's size."""


def _requantize_kernel(xp, x, *, multiplier, shift, axis, **a):
    """Blocks of rows of ``x`` viewed as (rows, inner), a row one channel along ``axis`` (the
    whole tensor a row when per tensor), each block :func:`_requantize_block`."""
    per_channel = len(multiplier) > 1
    if x.size <= REQUANTIZE_BLOCK:
        return _requantize_block(xp, x, _per_channel(xp, multiplier, axis, x.ndim),
                                 _per_channel(xp, shift, axis, x.ndim), **a)
    inner = size_of(x.shape[axis + 1:]) if per_channel else REQUANTIZE_BLOCK
    rows = xp.reshape(x, (-1, inner)) if per_channel else xp.reshape(x, (-1,))
    out = xp.empty(rows.shape, dtype=xp.int64)
    step = max(1, REQUANTIZE_BLOCK // inner) if per_channel else REQUANTIZE_BLOCK
    m, s = xp.asarray(multiplier, dtype=xp.int64), xp.asarray(shift, dtype=xp.int64)
    for start in range(0, rows.shape[0], step):
        block = slice(start, start + step)
        if per_channel:
            channel = xp.arange(start, min(start + step, rows.shape[0])) % len(multiplier)
            out[block] = _requantize_block(xp, rows[block], m[channel][:, None],
                                           s[channel][:, None], **a)
        else:
            out[block] = _requantize_block(xp, rows[block], m, s, **a)
    return out.reshape(x.shape)


def _requantize_scratch(in_shapes, out_shapes, a) -> int:
    """The int64 result and one block's temporaries (six words an element, in and out)."""
    n, row = size_of(out_shapes[0]), size_of(out_shapes[0][a["axis"] + 1:])
    return 8 * n + 8 * 6 * 2 * min(n, REQUANTIZE_BLOCK + row)


def _requantize_block(xp, x, m, s, *, zero_point_in, zero_point, qmin, qmax, rounding):
    d = wide(xp, x) - zero_point_in
    if rounding == "fp32":
        r = _round_shift_xp(xp, _round_fp32_xp(xp, _round_fp32_xp(xp, d) * m), s, "half_even")
    else:
        r = _round_shift_xp(xp, d * m, s, rounding)
    return clip_ints(xp, r + zero_point, qmin, qmax)


# -- Z3 rule -----------------------------------------------------------------------------------

def _z3_round_shift(zx, v, s: int, mode: str):
    if s == 0:
        return v
    if mode == "half_up":
        return zx.shr(v + (1 << (s - 1)), s)
    q = zx.shr(v, s)
    rem, half = v - zx.shl(q, s), 1 << (s - 1)
    odd = q - zx.shl(zx.shr(q, 1), 1)
    return q + zx.ite(zx.Or(rem > half, zx.And(rem == half, odd == 1)), 1, 0)


def _z3_round_fp32(zx, v, top: int):
    """:func:`round_fp32` of a term with |v| <= top: an if-then-else chain over bit lengths."""
    mag = zx.abs(v)
    out = mag
    for n in range(FP32_BITS + 1, bitlen(top) + 1):
        t = n - FP32_BITS
        out = zx.ite(mag >= (1 << (n - 1)), zx.shl(_z3_round_shift(zx, mag, t, "half_even"), t),
                     out)
    return zx.ite(v >= 0, out, -out)


def _requantize_z3(zx, x, **a):
    """Per element: the same integer steps as the scalar rule (|x| <= 2^31 - 1 bounds the
    fp32 rounding chains)."""
    pair, top = _pair_of(a), INT31 + abs(a["zero_point_in"])

    def element(i):
        m, s = pair(i)
        d = x.at(i) - a["zero_point_in"]
        if a["rounding"] == "fp32":
            p = _z3_round_fp32(zx, _z3_round_fp32(zx, d, top) * m, round_fp32(top) * m)
            r = _z3_round_shift(zx, p, s, "half_even")
        else:
            r = _z3_round_shift(zx, d * m, s, a["rounding"])
        return zx.clip(r + a["zero_point"], a["qmin"], a["qmax"])
    return build(x.shape, element)


register(OpDef(
    name="requantize", opcode=102,
    doc="""Fixed-point rescaling: Y = clip(round((X - zero_point_in) * M_c / 2^s_c)
    + zero_point, qmin, qmax), c the index along ``axis`` (one multiplier/shift pair: per
    tensor). M in [0, 2^31 - 1], s in [0, 62], so the product is exact in int64. rounding:
    ``half_even`` (ties to even, the rounding of ONNX QuantizeLinear), ``half_up`` (ties toward
    +inf, as cvm_right_shift), or ``fp32``: onnxruntime's float32 requantize reproduced with
    integers only, round((X - zin) as float32 * M as float32) with every float32 rounding ties
    to even (M < 2^24 is the float32 significand of the scale, 2^-s its exponent).
    Precision: precision_for(max(|qmin|, |qmax|)); P0 <= 32.""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("multiplier", "ints", lo=0, hi=INT31),
           Attr("shift", "ints", lo=0, hi=62),
           Attr("axis", "int", default=1, lo=0, hi=5),
           Attr("zero_point_in", "int", default=0, lo=-(1 << 16), hi=1 << 16),
           Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16),
           Attr("qmin", "int", lo=-INT31, hi=INT31),
           Attr("qmax", "int", lo=-INT31, hi=INT31),
           Attr("rounding", "str", default="half_even", choices=("half_even", "half_up", "fp32"))),
    shape=_requantize_shape, precision=_requantize_precision,
    cost=lambda shapes, a: 8 if a["rounding"] == "fp32" else 4,
    scalar=_requantize_scalar, kernel=_requantize_kernel, z3=_requantize_z3,
    batch=requantize_rule, scratch=_requantize_scratch,
))
