"""qconv2d_transpose: the transposed 2-D convolution (ONNX ConvTranspose) of X - zero_point,
exactly.

Every input pixel scatters its products with the kernel into the output: Y is the sum of
X[n, c, i, j] * W[c, m, r, s] over the taps landing on each output cell. The kernel is one
GEMM per group (W^T @ X, in the licensed dtype: float BLAS is exact below 2^24 / 2^53) and
exact int64 additions of its columns into the output (col2im). ``rounding="fp32"``
(ops/deconv32.py): onnxruntime's float32 DequantizeLinear -> ConvTranspose -> QuantizeLinear,
its every float32 rounding reproduced in integers; the output is then the quantized tensor.
"""
from __future__ import annotations

import numpy as np

from . import deconv32 as fp32
from . import softfloat as sf
from .base import Attr, OpDef, Ref, bound, precision_for, require, size_of, wide
from .nn import GEMM_DTYPES
from .quant import INT31, MAX_DATA_PRECISION, ZERO_POINT
from .registry import register
from .z3util import build

SPATIAL = dict(kind="ints", length=(2,), expand=2)


def _full(size: int, k: int, stride: int, dil: int) -> int:
    """Length of the uncropped output along one axis: (size - 1) * stride + (k - 1) * dil + 1."""
    return (size - 1) * stride + (k - 1) * dil + 1


def _shape(shapes, a):
    x, w = shapes[0], shapes[1]
    require(len(shapes) == (3 if a["use_bias"] else 2),
            f"qconv2d_transpose with use_bias={a['use_bias']} takes "
            f"{3 if a['use_bias'] else 2} inputs")
    require(len(x) == 4, f"qconv2d_transpose data must be 4-D (NCHW), got {x}")
    n, c, h, wd = x
    g, m = a["groups"], a["channels"]
    require(c % g == 0 and m % g == 0,
            f"qconv2d_transpose channels {c} -> {m} not divisible by groups {g}")
    kh, kw = a["kernel_size"]
    require(tuple(w) == (c, m // g, kh, kw), f"qconv2d_transpose weight shape {tuple(w)} != "
            f"{(c, m // g, kh, kw)} (in channels, channels/groups, kernel_size)")
    if a["use_bias"]:
        require(tuple(shapes[2]) == (m,), f"qconv2d_transpose bias shape {tuple(shapes[2])} "
                f"!= ({m},)")
    out = []
    for size, k, s, d, lo, hi in zip((h, wd), (kh, kw), a["strides"], a["dilation"],
                                      a["crop_begin"], a["crop_end"]):
        length = _full(size, k, s, d) - lo - hi
        require(length >= 1 and lo < _full(size, k, s, d),
                f"qconv2d_transpose crops {a['crop_begin']} / {a['crop_end']} leave no output")
        out.append(length)
    return (n, m, out[0], out[1])


def _taps(k: int, s: int, d: int) -> int:
    """The most kernel taps of one axis that land on one output cell."""
    return max(sum(1 for r in range(k) if (rho - r * d) % s == 0) for rho in range(s))


def reduce_len(shapes, a) -> int:
    """The most products summed into one output element."""
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]
    return shapes[0][1] // a["groups"] * _taps(kh, sh, dh) * _taps(kw, sw, dw)


def _precision(precs, shapes, a):
    if a["rounding"] == "fp32":
        return fp32.precision(precs, shapes, a, reduce_len(shapes, a))
    require(precs[0] <= MAX_DATA_PRECISION and precs[1] <= MAX_DATA_PRECISION,
            f"qconv2d_transpose data and weight precisions must be <= {MAX_DATA_PRECISION}")
    top = reduce_len(shapes, a) * (bound(precs[0]) + abs(a["zero_point"])) * bound(precs[1])
    return precision_for(top + (bound(precs[2]) if a["use_bias"] else 0))


def _acc_bound(precs, shapes, a, consts) -> int:
    """(R(P0) + |zp|) * max_m sum |W[group(m), m]| with a constant weight (every partial sum
    is a sub-sum of an output channel's products), else the precision rule's bound."""
    data = bound(precs[0]) + abs(a["zero_point"])
    weight = consts[1] if len(consts) > 1 else None
    if weight is None:
        return reduce_len(shapes, a) * data * bound(precs[1])
    import numpy as np
    w = np.abs(weight.astype(np.int64))
    return data * int(w.sum(axis=(0, 2, 3)).max(initial=0))


