"""Indexing ops (CVM semantics): strided_slice, slice_like, take, cvm_lut, where.

None of them does arithmetic: kernels keep the storage dtype, except that inputs of different
storage dtypes (where) are widened explicitly first; indices are clamped, never wrapped. Gas
weight 1 for every op.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, clip_ints, require, size_of, wide
from .batch import along, outside, slice_rule
from .layout import INT, clamp, common_dtype, first_precision, normalize_axes, \
    normalize_axis, unit_gas
from .registry import register
from .z3util import build, gather


# ---------------------------------------------------------------------------------------------
# strided_slice, slice_like
# ---------------------------------------------------------------------------------------------

def _slice_plan(shape, a) -> list[tuple[int, int, int]]:
    """Per axis (begin, stride, size): Y picks X[begin + stride * i] for i < size."""
    begin, end, stride = a["begin"], a["end"], a["stride"]
    require(max(len(begin), len(end), len(stride)) <= len(shape),
            f"strided_slice begin/end/stride longer than ndim {len(shape)}")
    plan = []
    for k, dim in enumerate(shape):
        s = stride[k] if k < len(stride) else 1
        require(s != 0, f"strided_slice stride is 0 on axis {k}")
        b = begin[k] if k < len(begin) else 0
        e = end[k] if k < len(end) else dim
        lo, hi = (-1, dim - 1) if s < 0 else (0, dim)
        b = clamp(b + dim if b < 0 else b, lo, hi)
        e = clamp(e + dim if e < 0 else e, lo, hi)
        require(b < e if s > 0 else e < b,
                f"strided_slice axis {k}: empty range begin {b}, end {e}, stride {s}")
        plan.append((b, s, -(-abs(e - b) // abs(s))))
    return plan


def _strided_slice_scalar(args, a):
    x = args[0]
    plan = _slice_plan(x.shape, a)
    return Ref.build(tuple(n for _, _, n in plan),
                     lambda i: x.at([b + s * k for (b, s, _), k in zip(plan, i)]))


def _strided_slice_kernel(xp, x, **a):
    """Basic slicing; the stop is one step past the last index, None when that is -1."""
    cuts = []
    for b, s, n in _slice_plan(x.shape, a):
        stop = b + s * (n - 1) + (1 if s > 0 else -1)
        cuts.append(slice(b, None if stop < 0 else stop, s))
    return x[tuple(cuts)]


register(OpDef(
    name="strided_slice", opcode=48,
    doc="""Y[i] = X[begin_k + stride_k * i_k] on every axis k.

    Missing trailing entries of begin / end / stride are 0 / dim / 1; stride != 0. Negative begin
    and end get + dim, then are clamped to [-1, dim-1] (stride < 0) or [0, dim] (stride > 0).
    Requires begin < end (stride > 0) or end < begin (stride < 0); size_k =
    ceil(|end - begin| / |stride|), so end only sets the size. Precision P0.""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("begin", "ints", symbolic=True), Attr("end", "ints", symbolic=True),
           Attr("stride", "ints", default=())),
    shape=lambda shapes, a: tuple(n for _, _, n in _slice_plan(shapes[0], a)),
    precision=first_precision, cost=unit_gas, scalar=_strided_slice_scalar, kernel=_strided_slice_kernel,
    z3=gather(_strided_slice_scalar),
    batch=slice_rule,
))


def _slice_like_shape(shapes, a):
    x, like = shapes[0], shapes[1]
    if not a["axis"]:
        require(len(x) == len(like), f"slice_like without axis needs equal ndim: {x} vs {like}")
        axes = range(len(x))
    else:
        axes = normalize_axes(a["axis"], len(x), "slice_like")
    out = list(x)
    for ax in axes:
        require(ax < len(like), f"slice_like axis {ax} beyond like's ndim {len(like)}")
        require(like[ax] <= x[ax], f"slice_like axis {ax}: like dim {like[ax]} > x dim {x[ax]}")
        out[ax] = like[ax]
    return tuple(out)


def _slice_like_kernel(xp, x, like, *, axis):
    out = _slice_like_shape([tuple(x.shape), tuple(like.shape)], dict(axis=axis))
    return x[tuple(slice(0, d) for d in out)]


register(OpDef(
    name="slice_like", opcode=49,
    doc="""The leading sub-box of x: Y[i] = X[i] with shape x.shape where the listed axes (all
    axes when axis=(), then ndim must match) take like's dim, which must be <= x's. Values of
    like are not read. Precision P0.""",
    inputs=("x", "like"), outputs=("out",),
    attrs=(Attr("axis", "ints", default=(), lo=-INT, hi=INT),),
    shape=_slice_like_shape, precision=first_precision, cost=unit_gas,
    scalar=lambda args, a: Ref.build(_slice_like_shape([r.shape for r in args], a), args[0].at),
    kernel=_slice_like_kernel,
    z3=lambda zx, x, like, **a: build(_slice_like_shape([x.shape, like.shape], a), x.at),
    batch=outside("axis", "map"),
))


# ---------------------------------------------------------------------------------------------
# take, cvm_lut (indices are clamped, never wrapped), where
# ---------------------------------------------------------------------------------------------

def _take_shape(shapes, a):
    x, idx = shapes[0], shapes[1]
    if a["axis"] is None:
        return tuple(idx)
    ax = normalize_axis(a["axis"], len(x), "take")
    return x[:ax] + tuple(idx) + x[ax + 1:]


