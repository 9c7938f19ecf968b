"""Law-suite cases for ops/post.py (topk, ctc_greedy_decode): ties drawn on purpose."""
import hypothesis.strategies as st

from . import Input, OpCase, shapes


@st.composite
def topk(draw):
    shape = draw(shapes(1, 3, 1, 5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    k = draw(st.integers(1, shape[axis]))
    p = draw(st.sampled_from([2, 3, 8, 16]))        # small precisions: many equal values
    return OpCase([Input(shape, p)], dict(k=k, axis=axis, largest=draw(st.booleans())))


@st.composite
def ctc_greedy_decode(draw):
    n, t, c = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    return OpCase([Input((n, t, c), draw(st.sampled_from([2, 3, 8])))],
                  dict(blank=draw(st.integers(0, c - 1)),
                       merge_repeated=draw(st.booleans())))


CASES = {"topk": topk(), "ctc_greedy_decode": ctc_greedy_decode()}
