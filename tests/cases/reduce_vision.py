"""Law-suite cases for ops/reduce.py (sum, max) and ops/vision.py (get_valid_counts, NMS)."""
import hypothesis.strategies as st

from ops.base import bitlen, bound, size_of
from ops.reduce import reduce_shape

from . import Input, OpCase, values_for

INT32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# sum / max
# ---------------------------------------------------------------------------------------------

@st.composite
def reduce_attrs(draw, ndim):
    """A subset of the axes, each written positive or negative, in any order."""
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    axis = tuple(d - ndim if draw(st.booleans()) else d for d in chosen)
    return dict(axis=axis, keepdims=draw(st.booleans()), exclude=draw(st.booleans()))


@st.composite
def reduction(draw, is_sum):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
    attrs = draw(reduce_attrs(len(shape)))
    fold = size_of(shape) // size_of(reduce_shape(shape, attrs))
    p = draw(st.integers(1, 32 - bitlen(fold) if is_sum else 32))
    values = None
    if p >= 2 and draw(st.integers(0, 3)) == 0:   # all-negative data (CVM's full-max bug)
        r = bound(p)
        values = draw(st.lists(st.one_of(st.integers(-r, -1), st.sampled_from([-r, -1])),
                               min_size=size_of(shape), max_size=size_of(shape)))
    return OpCase([Input(shape, p, values)], attrs)


# ---------------------------------------------------------------------------------------------
# get_valid_counts
# ---------------------------------------------------------------------------------------------

@st.composite
def get_valid_counts(draw):
    b, n, k = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(2, 31))
    if k > 7 and draw(st.booleans()):
        k = draw(st.integers(2, 7))
    p = draw(st.integers(1, 32))
    values = draw(values_for((b, n, k), p))
    if p > 2 and draw(st.booleans()):   # few distinct scores so thresholds hit ties
        small = st.integers(-2, 2)
        for row in range(b * n):
            values[row * k + 1] = draw(small)
    scores = [values[row * k + 1] for row in range(b * n)]
    threshold = draw(st.one_of(
        st.builds(lambda s, d: s + d, st.sampled_from(scores), st.integers(-1, 1)),
        st.sampled_from([0, -INT32_MAX, INT32_MAX]),
        st.integers(-INT32_MAX, INT32_MAX)))
    threshold = max(-INT32_MAX, min(INT32_MAX, threshold))
    return OpCase([Input((b, n, k), p, values)], dict(score_threshold=threshold))


# ---------------------------------------------------------------------------------------------
# non_max_suppression
# ---------------------------------------------------------------------------------------------

@st.composite
def box_row(draw, unit, anchors):
    """(id, score, x1, y1, x2, y2): a jittered anchor box scaled by ``unit``, mostly proper,
    sometimes degenerate (zero or negative width or height)."""
    box_id = draw(st.sampled_from([0, 0, 0, 1, 1, -1]))
    score = draw(st.integers(-2, 4))
    x1, y1, w, h = draw(st.sampled_from(anchors))
    jitter = st.sampled_from([0, 0, 0, 1, -1])
    x1, y1, w, h = (x1 + draw(jitter), y1 + draw(jitter), w + draw(jitter), h + draw(jitter))
    if draw(st.integers(0, 9)) == 0:
        w, h = draw(st.integers(-3, 0)), draw(st.integers(-3, 6))
    return [box_id, score, x1 * unit, y1 * unit, (x1 + w) * unit, (y1 + h) * unit]


@st.composite
def non_max_suppression(draw, max_n: int = 7):
    b, n = draw(st.integers(1, 3)), draw(st.integers(1, max_n))
    p = draw(st.one_of(st.integers(1, 4), st.integers(5, 12), st.integers(13, 32),
                        st.integers(28, 32)))
    if p >= 5:
        r = bound(p)
        unit = draw(st.sampled_from([u for u in (1, 2, 1 << 10, 1 << 24, 1 << 27)
                                     if 12 * u <= r]))
        anchor = st.tuples(st.integers(-5, 5), st.integers(-5, 5), st.integers(1, 5),
                           st.integers(1, 5))
        anchors = draw(st.lists(anchor, min_size=1, max_size=3))
        rows = [draw(box_row(unit, anchors)) for _ in range(b * n)]
        if n > 1 and draw(st.booleans()):   # exact duplicates of a row: stability, iou 100
            rows[-1] = list(rows[0])
        values = [v for row in rows for v in row]
    else:
        values = draw(values_for((b, n, 6), p))
    counts = draw(st.lists(st.sampled_from([-3, -1, 0, 1, n // 2, n - 1, n, n + 1, n + 5]),
                           min_size=b, max_size=b))
    limits = st.sampled_from([-1, -1, -5, 0, 1, 2, 3, n])
    attrs = dict(iou_threshold=draw(st.sampled_from([1, 10, 30, 50, 50, 70, 100, 101, 1000])),
                 max_output_size=draw(limits), top_k=draw(limits),
                 force_suppress=draw(st.booleans()))
    if draw(st.booleans()):
        attrs.update(coord_start=2, score_index=1, id_index=0, return_indices=False,
                     invalid_to_bottom=True)
    return OpCase([Input((b, n, 6), p, values), Input((b,), draw(st.integers(5, 16)), counts)],
                  attrs)


CASES = {"sum": reduction(True), "max": reduction(False),
         "get_valid_counts": get_valid_counts(), "non_max_suppression": non_max_suppression()}