def _take_scalar(args, a):
    x, idx = args
    axis = a["axis"]
    if axis is None:                                    # index the flattened x
        x, axis = Ref((len(x.data),), x.data), 0
    ax, m = normalize_axis(axis, x.ndim, "take"), idx.ndim

    def element(i):
        j = clamp(idx.at(i[ax:ax + m]), 0, x.shape[ax] - 1)
        return x.at(i[:ax] + (j,) + i[ax + m:])

    return Ref.build(x.shape[:ax] + idx.shape + x.shape[ax + 1:], element)


def _take_kernel(xp, x, idx, *, axis):
    if axis is None:                                    # index the flattened x
        x, axis = x.reshape(-1), 0
    ax = normalize_axis(axis, x.ndim, "take")
    return xp.take(x, clip_ints(xp, wide(xp, idx), 0, x.shape[ax] - 1), axis=ax)


def _take_z3(zx, x, idx, *, axis):
    """Each output element selects among the candidates along the axis (clamped index)."""
    if axis is None:
        x, axis = Ref((len(x.data),), x.data), 0
    ax, m = normalize_axis(axis, x.ndim, "take"), idx.ndim
    return build(x.shape[:ax] + idx.shape + x.shape[ax + 1:], lambda i: zx.select(
        idx.at(i[ax:ax + m]), [x.at(i[:ax] + (j,) + i[ax + m:]) for j in range(x.shape[ax])]))


register(OpDef(
    name="take", opcode=50,
    doc="""Gathers along an axis with CLAMPED indices (negative -> 0, too large -> n-1; no wrap).

    axis=None: Y[i] = flat(X)[clip(I[i], 0, size-1)], shape I.shape. axis a (in [-n, n-1]):
    Y[p, i, q] = X[p, clip(I[i], 0, dim_a - 1), q], shape x.shape[:a] + I.shape +
    x.shape[a+1:]. Precision P0 (the data's).""",
    inputs=("x", "indices"), outputs=("out",),
    attrs=(Attr("axis", "optint", default=None, lo=-INT, hi=INT),),
    shape=_take_shape, precision=first_precision, cost=unit_gas, scalar=_take_scalar, kernel=_take_kernel,
    z3=_take_z3,
    batch=along("axis"),
))


def _lut_shape(shapes, a):
    require(a["in_dim"] == size_of(shapes[1]),
            f"cvm_lut in_dim {a['in_dim']} != table size {size_of(shapes[1])}")
    return tuple(shapes[0])


register(OpDef(
    name="cvm_lut", opcode=51,
    doc="""Table lookup with CLAMPED indices: Y[i] = flat(T)[clip(D[i], 0, in_dim - 1)].

    in_dim must equal the table size; output shape D.shape. Precision P1 (the table's).""",
    inputs=("data", "table"), outputs=("out",), attrs=(Attr("in_dim", "int", lo=1, hi=INT),),
    shape=_lut_shape, precision=lambda precs, shapes, a: precs[1], cost=unit_gas,
    scalar=lambda args, a: Ref(args[0].shape, [
        args[1].data[clamp(v, 0, a["in_dim"] - 1)] for v in args[0].data]),
    kernel=lambda xp, d, t, *, in_dim: xp.take(
        t.reshape(-1), clip_ints(xp, wide(xp, d), 0, in_dim - 1)),
    z3=lambda zx, d, t, *, in_dim: Ref(d.shape, [zx.select(v, t.data) for v in d.data]),
    batch="rows",
))


def _where_shape(shapes, a):
    c, x, y = shapes
    require(x == y, f"where x shape {x} != y shape {y}")
    require(c == x or c == x[:1],
            f"where cond shape {c} must equal {x} or be ({x[0]},) (row select)")
    return x


def _where_scalar(args, a):
    c, x, y = args
    row = 1 if c.shape == x.shape else size_of(x.shape[1:])    # flat elements per cond entry
    return Ref(x.shape, [x.data[k] if c.data[k // row] != 0 else y.data[k]
                         for k in range(len(x.data))])


def _where_kernel(xp, cond, x, y):
    x, y = common_dtype(xp, (x, y))
    mask = cond != 0
    if mask.shape != x.shape:                # row select: broadcast cond over each row
        mask = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    return xp.where(mask, x, y)


def _where_z3(zx, c, x, y):
    row = 1 if c.shape == x.shape else size_of(x.shape[1:])
    return Ref(x.shape, [zx.ite(c.data[k // row] != 0, x.data[k], y.data[k])
                         for k in range(len(x.data))])


register(OpDef(
    name="where", opcode=52,
    doc="""Select. A cond of x's shape picks elementwise: out[i] = x[i] if cond[i] != 0 else
    y[i]; a 1-D cond of length x.shape[0] picks whole rows: out[r, ...] = x[r, ...] if
    cond[r] != 0 else y[r, ...]. x and y shapes must be equal. Precision max(P1, P2).

    Deviations from CVM (intended semantics): CVM's cpu/formal row select copies row_size
    *bytes* (a non-deterministic bug; detvm copies full rows), and CVM's output precision is
    the condition's P0, which can truncate values (detvm uses max(P1, P2)).""",
    inputs=("cond", "x", "y"), outputs=("out",), attrs=(),
    shape=_where_shape, precision=lambda precs, shapes, a: max(precs[1], precs[2]), cost=unit_gas,
    scalar=_where_scalar, kernel=_where_kernel, z3=_where_z3,
    batch="map",
))
