"""Post-processing ops: topk, ctc_greedy_decode (integer decoders of a model's scores)."""
from __future__ import annotations

from .base import Attr, OpDef, Ref, precision_for, require, size_of, unravel, wide
from .batch import along
from .layout import normalize_axis
from .registry import register


# ---------------------------------------------------------------------------------------------
# topk
# ---------------------------------------------------------------------------------------------

def _topk_shape(shapes, a):
    x = shapes[0]
    axis = normalize_axis(a["axis"], len(x), "topk")
    require(a["k"] <= x[axis], f"topk k = {a['k']} exceeds the axis length {x[axis]}")
    out = tuple(a["k"] if d == axis else s for d, s in enumerate(x))
    return [out, out]


def _lines(shape, axis: int):
    """Per line along ``axis``: (the multi-index of its first output position with the axis
    index replaced by a placeholder, the flat input indices of the line)."""
    rest = [s for d, s in enumerate(shape) if d != axis]
    for flat in range(size_of(rest)):
        base = list(unravel(rest, flat))
        yield base, [_flat(shape, base[:axis] + [j] + base[axis:]) for j in range(shape[axis])]


def _flat(shape, index) -> int:
    out = 0
    for d, i in zip(shape, index):
        out = out * d + i
    return out


def _order(values: list[int], largest: bool) -> list[int]:
    """Positions sorted by value (descending when ``largest``), ties by position."""
    return sorted(range(len(values)), key=lambda j: (-values[j] if largest else values[j], j))


def _topk_scalar(args, a):
    x = args[0]
    axis = normalize_axis(a["axis"], x.ndim, "topk")
    out_shape = _topk_shape([x.shape], a)[0]
    values, index = [0] * size_of(out_shape), [0] * size_of(out_shape)
    for base, line in _lines(x.shape, axis):
        order = _order([x.data[f] for f in line], a["largest"])
        for r in range(a["k"]):
            at = _flat(out_shape, base[:axis] + [r] + base[axis:])
            values[at], index[at] = x.data[line[order[r]]], order[r]
    return [Ref(out_shape, values), Ref(out_shape, index)]


def _topk_kernel(xp, x, *, k, axis, largest):
    """A stable sort of the (negated) int64 values: equal values keep their order."""
    key = -wide(xp, x) if largest else wide(xp, x)
    order = xp.argsort(key, axis=axis, kind="stable")
    picked = xp.take(order, xp.arange(k), axis=axis)
    return xp.take_along_axis(x, picked, axis=axis), picked.astype(xp.int64)


def _topk_z3(zx, x, *, k, axis, largest):
    """The element of rank r (the count of elements before it in the order) is picked."""
    axis = normalize_axis(axis, x.ndim, "topk")
    out_shape = _topk_shape([x.shape], dict(k=k, axis=axis))[0]
    values, index = [None] * size_of(out_shape), [None] * size_of(out_shape)
    for base, line in _lines(x.shape, axis):
        v = [x.data[f] for f in line]
        before = lambda i, j: (v[i] > v[j] if largest else v[i] < v[j]) if i > j else \
            (v[i] >= v[j] if largest else v[i] <= v[j])
        ranks = [zx.sum([zx.flag(before(i, j)) for i in range(len(v)) if i != j])
                 for j in range(len(v))]
        for r in range(k):
            at = _flat(out_shape, base[:axis] + [r] + base[axis:])
            values[at] = zx.sum([zx.ite(ranks[j] == r, v[j], 0) for j in range(len(v))])
            index[at] = zx.sum([zx.ite(ranks[j] == r, j, 0) for j in range(len(v))])
    return Ref(out_shape, values), Ref(out_shape, index)


register(OpDef(
    name="topk", opcode=150,
    doc="""The k largest (``largest``, default) or smallest elements along ``axis`` (in
    [-n, n-1], default -1) in order, with their positions: a stable sort, so equal values keep
    the order of their positions (the lower position first). Outputs ``values`` (precision
    P0) and ``indices`` (in [0, D - 1], D the axis length: precision_for(D - 1)), both of
    shape x.shape with the axis length k <= D. Gas weight D per output element.""",
    inputs=("x",), outputs=("values", "indices"),
    attrs=(Attr("k", "int", lo=1, hi=1 << 24), Attr("axis", "int", default=-1, lo=-6, hi=5),
           Attr("largest", "bool", default=True)),
    shape=_topk_shape,
    precision=lambda precs, shapes, a: [precs[0], precision_for(
        shapes[0][normalize_axis(a["axis"], len(shapes[0]), "topk")] - 1)],
    cost=lambda shapes, a: shapes[0][normalize_axis(a["axis"], len(shapes[0]), "topk")],
    scalar=_topk_scalar, kernel=_topk_kernel, z3=_topk_z3,
    batch=along("axis"),
))


