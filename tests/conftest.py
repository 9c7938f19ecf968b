"""Shared fixtures: small programs built with the compiler's Builder."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import Builder


def small_cnn(batch: int = 2, seed: int = 0):
    """conv2d(bias) -> cvm_right_shift -> relu -> max_pool2d -> flatten -> dense -> shift."""
    rng = np.random.default_rng(seed)
    b = Builder("small-cnn")
    b.meta("purpose", "tests")
    x = b.input("x", (batch, 3, 8, 8), 8)
    w = b.const("w1", rng.integers(-127, 128, (4, 3, 3, 3)), precision=8)
    bias = b.const("b1", rng.integers(-500, 501, (4,)), precision=12)
    y = b.op("conv2d", x, w, bias, channels=4, kernel_size=(3, 3), padding=(1, 1))
    y = b.op("cvm_right_shift", y, precision=8, shift_bit=9)
    y = b.op("relu", y)
    y = b.op("max_pool2d", y, pool_size=(2, 2), strides=(2, 2))
    y = b.op("flatten", y)
    w2 = b.const("w2", rng.integers(-127, 128, (10, 64)), precision=8)
    y = b.op("dense", y, w2, units=10, use_bias=False)
    y = b.op("cvm_right_shift", y, precision=8, shift_bit=8, outputs=["logits"])
    b.output(y)
    return b.build()


def random_input(model, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for t in model.inputs:
        r = (1 << (t.precision - 1)) - 1
        out[t.name] = rng.integers(-r, r + 1, t.shape).astype(t.dtype)
    return out


@pytest.fixture
def cnn_program():
    return small_cnn()


@pytest.fixture(scope="module")
def numpy_backend():
    """The default CPU backend lowers nothing in this module: tests of the numpy executor's
    own plans and kernels."""
    from vm.ort import plan
    saved, plan.AUTO = plan.AUTO, plan.NOTHING
    yield
    plan.AUTO = saved
