"""Layout ops (CVM semantics): reshape, flatten, expand_dims, squeeze, transpose, concatenate,
repeat, tile; the indexing ops are in ops/indexing.py.

None of them does arithmetic: kernels keep the storage dtype, except that inputs of different
storage dtypes (concatenate) are widened explicitly first. Gas weight 1 for every op. The
helpers below are shared with ops/indexing.py.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, flat_index, require, size_of, wide
from .batch import along, outside, tile_rule, transpose_rule
from .registry import register
from .z3util import gather

INT = (1 << 31) - 1  # CVM attributes are C++ ints


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

def normalize_axis(axis: int, ndim: int, op: str) -> int:
    """``axis`` in [-ndim, ndim-1], normalized to [0, ndim)."""
    require(-ndim <= axis < ndim, f"{op} axis {axis} out of range [{-ndim}, {ndim - 1}]")
    return axis + ndim if axis < 0 else axis


def normalize_axes(axes, ndim: int, op: str) -> tuple[int, ...]:
    """Each axis normalized by :func:`normalize_axis`; duplicates are rejected."""
    out = tuple(normalize_axis(a, ndim, op) for a in axes)
    require(len(set(out)) == len(out), f"{op} axes {tuple(axes)} repeat an axis")
    return out


def clamp(v: int, lo: int, hi: int) -> int:
    return min(max(v, lo), hi)


def first_precision(precs, shapes, a):
    return precs[0]


def unit_gas(shapes, a):
    return 1


def _copy_scalar(shape_rule):
    """Scalar reference of a pure re-shaping op: same flat data, new shape."""
    return lambda args, a: Ref(shape_rule([args[0].shape], a), list(args[0].data))


def _copy_kernel(shape_rule):
    """Kernel of a pure re-shaping op: a C-order reshape to the shape rule's result."""
    return lambda xp, x, **a: xp.reshape(x, shape_rule([tuple(x.shape)], a))


def common_dtype(xp, arrays):
    """The arrays unchanged when they share a storage dtype, else all widened to int64."""
    same = len({a.dtype for a in arrays}) == 1
    return list(arrays) if same else [wide(xp, a) for a in arrays]


# ---------------------------------------------------------------------------------------------
# reshape, flatten, expand_dims, squeeze (same C-order data, new shape; in place in CVM)
# ---------------------------------------------------------------------------------------------

def _reshape_split(src: int, d1: int, d2: int) -> list[int]:
    """Code -4: split a source dim ``src`` into (d1, d2); one of them may be -1 (inferred)."""
    require(all(d == -1 or d >= 1 for d in (d1, d2)) and (d1, d2) != (-1, -1),
            f"reshape -4 split dims ({d1}, {d2}) must be positive, one of them may be -1")
    d1 = src // d2 if d1 == -1 else d1
    d2 = src // d1 if d2 == -1 else d2
    require(d1 * d2 == src, f"reshape -4 split ({d1}, {d2}) does not divide dimension {src}")
    return [d1, d2]


def _reshape_step(x, src: int, spec, i: int):
    """Code spec[i] with the source cursor at src: (dims it emits, next src, next i)."""
    code, left = spec[i], x[src:]
    if code > 0:
        return [code], src + 1, i + 1
    if code == -1:
        return [1], src + 1, i + 1                      # placeholder, inferred at the end
    if code == -2:
        return list(left), max(src, len(x)), i + 1
    require(len(left) >= (2 if code == -3 else 1),
            f"reshape code {code} at position {i}: not enough source dimensions left")
    if code == 0:
        return [left[0]], src + 1, i + 1
    if code == -3:
        return [left[0] * left[1]], src + 2, i + 1
    require(i + 2 < len(spec), f"reshape code -4 at position {i} needs two values after it")
    return _reshape_split(left[0], spec[i + 1], spec[i + 2]), src + 1, i + 3


def _reshape_shape(shapes, a):
    x, spec = shapes[0], a["shape"]
    require(len(spec) >= 1, "reshape shape must not be empty")
    out, src, i, infer = [], 0, 0, None
    while i < len(spec):
        if spec[i] == -1:
            require(infer is None, "reshape: at most one -1 (inferred) dimension")
            infer = len(out)
        dims, src, i = _reshape_step(x, src, spec, i)
        out += dims
    if infer is not None:
        require(size_of(x) % size_of(out) == 0,
                f"reshape cannot infer -1: {size_of(x)} elements, {size_of(out)} per unit")
        out[infer] = size_of(x) // size_of(out)
    require(size_of(out) == size_of(x),
            f"reshape target {tuple(out)} has {size_of(out)} elements, source {x} has "
            f"{size_of(x)}")
    return tuple(out)