# ---------------------------------------------------------------------------------------------
# ctc_greedy_decode
# ---------------------------------------------------------------------------------------------

def _ctc_shape(shapes, a):
    x = shapes[0]
    require(len(x) == 3, f"ctc_greedy_decode scores must be 3-D (N, T, C), got {x}")
    require(a["blank"] < x[2], f"ctc_greedy_decode blank {a['blank']} is not a class of "
            f"{x[2]}")
    return [(x[0], x[1]), (x[0],)]


def _ctc_precision(precs, shapes, a):
    _, t, c = shapes[0]
    return [precision_for(max(c - 1, 1)), precision_for(t)]


def _best(values: list[int]) -> int:
    """The first position of the maximum."""
    best = 0
    for j, v in enumerate(values):
        if v > values[best]:
            best = j
    return best


def _ctc_scalar(args, a):
    x = args[0]
    n, t, c = x.shape
    labels, lengths = [], []
    for b in range(n):
        best = [_best(x.data[(b * t + s) * c:(b * t + s + 1) * c]) for s in range(t)]
        kept = [v for s, v in enumerate(best) if v != a["blank"] and not (
            a["merge_repeated"] and s and best[s - 1] == v)]
        labels += kept + [-1] * (t - len(kept))
        lengths.append(len(kept))
    return [Ref((n, t), labels), Ref((n,), lengths)]


def _ctc_kernel(xp, x, *, blank, merge_repeated):
    """Argmax per step, a keep mask, then each kept label scattered to its rank."""
    n, t, _ = x.shape
    best = xp.argmax(x, axis=2).astype(xp.int64)
    keep = best != blank
    if merge_repeated and t > 1:
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    rank = xp.cumsum(keep.astype(xp.int64), axis=1) - 1
    labels = xp.full((n, t), -1, dtype=xp.int64)
    rows, steps = xp.nonzero(keep)
    labels[rows, rank[rows, steps]] = best[rows, steps]
    return labels, xp.sum(keep.astype(xp.int64), axis=1)


def _ctc_z3(zx, x, *, blank, merge_repeated):
    n, t, c = x.shape
    labels, lengths = [], []
    for b in range(n):
        best = []
        for s in range(t):
            row = [x.data[(b * t + s) * c + j] for j in range(c)]
            top, idx = row[0], zx.num(0)
            for j in range(1, c):
                better = row[j] > top
                top, idx = zx.ite(better, row[j], top), zx.ite(better, j, idx)
            best.append(idx)
        keep = [zx.And(best[s] != blank, *([best[s] != best[s - 1]]
                                             if merge_repeated and s else [])) for s in range(t)]
        before = [zx.sum([zx.flag(k) for k in keep[:s]]) for s in range(t)]
        for slot in range(t):
            term = zx.num(-1)
            for s in range(t - 1, slot - 1, -1):           # step s lands at a slot <= s
                term = zx.ite(zx.And(keep[s], before[s] == slot), best[s], term)
            labels.append(term)
        lengths.append(zx.sum([zx.flag(k) for k in keep]))
    return Ref((n, t), labels), Ref((n,), lengths)


register(OpDef(
    name="ctc_greedy_decode", opcode=151,
    doc="""Greedy CTC decoding of scores (N, T, C): per row, the best class of every step (the
    first maximum over C), consecutive repeats merged (``merge_repeated``, default true), the
    ``blank`` class (default 0) dropped. Outputs ``labels`` (N, T): the kept classes in order,
    then -1 (precision_for(max(C - 1, 1))), and ``lengths`` (N,): how many were kept
    (precision_for(T)). Gas weight C per output element.""",
    inputs=("scores",), outputs=("labels", "lengths"),
    attrs=(Attr("blank", "int", default=0, lo=0, hi=1 << 24),
           Attr("merge_repeated", "bool", default=True)),
    shape=_ctc_shape, precision=_ctc_precision,
    cost=lambda shapes, a: shapes[0][2],
    scalar=_ctc_scalar, kernel=_ctc_kernel, z3=_ctc_z3,
    batch="rows",
))

