"""Ops for imported models: sum_pool2d (the exact numerator of an average pool), pad and
argmax. Integer semantics only; the division of an average pool is left to requantize."""
from __future__ import annotations

import math

from .base import Attr, OpDef, Ref, bound, precision_for, require, size_of, unravel, wide
from .batch import along, pad_rule
from .registry import register
from .z3util import build

SPATIAL = dict(kind="ints", length=(2,), expand=2)
INT31 = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# sum_pool2d
# ---------------------------------------------------------------------------------------------

def _pool_out(size: int, pad: int, k: int, stride: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def window_count(o: int, size: int, pad: int, k: int, stride: int) -> int:
    """In-range cells of window ``o`` along one axis (rows o*stride - pad .. + k - 1)."""
    return min(o * stride - pad + k, size) - max(o * stride - pad, 0)


LCM_CAP = 1 << 64
"""Past this the lcm is not needed exactly: the precision rule refuses the op anyway."""


def _axis_lcm(size: int, pad: int, k: int, stride: int) -> int:
    """lcm of the window counts along one axis, in O(pad / stride) steps: only the windows
    that start before the input or end after it are partial; the others count k. Exact below
    LCM_CAP, else some value >= LCM_CAP."""
    out = _pool_out(size, pad, k, stride)
    head = min(out, -(-pad // stride))                 # windows with o * stride < pad
    tail = max(head, (size + pad - k) // stride + 1)   # windows ending past the input
    counts = {window_count(o, size, pad, k, stride) for o in range(head)}
    counts |= {window_count(o, size, pad, k, stride) for o in range(tail, out)}
    if head < min(tail, out):
        counts.add(k)
    lcm = 1
    for n in sorted(counts):
        lcm = math.lcm(lcm, n)
        if lcm >= LCM_CAP:
            break
    return lcm


def _axes(shape, a):
    """Per axis (rows, columns): (size, pad, k, stride)."""
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    return (shape[2], ph, kh, sh), (shape[3], pw, kw, sw)


def pool_lcm(shape, a) -> int:
    """L = lcm of the window counts n(p, q) = n_row(p) * n_col(q): lcm(rows) * lcm(columns)
    (for every prime the largest exponent of a product is the sum of the largest ones);
    kh * kw with count_include_pad. O(attributes): the rule never enumerates the output."""
    if a["count_include_pad"]:
        return a["pool_size"][0] * a["pool_size"][1]
    rows, cols = _axes(shape, a)
    return _axis_lcm(*rows) * _axis_lcm(*cols)


def factor_at(shape, a, p: int, q: int, lcms: tuple[int, int]) -> int:
    """L / n(p, q) for output (p, q), given ``lcms`` = (lcm of rows, lcm of columns)."""
    if a["count_include_pad"]:
        return 1
    rows, cols = _axes(shape, a)
    return (lcms[0] // window_count(p, *rows)) * (lcms[1] // window_count(q, *cols))


def factor_axes(xp, shape, a):
    """(row factors (OH, 1), column factors (OW,)) as int64 arrays: their product is the
    factor table L / n(p, q), never built (the kernel multiplies by both)."""
    out = []
    for size, pad, k, stride in _axes(shape, a):
        if a["count_include_pad"]:
            out.append(xp.ones(_pool_out(size, pad, k, stride), dtype=xp.int64))
            continue
        start = xp.arange(_pool_out(size, pad, k, stride), dtype=xp.int64) * stride - pad
        counts = xp.minimum(start + k, size) - xp.maximum(start, 0)
        out.append(_axis_lcm(size, pad, k, stride) // counts)
    return out[0].reshape(-1, 1), out[1]


def _sum_pool_shape(shapes, a):
    x = shapes[0]
    require(len(x) == 4, f"sum_pool2d data must be 4-D (NCHW), got {x}")
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    require(ph < kh and pw < kw, f"sum_pool2d padding {a['padding']} must be < pool_size "
            f"{a['pool_size']}")
    require(x[2] + 2 * ph >= kh and x[3] + 2 * pw >= kw,
            f"sum_pool2d pool_size {a['pool_size']} larger than padded input {x}")
    return (x[0], x[1], _pool_out(x[2], ph, kh, sh), _pool_out(x[3], pw, kw, sw))


def _sum_pool_precision(precs, shapes, a):
    return precision_for(pool_lcm(shapes[0], a) * (bound(precs[0]) + abs(a["zero_point"])))


def _window_terms(x, i, a, fn):
    """fn(cell value) for every in-range cell of the window of output index ``i``."""
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    b, c, p, q = i
    return [fn(x.at((b, c, y, z)))
            for y in range(max(p * sh - ph, 0), min(p * sh - ph + kh, x.shape[2]))
            for z in range(max(q * sw - pw, 0), min(q * sw - pw + kw, x.shape[3]))]


def _lcms(shape, a) -> tuple[int, int]:
    return tuple(_axis_lcm(*axis) for axis in _axes(shape, a))


def _sum_pool_scalar(args, a):
    x, zp = args[0], a["zero_point"]
    lcms = _lcms(x.shape, a)
    return Ref.build(_sum_pool_shape([x.shape], a), lambda i: factor_at(
        x.shape, a, i[2], i[3], lcms) * sum(_window_terms(x, i, a, lambda v: v - zp)))


def _sum_pool_kernel(xp, x, *, pool_size, strides, padding, zero_point, count_include_pad):
    """Window sums of the zero-padded centred input, times the int64 factor table: one sum
    for a window that is the whole unpadded plane, tap by tap for small windows, else from
    the 2-D prefix sums (exact: |sum| <= 2^28 cells x 2^32 within
    the memory ceiling; beyond 2^62 tap by tap)."""
    a = dict(pool_size=pool_size, strides=strides, padding=padding,
             count_include_pad=count_include_pad)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = pool_size, strides, padding
    oh, ow = _pool_out(h, ph, kh, sh), _pool_out(w, pw, kw, sw)
    hp, wp = h + 2 * ph, w + 2 * pw
    rows, cols = factor_axes(xp, x.shape, a)
    if (kh, kw, ph, pw) == (h, w, 0, 0):          # one window, the whole plane: one reduction
        y = xp.sum(x, axis=(2, 3), dtype=xp.int64, keepdims=True) - zero_point * h * w
        return y * rows * cols
    reach = (bound(32) + abs(zero_point)) * hp * wp
    prefix = kh * kw > PREFIX_TAPS and reach < 1 << 62
    xs = xp.zeros((n, c, hp + prefix, wp + prefix), dtype=xp.int64)
    xs[:, :, ph + prefix:ph + prefix + h, pw + prefix:pw + prefix + w] = wide(xp, x) - zero_point
    if prefix:                          # xs[.., i, j] = sum of the cells above and left of (i, j)
        xp.cumsum(xs, axis=2, out=xs)
        xp.cumsum(xs, axis=3, out=xs)
        r0, c0 = xp.arange(oh) * sh, xp.arange(ow) * sw
        r1, c1 = (r0 + kh)[:, None], c0 + kw
        r0 = r0[:, None]
        y = xs[:, :, r1, c1] - xs[:, :, r0, c1] - xs[:, :, r1, c0] + xs[:, :, r0, c0]
    else:
        y = xp.zeros((n, c, oh, ow), dtype=xp.int64)
        for r in range(kh):
            for s in range(kw):
                y += xs[:, :, r:r + sh * (oh - 1) + 1:sh, s:s + sw * (ow - 1) + 1:sw]
    y *= rows
    y *= cols
    return y


PREFIX_TAPS = 16
"""Windows of more cells are summed from prefix sums (a constant number of passes)."""


def pool_excess_work(shapes, a, padded) -> int:
    """Gas for the cells a pool's kernel visits beyond those its windows cover (CVM charges
    KH KW per output element): the padded input where the strides skip cells, so that the
    gas bounds the time; 0 where the windows cover the input (stride <= pool size)."""
    n, c, h, w = shapes[0]
    (kh, kw) = a["pool_size"]
    oh, ow = padded[2], padded[3]
    return n * c * max(0, padded[0] * padded[1] - kh * kw * oh * ow)


def _sum_pool_work(shapes, precs, a) -> int:
    n, c, h, w = shapes[0]
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    oh, ow = _pool_out(h, ph, kh, sh), _pool_out(w, pw, kw, sw)
    return pool_excess_work(shapes, a, (h + 2 * ph, w + 2 * pw, oh, ow))


def _sum_pool_scratch(in_shapes, out_shapes, a) -> int:
    """The kernel's temporaries: the zero-padded int64 input (larger than the input where the
    padding is; its prefix sums in place), the centred input, the int64 sums (four gathers of
    the prefix sums) and their products, the factor axes."""
    n, c, h, w = in_shapes[0]
    (ph, pw), out = a["padding"], out_shapes[0]
    padded = n * c * (h + 2 * ph + 1) * (w + 2 * pw + 1)
    return 8 * (padded + 2 * size_of(in_shapes[0]) + 6 * size_of(out) + 2 * (out[2] + out[3]))


def _sum_pool_z3(zx, x, **a):
    lcms = _lcms(x.shape, a)
    return build(_sum_pool_shape([x.shape], a), lambda i: zx.sum(
        _window_terms(x, i, a, lambda v: v - a["zero_point"])) * factor_at(
            x.shape, a, i[2], i[3], lcms))


register(OpDef(
    name="sum_pool2d", opcode=103,
    doc="""The exact numerator of a 2-D average pool, NCHW:
    Y[n,c,p,q] = (L / n(p,q)) * sum (X[n,c,y,z] - zero_point) over the in-range cells of window
    (p, q) (rows p*SH - PH .. + KH - 1, columns q*SW - PW .. + KW - 1). n(p,q) = KH*KW with
    count_include_pad, else the number of in-range cells; L = lcm of every n(p,q) of the
    output, so Y / L is the average: the division is left to a following requantize (one
    rounding). Output size floor((H + 2PH - KH) / SH) + 1; padding < pool_size.
    Precision: precision_for(L * (R(P0) + |zero_point|)).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("pool_size", lo=1, hi=4096, **SPATIAL),
           Attr("strides", default=(1, 1), lo=1, hi=4096, **SPATIAL),
           Attr("padding", default=(0, 0), lo=0, hi=4096, **SPATIAL),
           Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16),
           Attr("count_include_pad", "bool", default=False)),
    shape=_sum_pool_shape, precision=_sum_pool_precision,
    cost=lambda shapes, a: a["pool_size"][0] * a["pool_size"][1] + 1,
    scalar=_sum_pool_scalar, kernel=_sum_pool_kernel, z3=_sum_pool_z3,
    batch="rows", scratch=_sum_pool_scratch, work=_sum_pool_work,
))


# ---------------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------------

def _pad_shape(shapes, a):
    x, pads = shapes[0], a["pads"]
    require(len(pads) == 2 * len(x), f"pad needs {2 * len(x)} pads (begins, then ends) for "
            f"shape {x}, got {len(pads)}")
    if a["mode"] == "reflect":
        require(all(p < d for p, d in zip(pads, x + x)),
                f"pad mode reflect needs every pad < its dimension, got {pads} for {x}")
    return tuple(d + pads[k] + pads[k + len(x)] for k, d in enumerate(x))


def pad_source(index, shape, pads, mode):
    """The input multi-index output ``index`` copies, or None for the fill value."""
    src = []
    for k, d in enumerate(shape):
        j = index[k] - pads[k]
        if mode == "edge":
            j = min(max(j, 0), d - 1)
        elif mode == "reflect" and d > 1:
            j = abs(j) % (2 * d - 2)
            j = 2 * d - 2 - j if j >= d else j
        elif not 0 <= j < d:
            return None
        src.append(j)
    return tuple(src)


def _pad_scalar(args, a):
    x = args[0]
    return Ref.build(_pad_shape([x.shape], a), lambda i: _pick(
        x, pad_source(i, x.shape, a["pads"], a["mode"]), a["value"]))


def _pick(x, src, value):
    return value if src is None else x.at(src)


def _pad_kernel(xp, x, *, pads, value, mode):
    n = x.ndim
    width = [(pads[k], pads[k + n]) for k in range(n)]
    if mode == "constant":
        return xp.pad(wide(xp, x), width, mode="constant", constant_values=value)
    return xp.pad(x, width, mode=mode)


def _pad_z3(zx, x, *, pads, value, mode):
    return build(_pad_shape([x.shape], dict(pads=pads, mode=mode)), lambda i: _pick(
        x, pad_source(i, x.shape, pads, mode), zx.num(value)))


register(OpDef(
    name="pad", opcode=104,
    doc="""Pad every axis: pads = (begin_0, .., begin_{n-1}, end_0, .., end_{n-1}) >= 0 (ONNX
    order). mode constant: new cells hold ``value``; edge: the nearest input cell; reflect:
    the mirror image without repeating the edge (every pad < its dimension). A pure data
    movement. Precision: P0, or max(P0, precision_for(|value|)) for constant.""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("pads", "ints", lo=0, hi=1 << 24),
           Attr("value", "int", default=0, lo=-INT31, hi=INT31),
           Attr("mode", "str", default="constant", choices=("constant", "edge", "reflect"))),
    shape=_pad_shape,
    precision=lambda precs, shapes, a: (max(precs[0], precision_for(abs(a["value"])))
                                        if a["mode"] == "constant" else precs[0]),
    cost=lambda shapes, a: 1,
    scalar=_pad_scalar, kernel=_pad_kernel, z3=_pad_z3,
    batch=pad_rule,
))


# ---------------------------------------------------------------------------------------------
# argmax
# ---------------------------------------------------------------------------------------------

def _argmax_shape(shapes, a):
    x, axis = shapes[0], a["axis"]
    require(-len(x) <= axis < len(x), f"argmax axis {axis} out of range for shape {x}")
    axis %= len(x)
    if a["keepdims"]:
        return tuple(1 if d == axis else s for d, s in enumerate(x))
    return tuple(s for d, s in enumerate(x) if d != axis) or (1,)


def _argmax_lines(shape, a):
    """(output multi-index, list of input multi-indices along the axis) per output element."""
    axis = a["axis"] % len(shape)
    rest = [s for d, s in enumerate(shape) if d != axis]
    for flat in range(size_of(rest)):
        base = list(unravel(rest, flat))
        yield [base[:axis] + [k] + base[axis:] for k in range(shape[axis])]


def _best(values, last: bool) -> int:
    best = 0
    for k, v in enumerate(values):
        if v > values[best] or (last and v == values[best]):
            best = k
    return best


def _argmax_scalar(args, a):
    x = args[0]
    out = [_best([x.at(i) for i in line], a["select_last_index"])
           for line in _argmax_lines(x.shape, a)]
    return Ref(_argmax_shape([x.shape], a), out)


def _argmax_kernel(xp, x, *, axis, keepdims, select_last_index):
    if select_last_index:
        n = x.shape[axis]
        y = n - 1 - xp.argmax(xp.flip(x, axis=axis), axis=axis)
    else:
        y = xp.argmax(x, axis=axis)
    y = y.astype(xp.int64)
    return xp.expand_dims(y, axis) if keepdims else y.reshape(
        _argmax_shape([x.shape], dict(axis=axis, keepdims=False)))


def _argmax_z3(zx, x, **a):
    def best(line):
        top, idx = x.at(line[0]), zx.num(0)
        for k, i in enumerate(line[1:], 1):
            v = x.at(i)
            better = v >= top if a["select_last_index"] else v > top
            top, idx = zx.ite(better, v, top), zx.ite(better, k, idx)
        return idx
    return Ref(_argmax_shape([x.shape], a), [best(line) for line in _argmax_lines(x.shape, a)])


register(OpDef(
    name="argmax", opcode=105,
    doc="""Index of the maximum along ``axis`` (in [-n, n-1]): the first one, or the last with
    select_last_index (ONNX ArgMax). keepdims keeps the axis as 1. Values in [0, D-1], D the
    axis length. Precision: precision_for(D - 1).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("axis", "int", default=0, lo=-6, hi=5),
           Attr("keepdims", "bool", default=True),
           Attr("select_last_index", "bool", default=False)),
    shape=_argmax_shape,
    precision=lambda precs, shapes, a: precision_for(shapes[0][a["axis"] % len(shapes[0])] - 1),
    cost=lambda shapes, a: shapes[0][a["axis"] % len(shapes[0])],
    scalar=_argmax_scalar, kernel=_argmax_kernel, z3=_argmax_z3,
    batch=along("axis"),
))