register(OpDef(
    name="reshape", opcode=40,
    doc="""Same C-order data under a new shape given by MXNet codes.

    Codes are read left to right with a cursor on the source dims: d > 0 is a new dim (cursor
    +1); 0 copies the source dim (+1); -1 is inferred from the element count (at most one; +1);
    -2 copies all remaining source dims; -3 merges the next two source dims into their product;
    -4 a b splits the next source dim into (a, b), one of them may be -1. The element count must
    not change. Precision P0.""",
    inputs=("x",), outputs=("out",), attrs=(Attr("shape", "ints", lo=-4, hi=INT, symbolic=True),),
    shape=_reshape_shape, precision=first_precision, cost=unit_gas,
    scalar=_copy_scalar(_reshape_shape), kernel=_copy_kernel(_reshape_shape),
    z3=gather(_copy_scalar(_reshape_shape)), inplace=True,
    batch="rows",
))


def _flatten_shape(shapes, a):
    x = shapes[0]
    require(len(x) >= 1, "flatten needs at least one dimension")
    return (x[0], size_of(x[1:]))


register(OpDef(
    name="flatten", opcode=41,
    doc="Same C-order data with shape (d0, d1*...*dn-1). Precision P0.",
    inputs=("x",), outputs=("out",), attrs=(),
    shape=_flatten_shape, precision=first_precision, cost=unit_gas,
    scalar=_copy_scalar(_flatten_shape), kernel=_copy_kernel(_flatten_shape),
    z3=gather(_copy_scalar(_flatten_shape)), inplace=True,
    batch="rows",
))


def _expand_dims_shape(shapes, a):
    x = shapes[0]
    ax = normalize_axis(a["axis"], len(x) + 1, "expand_dims")
    return x[:ax] + (1,) * a["num_newaxis"] + x[ax:]


