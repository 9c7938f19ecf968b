"""Law-suite cases for ops/nn.py."""
import hypothesis.strategies as st

from . import Input, OpCase


@st.composite
def conv2d(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, ocg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 1 + (kh - 1) * dh - 2 * ph), 7))
    w = draw(st.integers(max(1, 1 + (kw - 1) * dw - 2 * pw), 7))
    n = draw(st.integers(1, 2))
    use_bias = draw(st.booleans())
    p0, p1 = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    inputs = [Input((n, cg * groups, h, w), p0), Input((ocg * groups, cg, kh, kw), p1)]
    if use_bias:
        inputs.append(Input((ocg * groups,), draw(st.integers(1, 24))))
    return OpCase(inputs, dict(channels=ocg * groups, kernel_size=(kh, kw), strides=(sh, sw),
                               padding=(ph, pw), dilation=(dh, dw), groups=groups,
                               use_bias=use_bias))


@st.composite
def dense(draw):
    m, k, units = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    use_bias = draw(st.booleans())
    inputs = [Input((m, k), draw(st.integers(1, 8))), Input((units, k), draw(st.integers(1, 8)))]
    if use_bias:
        inputs.append(Input((units,), draw(st.integers(1, 24))))
    return OpCase(inputs, dict(units=units, use_bias=use_bias))


@st.composite
def max_pool2d(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    attrs = dict(pool_size=(kh, kw), strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                 padding=(ph, pw), ceil_mode=draw(st.booleans()))
    oh_ok = lambda size, pad, k, s: ((size + 2 * pad - k + (s - 1 if attrs["ceil_mode"] else 0))
                                     // s) * s - pad < size
    if not (oh_ok(h, ph, kh, attrs["strides"][0]) and oh_ok(w, pw, kw, attrs["strides"][1])):
        attrs["ceil_mode"] = False
    return OpCase([Input((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
                         draw(st.integers(1, 16)))], attrs)


@st.composite
def upsampling(draw):
    shape = tuple(draw(st.integers(1, 3)) for _ in range(4))
    return OpCase([Input(shape, draw(st.integers(1, 16)))], dict(scale=draw(st.integers(1, 3))))


@st.composite
def relu(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    return OpCase([Input(shape, draw(st.integers(1, 32)))])


CASES = {"conv2d": conv2d(), "dense": dense(), "max_pool2d": max_pool2d(),
         "upsampling": upsampling(), "relu": relu()}
