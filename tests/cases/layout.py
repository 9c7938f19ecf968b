"""Law-suite cases for ops/layout.py and ops/indexing.py."""
import hypothesis.strategies as st

from ops.base import bound, precision_for, size_of

from . import Input, OpCase, precisions, shapes

any_shape = st.one_of(shapes(1, 4, 1, 4), shapes(5, 6, 1, 2))


def _neg(draw, axis, ndim):
    """``axis`` or its negative spelling."""
    return axis - ndim if draw(st.booleans()) else axis


def _index_values(draw, count, n, precision):
    """``count`` indices for an axis of ``n`` entries: in range, just outside, and +-R(p)."""
    r = bound(precision)
    near = st.integers(-min(n + 2, r), min(n + 2, r))
    return draw(st.lists(st.one_of(near, st.sampled_from([-r, r])), min_size=count,
                         max_size=count))


# ---------------------------------------------------------------------------------------------
# reshape family
# ---------------------------------------------------------------------------------------------

@st.composite
def _reshape_spec(draw, x):
    """A spec walking the source dims with every MXNet code (0, -1, -2, -3, -4, d > 0)."""
    spec, src, inferred = [], 0, False
    while src < len(x):
        moves = ["keep", "dim", "all"] + (["infer"] if not inferred else [])
        moves += ["merge"] if src + 1 < len(x) else []
        moves += ["split"]
        move = draw(st.sampled_from(moves))
        d = x[src]
        if move == "all":
            return spec + [-2]
        if move == "merge":
            spec.append(-3)
            src += 2
            continue
        if move == "split":
            a = draw(st.sampled_from([k for k in range(1, d + 1) if d % k == 0]))
            spec += draw(st.sampled_from([[-4, a, d // a], [-4, -1, d // a], [-4, a, -1]]))
        elif move == "infer":
            spec.append(-1)
            inferred = True
        else:
            spec.append(0 if move == "keep" else d)
        src += 1
    if draw(st.booleans()):
        spec.append(-2)                                  # copies nothing at the end
    return spec


@st.composite
def _free_spec(draw, x):
    """A fresh factorization of the element count, one factor maybe spelled -1."""
    left, spec = size_of(x), []
    while left > 1 and len(spec) < 5:
        f = draw(st.sampled_from([k for k in range(2, left + 1) if left % k == 0]))
        spec.append(f)
        left //= f
    spec = (spec or [1]) + ([1] if draw(st.booleans()) else [])
    if draw(st.booleans()):
        spec[draw(st.integers(0, len(spec) - 1))] = -1
    return spec


@st.composite
def reshape(draw):
    x = draw(any_shape)
    spec = draw(st.one_of(_reshape_spec(x), _free_spec(x)))
    return OpCase([Input(x, draw(precisions))], dict(shape=tuple(spec)))


@st.composite
def flatten(draw):
    return OpCase([Input(draw(any_shape), draw(precisions))])


@st.composite
def expand_dims(draw):
    x = draw(shapes(1, 5, 1, 3))
    axis = _neg(draw, draw(st.integers(0, len(x))), len(x) + 1)
    attrs = dict(axis=axis)
    if draw(st.booleans()):
        attrs["num_newaxis"] = draw(st.integers(1, 3))
    return OpCase([Input(x, draw(precisions))], attrs)


@st.composite
def squeeze(draw):
    x = draw(st.one_of(shapes(1, 4, 1, 3), shapes(1, 6, 1, 1)))
    ones = [k for k, d in enumerate(x) if d == 1]
    axes = draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
    return OpCase([Input(x, draw(precisions))],
                  dict(axis=tuple(_neg(draw, k, len(x)) for k in axes)))


# ---------------------------------------------------------------------------------------------
# transpose, concatenate, repeat, tile
# ---------------------------------------------------------------------------------------------

@st.composite
def transpose(draw):
    x = draw(any_shape)
    attrs = {}
    if draw(st.integers(0, 3)):
        perm = draw(st.permutations(range(len(x))))
        attrs["axes"] = tuple(_neg(draw, k, len(x)) for k in perm)
    return OpCase([Input(x, draw(precisions))], attrs)


@st.composite
def concatenate(draw):
    base = draw(shapes(1, 5, 1, 3))
    ax = draw(st.integers(0, len(base) - 1))
    attrs = {} if ax == 1 and draw(st.booleans()) else dict(axis=_neg(draw, ax, len(base)))
    inputs = []
    for _ in range(draw(st.integers(1, 4))):
        shape = base[:ax] + (draw(st.integers(1, 3)),) + base[ax + 1:]
        inputs.append(Input(shape, draw(st.sampled_from([1, 4, 8, 9, 16, 24, 32]))))
    return OpCase(inputs, attrs)


@st.composite
def repeat(draw):
    x = draw(any_shape)
    attrs = dict(repeats=draw(st.integers(1, 3)))
    ax = draw(st.integers(0, len(x) - 1))
    if ax or draw(st.booleans()):
        attrs["axis"] = _neg(draw, ax, len(x))
    return OpCase([Input(x, draw(precisions))], attrs)


@st.composite
def tile(draw):
    x = draw(shapes(1, 4, 1, 3))
    reps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=5))
    return OpCase([Input(x, draw(precisions))], dict(reps=tuple(reps)))


# ---------------------------------------------------------------------------------------------
# strided_slice, slice_like
# ---------------------------------------------------------------------------------------------

def _spell_begin(draw, cb, dim, s):
    """A raw begin that normalizes and clamps to ``cb``."""
    options = [cb, cb - dim]
    if (s > 0 and cb == 0) or (s < 0 and cb == dim - 1):
        options.append(-dim - 3 if s > 0 else dim + 2)           # clamped from outside
    return draw(st.sampled_from(options))


def _spell_end(draw, ce, dim):
    """A raw end that normalizes and clamps to ``ce`` (ce = -1 only reachable from < -dim)."""
    if ce == -1:
        return draw(st.sampled_from([-dim - 1, -dim - 4]))
    options = [ce] + ([ce - dim] if ce < dim else [dim + 3])
    return draw(st.sampled_from(options))


@st.composite
def strided_slice(draw):
    x = draw(any_shape)
    n = len(x)
    ls, lb, le = (draw(st.integers(0, n)) for _ in range(3))
    begin, end, stride = [], [], []
    for k, dim in enumerate(x):
        s = draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) if k < ls else 1
        s = abs(s) if k >= le else s                           # default end needs s > 0
        cb = 0 if k >= lb else draw(st.integers(0, dim - 1))
        if k >= le:
            ce = dim
        elif s > 0:
            ce = draw(st.integers(cb + 1, dim))
        else:
            ce = -1 if k >= lb else draw(st.integers(-1, cb - 1))
        if k < ls:
            stride.append(s)
        if k < lb:
            begin.append(_spell_begin(draw, cb, dim, s))
        if k < le:
            end.append(_spell_end(draw, ce, dim))
    attrs = dict(begin=tuple(begin), end=tuple(end))
    if stride or draw(st.booleans()):
        attrs["stride"] = tuple(stride)
    return OpCase([Input(x, draw(precisions))], attrs)


@st.composite
def slice_like(draw):
    x = draw(any_shape)
    if draw(st.booleans()):
        like, attrs = tuple(draw(st.integers(1, d)) for d in x), {}
    else:
        axes = draw(st.lists(st.integers(0, len(x) - 1), min_size=1, unique=True))
        extra = draw(shapes(0, 2, 1, 3))
        like = [draw(st.integers(1, 3)) for _ in range(max(axes) + 1)] + list(extra)
        for k in axes:
            like[k] = draw(st.integers(1, x[k]))
        attrs = dict(axis=tuple(_neg(draw, k, len(x)) for k in axes))
    return OpCase([Input(x, draw(precisions)), Input(tuple(like), draw(precisions))], attrs)


# ---------------------------------------------------------------------------------------------
# take, cvm_lut, where
# ---------------------------------------------------------------------------------------------

@st.composite
def take(draw):
    x, idx = draw(shapes(1, 4, 1, 4)), draw(shapes(1, 3, 1, 3))
    axis = draw(st.one_of(st.none(), st.integers(0, len(x) - 1)))
    n = size_of(x) if axis is None else x[axis]
    p_idx = draw(st.integers(precision_for(n + 2), 16))
    attrs = {} if axis is None and draw(st.booleans()) else dict(
        axis=None if axis is None else _neg(draw, axis, len(x)))
    return OpCase([Input(x, draw(precisions)),
                   Input(idx, p_idx, _index_values(draw, size_of(idx), n, p_idx))], attrs)


@st.composite
def cvm_lut(draw):
    table = draw(shapes(1, 2, 1, 16))
    data = draw(shapes(1, 4, 1, 4))
    n = size_of(table)
    p_data = draw(st.integers(precision_for(n + 2), 16))
    return OpCase([Input(data, p_data, _index_values(draw, size_of(data), n, p_data)),
                   Input(table, draw(precisions))], dict(in_dim=n))


@st.composite
def where(draw):
    x = draw(any_shape)
    cond = x if draw(st.booleans()) else x[:1]
    return OpCase([Input(cond, draw(st.integers(1, 8))), Input(x, draw(precisions)),
                   Input(x, draw(precisions))])


CASES = {"reshape": reshape(), "flatten": flatten(), "expand_dims": expand_dims(),
         "squeeze": squeeze(), "transpose": transpose(), "concatenate": concatenate(),
         "repeat": repeat(), "tile": tile(), "strided_slice": strided_slice(),
         "slice_like": slice_like(), "take": take(), "cvm_lut": cvm_lut(), "where": where()}
