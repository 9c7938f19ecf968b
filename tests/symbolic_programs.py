"""Random programs with a symbolic batch, for the tests: a random recipe is built twice, at two
batch sizes, with the Builder (batch-dependent attributes written as plain numbers), and
compiler/symbolize.py turns the two builds into one program with the symbol N."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from compiler import Builder
from compiler.symbolize import build_symbolic
from ops.base import bound


class Replay:
    """Draws from hypothesis on the first build, the same values again on later builds."""

    def __init__(self, data):
        self.data, self.values, self.pos, self.recording = data, [], 0, True

    def __call__(self, strategy):
        if self.recording:
            value = self.data.draw(strategy)
            self.values.append(value)
            return value
        value = self.values[self.pos]
        self.pos += 1
        return value

    def again(self):
        self.recording, self.pos = False, 0


def symbolic_program(data, max_batch: int = 6):
    """A validated program with one symbol N <= max_batch (hypothesis ``data``)."""
    draw = Replay(data)
    builds = []

    def build(dims):
        if builds:
            draw.again()
        builds.append(dims)
        return _build(draw, dims["N"], draw(st.integers(1, 6)))

    return build_symbolic(build, {"N": max_batch})


def _const(draw, b, name, shape, p):
    n = int(np.prod(shape))
    values = draw(st.lists(st.integers(-bound(p), bound(p)), min_size=n, max_size=n))
    return b.const(name, np.array(values, dtype=np.int64).reshape(shape), precision=p)


def _build(draw, n: int, steps: int):
    b = Builder("batched")
    image = draw(st.booleans())
    rest = (draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(2, 4))) \
        if image else (draw(st.integers(1, 6)),)
    cur = b.input("x", (n, *rest), draw(st.integers(2, 8)))
    if draw(st.booleans()):             # an unbatched input, broadcast over the rows
        shared = b.input("s", (1, *rest), draw(st.integers(1, 8)))
        cur = b.op("broadcast_add", cur, shared)
    for k in range(steps):
        cur = _step(draw, b, cur, n, k)
    b.output(cur)
    return b.build()


def _step(draw, b, cur, n, k):
    t = b.tensor(cur)
    if t.precision > 8:
        return b.op("cvm_right_shift", cur, precision=draw(st.integers(2, 8)),
                    shift_bit=draw(st.integers(1, 8)))
    if len(t.shape) == 4:
        choice = draw(st.sampled_from(["conv2d", "relu", "max_pool2d", "bias", "transpose",
                                       "flatten", "reshape", "pad", "sum", "concatenate"]))
        return _image_step(draw, b, cur, t, n, k, choice)
    choice = draw(st.sampled_from(["dense", "relu", "slice", "argmax", "requantize", "take",
                                   "add", "sum"]))
    return _vector_step(draw, b, cur, t, n, k, choice)


def _image_step(draw, b, cur, t, n, k, choice):
    _, c, h, w = t.shape
    if choice == "conv2d":
        oc, ks = draw(st.integers(1, 3)), draw(st.integers(1, min(h, w, 3)))
        wt = _const(draw, b, f"w{k}", (oc, c, ks, ks), draw(st.integers(1, 8)))
        return b.conv2d(cur, wt, channels=oc, kernel_size=ks, use_bias=False,
                        padding=draw(st.integers(0, ks - 1)))
    if choice == "max_pool2d":
        return b.op("max_pool2d", cur, pool_size=draw(st.integers(1, min(h, w))))
    if choice == "bias":
        return b.op("broadcast_add", cur, _const(draw, b, f"c{k}", (1, c, 1, 1), 8))
    if choice == "transpose":
        return b.op("transpose", cur, axes=(0, 1, 3, 2))
    if choice == "flatten":
        return b.op("flatten", cur)
    if choice == "reshape":
        return b.op("reshape", cur, shape=(n, c * h * w))
    if choice == "pad":
        return b.op("pad", cur, pads=(0, 0, 1, 0, 0, 0, 0, 1), value=draw(st.integers(-3, 3)))
    if choice == "sum":
        return b.op("sum", cur, axis=(2, 3), keepdims=True)
    if choice == "concatenate":
        return b.op("concatenate", cur, cur, axis=1)
    return b.op(choice, cur)


def _vector_step(draw, b, cur, t, n, k, choice):
    f = t.shape[1]
    if choice == "dense":
        units = draw(st.integers(1, 4))
        return b.dense(cur, _const(draw, b, f"w{k}", (units, f), draw(st.integers(1, 8))),
                       units=units, use_bias=False)
    if choice == "slice" and f > 1:
        lo = draw(st.integers(0, f - 1))
        return b.op("strided_slice", cur, begin=(0, lo), end=(n, f))
    if choice == "argmax":
        return b.op("argmax", cur, axis=1)
    if choice == "requantize":
        return b.op("requantize", cur, multiplier=(draw(st.integers(1, 1 << 20)),),
                    shift=(draw(st.integers(0, 24)),), qmin=-127, qmax=127)
    if choice == "take":
        idx = _const(draw, b, f"i{k}", (draw(st.integers(1, 3)),), 8)
        return b.op("take", cur, idx, axis=1)
    if choice == "add":
        return b.op("elemwise_add", cur, cur)
    if choice == "sum":
        return b.op("sum", cur, axis=(1,), keepdims=True)
    return b.op("relu", cur)