def sources(p: int, size: int, k: int, s: int, d: int, lo: int):
    """(input index, tap) pairs of one axis landing on output index ``p``."""
    out = []
    for r in range(k):
        i, rest = divmod(p + lo - r * d, s)
        if rest == 0 and 0 <= i < size:
            out.append((i, r))
    return out


def _terms(x, w, i, a, times):
    """times(x value, w value) for every product landing on output index ``i``."""
    bt, o, p, q = i
    _, c, h, wd = x.shape
    cg, mg = c // a["groups"], a["channels"] // a["groups"]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]
    rows = sources(p, h, kh, sh, dh, a["crop_begin"][0])
    cols = sources(q, wd, kw, sw, dw, a["crop_begin"][1])
    group, j = divmod(o, mg)
    return [times(x.at((bt, ch, y, r)), w.at((ch, j, ky, kx)))
            for ch in range(group * cg, (group + 1) * cg)
            for y, ky in rows for r, kx in cols]


def _tap_order(x_shape, a):
    """Output cell -> the (input row, input col, ky, kx) landing on it, ky then kx ascending."""
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]

    def taps(i):
        rows = sources(i[2], x_shape[2], kh, sh, dh, a["crop_begin"][0])
        cols = sources(i[3], x_shape[3], kw, sw, dw, a["crop_begin"][1])
        return [(y, r, ky, kx) for y, ky in rows for r, kx in cols]
    return taps


def _scalar(args, a):
    x, w = args[0], args[1]
    if a["rounding"] == "fp32":
        return fp32.scalar(args, a, _shape([t.shape for t in args], a), _tap_order(x.shape, a))
    zp = a["zero_point"]
    return Ref.build(_shape([t.shape for t in args], a), lambda i: (
        (args[2].data[i[1]] if a["use_bias"] else 0)
        + sum(_terms(x, w, i, a, lambda u, v: (u - zp) * v))))


def _kernel(xp, x, w, b=None, *, channels, kernel_size, strides, dilation, groups, crop_begin,
            crop_end, use_bias, zero_point, gemm="int64", rounding="exact", **fp32_attrs):
    require(gemm in GEMM_DTYPES, f"unknown gemm path {gemm!r}")
    dt = getattr(xp, gemm)
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    cg, mg = c // groups, channels // groups
    fh, fw = _full(h, kh, sh, dh), _full(wd, kw, sw, dw)
    (top, left), (bottom, right) = crop_begin, crop_end
    shape = (n, channels, max(fh, fh - crop_end[0]), max(fw, fw - crop_end[1]))
    if rounding == "fp32":
        a = dict(fp32_attrs, channels=channels, kernel_size=kernel_size, strides=strides,
                 dilation=dilation, groups=groups, zero_point=zero_point)
        crop = (slice(None), slice(None), slice(top, fh - bottom), slice(left, fw - right))
        if xp is np and sf.native_float32():
            return fp32.native_quantize(fp32.native(x, w, a, shape)[crop], a)
        full = fp32.kernel(xp, x, w, a, shape)
        return fp32.quantize(xp, (full[0][crop], full[1][crop]), a)
    full = xp.zeros(shape, dtype=xp.int64)
    xs = (wide(xp, x) - zero_point).astype(dt).reshape(n, groups, cg, h * wd)
    wg = w.astype(dt).reshape(groups, cg, mg * kh * kw).transpose(0, 2, 1)
    cols = xp.matmul(wg[None], xs).astype(xp.int64).reshape(n, channels, kh, kw, h, wd)
    for r in range(kh):
        for s in range(kw):
            full[:, :, r * dh:r * dh + sh * (h - 1) + 1:sh,
                 s * dw:s * dw + sw * (wd - 1) + 1:sw] += cols[:, :, r, s]
    y = full[:, :, top:top + fh - top - bottom, left:left + fw - left - right]
    if b is not None:
        y = y + wide(xp, b).reshape(1, channels, 1, 1)
    return y


