"""ResNet-50-shaped int8 program (bottleneck blocks 3-4-6-3), built like bench/resnet18.py.

    python bench/resnet50.py [--batch 1]      # builds it and prints its facts

Seeded random weights, CVM-style requantization (conv -> cvm_right_shift to p8 -> relu),
residual elemwise_add -> cvm_right_shift -> relu, global average pooling as sum + shift, a
1000-way dense head. The layer log it fills has the same form as ResNet-18's, so
bench/gpu.py can run the same network in PyTorch. A benchmark model, not a test.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import vm  # noqa: E402
from compiler import Builder  # noqa: E402
from resnet18 import ResNetBuilder  # noqa: E402

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def bottleneck(r: ResNetBuilder, x, cin: int, mid: int, stride: int):
    """1x1 (cin -> mid), 3x3 (stride), 1x1 (mid -> 4 mid), plus the shortcut; then add."""
    y = r.conv(x, cin, mid, 1)
    y = r.conv(y, mid, mid, 3, stride, 1)
    y = r.conv(y, mid, 4 * mid, 1, relu=False)
    short = x if stride == 1 and cin == 4 * mid else r.conv(x, cin, 4 * mid, 1, stride,
                                                            relu=False)
    s = r.b.op("elemwise_add", y, short)
    s = r.b.op("cvm_right_shift", s, precision=8, shift_bit=1)
    s = r.b.op("relu", s)
    r.layers.append(("add", (y, short), s, {}))
    return s


def build_resnet50(batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0,
                   log: list | None = None):
    """The ResNet-50-shaped int8 program (a vm.Program)."""
    b = Builder("resnet50-int8")
    r = ResNetBuilder(b, seed)
    x = b.input("data", (batch, 3, size, size), 8)
    y = r.conv(x, 3, 64, 7, 2, 3)
    p = b.op("max_pool2d", y, pool_size=(3, 3), strides=(2, 2), padding=(1, 1))
    r.layers.append(("maxpool", y, p, {}))
    y, cin = p, 64
    for mid, blocks, stride in STAGES:
        for k in range(blocks):
            y = bottleneck(r, y, cin, mid, stride if k == 0 else 1)
            cin = 4 * mid
    pooled = b.op("sum", y, axis=(2, 3))
    spatial = math.ceil(size / 32) ** 2
    pooled = b.op("cvm_right_shift", pooled, precision=8,
                  shift_bit=max(1, spatial.bit_length() - 1))
    r.layers.append(("avgpool", y, pooled, {}))
    w = r.rng.integers(-127, 128, (classes, cin), dtype=np.int8)
    bias = r.rng.integers(-2000, 2001, (classes,), dtype=np.int32)
    out = b.op("dense", pooled, b.const("fc_w", w, precision=8),
               b.const("fc_b", bias, precision=16), units=classes)
    out = b.op("cvm_right_shift", out, precision=8, shift_bit=r.shift(cin))
    r.layers.append(("fc", pooled, out, dict(w=w, b=bias, shift=r.shift(cin))))
    b.output(out)
    if log is not None:
        log.extend(r.layers)
    return b.build()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    model = vm.load(build_resnet50(args.batch))
    convs = sum(1 for i in model.program.code if i.op == "conv2d")
    print(f"{model.name}: {convs} conv2d, {len(model.program.code)} instructions, "
          f"gas {model.gas}, {len(model.to_bytes()) / 1e6:.1f} MB, hash {model.hash[:16]}")
