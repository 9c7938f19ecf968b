"""Reductions: sum, max (CVM semantics; the full-reduce ``max`` bug is fixed).

Axis rule (CVM ``GetReduceAxes``): ``axis`` entries lie in [-n, n-1] and are normalized to
[0, n); duplicates are rejected. ``axis=()`` means every axis (``exclude`` then changes nothing:
the complement of the empty set is every axis too). ``exclude=True`` reduces the complement of
the listed axes, so listing every axis with ``exclude`` reduces nothing (a copy).

Output shape: reduced axes are dropped, or kept as 1 with ``keepdims``; reducing every axis
without ``keepdims`` gives (1,); reducing nothing gives the input shape.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, bitlen, indices, require, size_of, wide
from .batch import outside
from .registry import register
from .z3util import fold_max

REDUCE_ATTRS = (Attr("axis", "ints", default=()),
                Attr("keepdims", "bool", default=False),
                Attr("exclude", "bool", default=False))


def reduce_axes(ndim: int, axis, exclude: bool) -> tuple[int, ...]:
    """The sorted axes a reduction folds (shared by every rule of sum and max)."""
    require(ndim >= 1, "reduce input must have at least one dimension")
    normalized = []
    for v in axis:
        require(-ndim <= v < ndim, f"reduce axis {v} out of range [{-ndim}, {ndim - 1}]")
        normalized.append(v + ndim if v < 0 else v)
    require(len(set(normalized)) == len(normalized), f"reduce axis {tuple(axis)} has duplicates")
    if not normalized:
        return tuple(range(ndim))
    if exclude:
        return tuple(d for d in range(ndim) if d not in normalized)
    return tuple(sorted(normalized))


def reduce_shape(shape, a) -> tuple[int, ...]:
    """Output shape of a reduction of ``shape`` with attrs ``a``."""
    axes = reduce_axes(len(shape), a["axis"], a["exclude"])
    if a["keepdims"]:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    kept = tuple(s for d, s in enumerate(shape) if d not in axes)
    return kept if kept or not axes else (1,)


def _reduce_shape_rule(shapes, a):
    return reduce_shape(shapes[0], a)


def _fold_len(shapes, a) -> int:
    """Number of input elements folded into each output element: in_size / out_size."""
    return size_of(shapes[0]) // size_of(reduce_shape(shapes[0], a))


def _reduce_scalar(fold):
    """Scalar reference: group the input elements by their index on the kept axes."""

    def scalar(args, a):
        x = args[0]
        axes = reduce_axes(x.ndim, a["axis"], a["exclude"])
        kept = [d for d in range(x.ndim) if d not in axes]
        groups: dict[tuple, list[int]] = {}
        for index, value in zip(indices(x.shape), x.data):
            groups.setdefault(tuple(index[d] for d in kept), []).append(value)
        # sorted kept-axis indices = C order of the output
        return Ref(reduce_shape(x.shape, a), [fold(groups[k]) for k in sorted(groups)])

    return scalar


def _reduce_kernel(fold_name: str, widen: bool):
    def kernel(xp, x, *, axis, keepdims, exclude):
        axes = reduce_axes(x.ndim, axis, exclude)
        out_shape = reduce_shape(x.shape, dict(axis=axis, keepdims=keepdims, exclude=exclude))
        src = wide(xp, x) if widen else x
        if not axes:
            return src.copy().reshape(out_shape)
        return getattr(xp, fold_name)(src, axis=axes).reshape(out_shape)

    return kernel


register(OpDef(
    name="sum", opcode=30,
    doc="""Sum over the reduced axes (see the module doc for the axis rule and output shape).

    Y[j] = sum of X[i] over every input index i whose kept-axis indices equal j's; exact
    integers (int64 accumulator; any order gives the same bits, no overflow by the precision
    rule). Precision P0 + bitlen(in_size / out_size). Gas weight in_size / out_size.""",
    inputs=("x",), outputs=("out",), attrs=REDUCE_ATTRS,
    shape=_reduce_shape_rule,
    precision=lambda precs, shapes, a: precs[0] + bitlen(_fold_len(shapes, a)),
    cost=_fold_len,
    scalar=_reduce_scalar(sum), kernel=_reduce_kernel("sum", widen=True),
    z3=lambda zx, x, **a: _reduce_scalar(zx.sum)([x], a),
    batch=outside("axis"),
))

register(OpDef(
    name="max", opcode=31,
    doc="""Maximum over the reduced axes (see the module doc for the axis rule and shape).

    Y[j] = the true maximum of X[i] over every input index i whose kept-axis indices equal j's.
    detvm fix: CVM's cpu/formal full reduce (axis=(), exclude=False) starts its accumulator at
    0 and returns 0 for all-negative data; detvm returns the true maximum (CVM's GPU result).
    Precision P0. Gas weight 1.""",
    inputs=("x",), outputs=("out",), attrs=REDUCE_ATTRS,
    shape=_reduce_shape_rule,
    precision=lambda precs, shapes, a: precs[0],
    cost=lambda shapes, a: 1,
    scalar=_reduce_scalar(max), kernel=_reduce_kernel("max", widen=False),
    z3=lambda zx, x, **a: _reduce_scalar(lambda terms: fold_max(zx, terms))([x], a),
    batch=outside("axis"),
))
