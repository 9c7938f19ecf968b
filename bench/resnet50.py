"""ResNet-50-shaped int8 program (bottleneck blocks 3-4-6-3), built like bench/resnet18.py.

    python bench/resnet50.py [--batch 1]      # builds it and prints its facts

Seeded random weights, CVM-style requantization (conv -> cvm_right_shift to p8 -> relu),
residual elemwise_add -> cvm_right_shift -> relu, global average pooling as sum + shift, a
1000-way dense head. The layer log it fills has the same form as ResNet-18's, so
bench/gpu.py can run the same network in PyTorch. A benchmark model, not a test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    return r.residual(y, short)


def build_resnet50(batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0,
                   log: list | None = None):
    """The ResNet-50-shaped int8 program (a vm.Program)."""
    b = Builder("resnet50-int8")
    r = ResNetBuilder(b, seed)
    y, cin = r.stem(b.input("data", (batch, 3, size, size), 8), 64), 64
    for mid, blocks, stride in STAGES:
        for k in range(blocks):
            y = bottleneck(r, y, cin, mid, stride if k == 0 else 1)
            cin = 4 * mid
    b.output(r.head(y, cin, classes, size))
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