def _scratch(in_shapes, out_shapes, a) -> int:
    """The kernel's temporaries: the centred data in int64 and the GEMM dtype, the weight, the
    per-tap products (C' KH KW H W per image, in the GEMM dtype and in int64), the uncropped
    output and the biased copy (affine in the batch)."""
    n, _, h, wd = in_shapes[0]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]
    fh, fw = _full(h, kh, sh, dh), _full(wd, kw, sw, dw)
    taps = n * a["channels"] * kh * kw * h * wd
    full = n * a["channels"] * max(fh, fh - a["crop_end"][0]) * max(fw, fw - a["crop_end"][1])
    rest = sum(size_of(s) for s in (*in_shapes, *out_shapes))
    if a.get("rounding") == "fp32":     # (mantissa, exponent) pairs, chunked fma temporaries
        return 8 * (2 * taps + 3 * full + 4 * rest) + fp32.scratch(in_shapes, out_shapes, a)
    return 8 * (2 * taps + full + 4 * rest)


def _z3(zx, x, w, b=None, *, gemm=None, **a):
    shape = _shape([x.shape, w.shape] + ([b.shape] if b is not None else []), a)
    if a["rounding"] == "fp32":
        return fp32.z3(zx, x, w, a, shape, _tap_order(x.shape, a))
    return build(shape, lambda i: zx.sum(
        ([b.data[i[1]]] if b is not None else [])
        + _terms(x, w, i, a, lambda u, v: (u - a["zero_point"]) * v)))


register(OpDef(
    name="qconv2d_transpose", opcode=112,
    doc="""Transposed 2-D convolution (ONNX ConvTranspose) of X - zero_point, NCHW data, weight
    (C, M/groups, KH, KW), exactly: Y[n, m, p, q] = B[m] + sum (X[n, c, i, j] - zp) *
    W[c, m mod M/G, r, s] over the channels c of m's group and the taps with
    i * SH + r * DH = p + crop_begin[0] and j * SW + s * DW = q + crop_begin[1]. The
    uncropped length is (H - 1) * SH + (KH - 1) * DH + 1; crop_begin cells are dropped at the
    start, crop_end at the end (a negative crop_end appends cells no tap reaches: ONNX
    output_padding). Precision: data and weight precisions <= 16, p = precision_for(K *
    (R(P0) + |zp|) * R(P1) (+ R(P2))), K = C/groups times the most taps per output cell.
    rounding=fp32 (no bias): onnxruntime's float32 path, fl(v) the float32 nearest to v, ties
    to even: xf = fl(fl(X - zp) * x_scale), wf = fl(W * w_scale[m mod M/G]); per tap column
    col = fma chains over the group's channels in order, restarted every 128 channels
    (acc = fl(wf * xf + acc) from 0), the blocks added in order; the output cell sums its
    columns onto 0 in (r, s) order (fl of each addition); Y = clip(round_half_even(fl(cell /
    y_scale)) + y_zero_point, qmin, qmax) (saturating at +-2^31). Scales are float32
    (mantissa, exponent) pairs. Precision: precision_for(max(|qmin|, |qmax|)).""",
    inputs=("data", "weight", "bias?"), outputs=("out",),
    attrs=(Attr("channels", "int", lo=1, hi=1 << 24),
           Attr("kernel_size", lo=1, hi=4096, **SPATIAL),
           Attr("strides", default=(1, 1), lo=1, hi=4096, **SPATIAL),
           Attr("dilation", default=(1, 1), lo=1, hi=4096, **SPATIAL),
           Attr("groups", "int", default=1, lo=1, hi=1 << 24),
           Attr("crop_begin", default=(0, 0), lo=0, hi=1 << 16, **SPATIAL),
           Attr("crop_end", default=(0, 0), lo=-(1 << 16), hi=1 << 16, **SPATIAL),
           Attr("use_bias", "bool", default=True), ZERO_POINT,
           Attr("rounding", "str", default="exact", choices=("exact", "fp32")),
           Attr("x_scale", "ints", default=(), lo=sf.EMIN, hi=(1 << 24) - 1),
           Attr("w_mantissa", "ints", default=(), lo=0, hi=(1 << 24) - 1),
           Attr("w_exponent", "ints", default=(), lo=sf.EMIN, hi=127),
           Attr("y_scale", "ints", default=(), lo=sf.EMIN, hi=(1 << 24) - 1),
           Attr("y_zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16),
           Attr("qmin", "int", default=0, lo=-INT31, hi=INT31),
           Attr("qmax", "int", default=0, lo=-INT31, hi=INT31)),
    shape=_shape, precision=_precision,
    cost=lambda shapes, a: (12 if a["rounding"] == "fp32" else 3) * reduce_len(shapes, a) + 1,
    scalar=_scalar, kernel=_kernel, z3=_z3, acc_bound=_acc_bound, batch="rows",
    scratch=_scratch,
))
