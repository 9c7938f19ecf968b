"""A small CNN for scikit-learn's 8x8 digits, trained with numpy only, exported to ONNX.

    conv 3x3 (1->8, pad 1) - relu - maxpool 2 - conv 3x3 (8->16, pad 1) - relu - maxpool 2
    - flatten (64) - gemm (64->10)

Used by examples/train_digits.py. Deterministic for a given seed (numpy's default_rng).
"""
from __future__ import annotations

import numpy as np

OPSET, IR_VERSION = 17, 8
"""onnx 1.23 writes IR 14 / opset 28 by default; onnxruntime 1.31 reads at most 13 / 26."""


def _cols(x, k=3, pad=1):
    """im2col: [N, C, H, W] -> [N, C*k*k, H*W] (stride 1, 'same' padding)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.stack([xp[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=2)
    return cols.reshape(n, c * k * k, h * w)


def _uncols(dcols, shape, k=3, pad=1):
    n, c, h, w = shape
    d = dcols.reshape(n, c, k * k, h, w)
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dcols.dtype)
    for t in range(k * k):
        i, j = divmod(t, k)
        out[:, :, i:i + h, j:j + w] += d[:, :, t]
    return out[:, :, pad:pad + h, pad:pad + w]


class DigitsCNN:
    """Parameters and a hand-written forward/backward pass (float32)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        he = lambda fan_in, *shape: (rng.normal(0, np.sqrt(2 / fan_in), shape)).astype(np.float32)
        self.p = {"w1": he(9, 8, 1, 3, 3), "b1": np.zeros(8, np.float32),
                  "w2": he(72, 16, 8, 3, 3), "b2": np.zeros(16, np.float32),
                  "wd": he(64, 10, 64), "bd": np.zeros(10, np.float32)}

    def _conv(self, x, w, b):
        cols = _cols(x)
        y = np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols, optimize=True)
        return (y + b[None, :, None]).reshape(x.shape[0], w.shape[0], *x.shape[2:]), cols

    @staticmethod
    def _pool(x):
        n, c, h, w = x.shape
        r = x.reshape(n, c, h // 2, 2, w // 2, 2)
        y = r.max(axis=(3, 5))
        mask = r == y[:, :, :, None, :, None]
        return y, (mask / mask.sum(axis=(3, 5), keepdims=True)).astype(np.float32)

    def forward(self, x):
        p, t = self.p, {}
        t["c1"], t["cols1"] = self._conv(x, p["w1"], p["b1"])
        t["p1"], t["m1"] = self._pool(np.maximum(t["c1"], 0))
        t["c2"], t["cols2"] = self._conv(t["p1"], p["w2"], p["b2"])
        t["p2"], t["m2"] = self._pool(np.maximum(t["c2"], 0))
        t["f"] = t["p2"].reshape(len(x), -1)
        return t["f"] @ p["wd"].T + p["bd"], t

    def grads(self, x, y):
        """Mean softmax cross-entropy gradients of a batch."""
        logits, t = self.forward(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        d = e / e.sum(axis=1, keepdims=True)
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        p, g = self.p, {}
        g["wd"], g["bd"] = d.T @ t["f"], d.sum(0)
        dp2 = (d @ p["wd"]).reshape(t["p2"].shape)
        dc2 = self._unpool(dp2, t["m2"]) * (t["c2"] > 0)
        g["w2"], g["b2"], dp1 = self._conv_back(dc2, t["cols2"], p["w2"], t["p1"].shape)
        dc1 = self._unpool(dp1, t["m1"]) * (t["c1"] > 0)
        g["w1"], g["b1"], _ = self._conv_back(dc1, t["cols1"], p["w1"], x.shape)
        return g

    @staticmethod
    def _unpool(d, mask):
        return (d[:, :, :, None, :, None] * mask).reshape(
            d.shape[0], d.shape[1], d.shape[2] * 2, d.shape[3] * 2)

    @staticmethod
    def _conv_back(dy, cols, w, x_shape):
        n, o = dy.shape[:2]
        dyf = dy.reshape(n, o, -1)
        dw = np.einsum("nop,nkp->ok", dyf, cols, optimize=True).reshape(w.shape)
        dcols = np.einsum("ok,nop->nkp", w.reshape(o, -1), dyf, optimize=True)
        return dw, dyf.sum(axis=(0, 2)), _uncols(dcols, x_shape)

    def train(self, x, y, epochs: int = 40, batch: int = 32, lr: float = 3e-3, seed: int = 0):
        """Adam on shuffled mini-batches."""
        rng = np.random.default_rng(seed)
        m = {k: np.zeros_like(v) for k, v in self.p.items()}
        v = {k: np.zeros_like(a) for k, a in self.p.items()}
        step = 0
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for s in range(0, len(x), batch):
                idx = order[s:s + batch]
                step += 1
                for k, gk in self.grads(x[idx], y[idx]).items():
                    m[k] = 0.9 * m[k] + 0.1 * gk
                    v[k] = 0.999 * v[k] + 0.001 * gk * gk
                    mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                    self.p[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)

    def onnx_model(self):
        """The float model as ONNX: input ``image`` [N, 1, 8, 8], output ``logits`` [N, 10]."""
        from onnx import TensorProto, helper, numpy_helper
        h = helper
        nodes = [h.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1],
                             kernel_shape=[3, 3]),
                 h.make_node("Relu", ["c1"], ["r1"]),
                 h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
                 h.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                             kernel_shape=[3, 3]),
                 h.make_node("Relu", ["c2"], ["r2"]),
                 h.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
                 h.make_node("Flatten", ["p2"], ["f"]),
                 h.make_node("Gemm", ["f", "wd", "bd"], ["logits"], transB=1)]
        inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in self.p.items()]
        graph = h.make_graph(
            nodes, "digits-cnn",
            [h.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
            [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
        return h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                            ir_version=IR_VERSION, producer_name="detvm-examples")