register(OpDef(
    name="expand_dims", opcode=42,
    doc="""Same C-order data with num_newaxis (in [1, 4096]) dims of size 1 inserted before
    position axis, axis in [-n-1, n] (negative: + n + 1). Precision P0.""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("axis", "int", lo=-INT, hi=INT),
           Attr("num_newaxis", "int", default=1, lo=1, hi=4096)),
    shape=_expand_dims_shape, precision=first_precision, cost=unit_gas,
    scalar=_copy_scalar(_expand_dims_shape), kernel=_copy_kernel(_expand_dims_shape),
    z3=gather(_copy_scalar(_expand_dims_shape)),
    inplace=True,
    batch=along("axis", rank_shift=1),
))


def _squeeze_shape(shapes, a):
    x = shapes[0]
    if not a["axis"]:
        return tuple(d for d in x if d != 1) or (1,)
    drop = normalize_axes(a["axis"], len(x), "squeeze")
    require(all(x[ax] == 1 for ax in drop), f"squeeze axes {a['axis']} must have size 1 in {x}")
    return tuple(d for ax, d in enumerate(x) if ax not in drop) or (1,)


register(OpDef(
    name="squeeze", opcode=43,
    doc="""Same C-order data without the listed axes (each of size 1; negatives allowed) or,
    with axis=(), without every size-1 axis. An empty result becomes (1,). Precision P0.""",
    inputs=("x",), outputs=("out",), attrs=(Attr("axis", "ints", default=(), lo=-INT, hi=INT),),
    shape=_squeeze_shape, precision=first_precision, cost=unit_gas,
    scalar=_copy_scalar(_squeeze_shape), kernel=_copy_kernel(_squeeze_shape),
    z3=gather(_copy_scalar(_squeeze_shape)), inplace=True,
    batch=outside("axis"),
))


# ---------------------------------------------------------------------------------------------
# transpose, concatenate, repeat, tile
# ---------------------------------------------------------------------------------------------

def _perm(ndim: int, axes) -> tuple[int, ...]:
    if not axes:
        return tuple(reversed(range(ndim)))
    require(len(axes) == ndim, f"transpose axes {tuple(axes)} must list all {ndim} axes")
    return normalize_axes(axes, ndim, "transpose")


def _transpose_scalar(args, a):
    x = args[0]
    perm = _perm(x.ndim, a["axes"])
    inverse = [perm.index(m) for m in range(x.ndim)]       # j[perm[k]] = i[k]
    return Ref.build(tuple(x.shape[p] for p in perm), lambda i: x.at([i[k] for k in inverse]))


register(OpDef(
    name="transpose", opcode=44,
    doc="""Y[i_0..i_n-1] = X[j] with j[axes[k]] = i[k]. axes=() reverses the axes; otherwise
    a full permutation, negatives allowed (+n). Precision P0.""",
    inputs=("x",), outputs=("out",), attrs=(Attr("axes", "ints", default=(), lo=-INT, hi=INT),),
    shape=lambda shapes, a: tuple(shapes[0][p] for p in _perm(len(shapes[0]), a["axes"])),
    precision=first_precision, cost=unit_gas, scalar=_transpose_scalar, z3=gather(_transpose_scalar),
    kernel=lambda xp, x, *, axes: xp.transpose(x, _perm(x.ndim, axes)),
    batch=transpose_rule,
))


def _concatenate_shape(shapes, a):
    first = shapes[0]
    ax = normalize_axis(a["axis"], len(first), "concatenate")
    for s in shapes[1:]:
        require(len(s) == len(first) and all(s[k] == first[k] for k in range(len(s)) if k != ax),
                f"concatenate shapes {tuple(shapes)} differ off axis {ax}")
    return first[:ax] + (sum(s[ax] for s in shapes),) + first[ax + 1:]


def _concatenate_scalar(args, a):
    out = _concatenate_shape([r.shape for r in args], a)
    ax = normalize_axis(a["axis"], len(out), "concatenate")

    def element(i):
        k = i[ax]
        for r in args:
            if k < r.shape[ax]:
                return r.at(i[:ax] + (k,) + i[ax + 1:])
            k -= r.shape[ax]

    return Ref.build(out, element)


register(OpDef(
    name="concatenate", opcode=45,
    doc="""Joins the inputs in order along axis (default 1, in [-n, n-1]). Same ndim and equal
    dims off the axis. Precision max(P_i).""",
    inputs=("x*",), outputs=("out",), attrs=(Attr("axis", "int", default=1, lo=-INT, hi=INT),),
    shape=_concatenate_shape, precision=lambda precs, shapes, a: max(precs), cost=unit_gas,
    scalar=_concatenate_scalar, z3=gather(_concatenate_scalar),
    kernel=lambda xp, *xs, axis: xp.concatenate(common_dtype(xp, xs),
                                                axis=normalize_axis(axis, xs[0].ndim, "concatenate")),
    batch=along("axis", "map"),
))


def _repeat_shape(shapes, a):
    x = shapes[0]
    ax = normalize_axis(a["axis"], len(x), "repeat")
    return x[:ax] + (x[ax] * a["repeats"],) + x[ax + 1:]


def _repeat_scalar(args, a):
    x = args[0]
    ax, r = normalize_axis(a["axis"], x.ndim, "repeat"), a["repeats"]
    return Ref.build(_repeat_shape([x.shape], a),
                     lambda i: x.at(i[:ax] + (i[ax] // r,) + i[ax + 1:]))


register(OpDef(
    name="repeat", opcode=46,
    doc="""Repeats each element repeats times along axis (default 0, in [-n, n-1]):
    Y[.., i, ..] = X[.., floor(i / repeats), ..]. repeats >= 1. Precision P0.""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("repeats", "int", lo=1, hi=INT), Attr("axis", "int", default=0, lo=-INT, hi=INT)),
    shape=_repeat_shape, precision=first_precision, cost=unit_gas, scalar=_repeat_scalar,
    z3=gather(_repeat_scalar),
    kernel=lambda xp, x, *, repeats, axis: xp.repeat(x, repeats,
                                                     axis=normalize_axis(axis, x.ndim, "repeat")),
    batch=along("axis"),
))


def _tile_dims(shape, reps):
    """(input dims, reps), both right-aligned and left-padded with 1 to a common length."""
    require(len(reps) >= 1, "tile reps must not be empty")
    n = max(len(shape), len(reps))
    return (1,) * (n - len(shape)) + tuple(shape), (1,) * (n - len(reps)) + tuple(reps)


def _tile_shape(shapes, a):
    dims, reps = _tile_dims(shapes[0], a["reps"])
    return tuple(d * r for d, r in zip(dims, reps))


def _tile_scalar(args, a):
    x = args[0]
    dims, _ = _tile_dims(x.shape, a["reps"])
    return Ref.build(_tile_shape([x.shape], a),
                     lambda i: x.data[flat_index(dims, [k % d for k, d in zip(i, dims)])])


register(OpDef(
    name="tile", opcode=47,
    doc="""Tiles X reps times, right-aligned over max(ndim, len(reps)) dims (missing leading
    dims and reps are 1): Y[i] = X[i mod dims]. reps non-empty, each in [1, 4096]. Precision P0.""",
    inputs=("x",), outputs=("out",), attrs=(Attr("reps", "ints", lo=1, hi=4096),),
    shape=_tile_shape, precision=first_precision, cost=unit_gas, scalar=_tile_scalar, z3=gather(_tile_scalar),
    kernel=lambda xp, x, *, reps: xp.tile(x, tuple(reps)),
    batch=tile_rule,
))
