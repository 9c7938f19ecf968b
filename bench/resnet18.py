"""ResNet-18-shaped int8 program at 1x3x224x224: build it, then time load and inference.

    python bench/resnet18.py [--batch 1] [--repeat 10] [--ctx cpu] [--profile] [--json OUT]

Random weights (seeded), CVM-style requantization (conv -> cvm_right_shift to p8 -> relu),
residual adds (elemwise_add p9 -> cvm_right_shift back to p8), global average pooling as
sum + shift, and a 1000-way dense head. A benchmark, not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vm  # noqa: E402
from compiler import Builder  # noqa: E402

WEIGHT_STD = 73.0   # std of uniform integers in [-127, 127]: a shift of log2(sqrt(K) * 73)
                    # keeps an activation's spread through a conv of fan-in K


class ResNetBuilder:
    """Adds CVM-style integer layers to a Builder with seeded random weights."""

    def __init__(self, b: Builder, seed: int = 0):
        self.b, self.rng, self.k = b, np.random.default_rng(seed), 0

    def _name(self, kind: str) -> str:
        self.k += 1
        return f"{kind}{self.k}"

    def conv(self, x, cin, cout, k, stride=1, pad=0, relu=True):
        w = self.b.const(self._name("w"), self.rng.integers(-127, 128, (cout, cin, k, k),
                                                            dtype=np.int8), precision=8)
        bias = self.b.const(self._name("b"), self.rng.integers(-2000, 2001, (cout,),
                                                               dtype=np.int32), precision=16)
        y = self.b.op("conv2d", x, w, bias, channels=cout, kernel_size=(k, k),
                      strides=(stride, stride), padding=(pad, pad))
        y = self.requant(y, cin * k * k)
        return self.b.op("relu", y) if relu else y

    def requant(self, y, fan_in):
        """cvm_right_shift to p8 with a shift that keeps the activations' spread."""
        shift = max(1, round(math.log2(math.sqrt(fan_in) * WEIGHT_STD)))
        return self.b.op("cvm_right_shift", y, precision=8, shift_bit=shift)

    def block(self, x, cin, cout, stride):
        y = self.conv(x, cin, cout, 3, stride, 1)
        y = self.conv(y, cout, cout, 3, 1, 1, relu=False)
        short = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, 0,
                                                                relu=False)
        s = self.b.op("elemwise_add", y, short)
        s = self.b.op("cvm_right_shift", s, precision=8, shift_bit=1)
        return self.b.op("relu", s)


def build_resnet18(batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0):
    """The ResNet-18-shaped int8 program (a vm.Program)."""
    b = Builder("resnet18-int8")
    r = ResNetBuilder(b, seed)
    x = b.input("data", (batch, 3, size, size), 8)
    y = r.conv(x, 3, 64, 7, 2, 3)
    y = b.op("max_pool2d", y, pool_size=(3, 3), strides=(2, 2), padding=(1, 1))
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        y = r.block(y, cin, cout, stride)
        y = r.block(y, cout, cout, 1)
        cin = cout
    y = b.op("sum", y, axis=(2, 3))
    spatial = (size // 32) ** 2
    y = b.op("cvm_right_shift", y, precision=8, shift_bit=max(1, spatial.bit_length() - 1))
    w = b.const("fc_w", r.rng.integers(-127, 128, (classes, 512), dtype=np.int8), precision=8)
    bias = b.const("fc_b", r.rng.integers(-2000, 2001, (classes,), dtype=np.int32),
                   precision=16)
    y = b.op("dense", y, w, bias, units=classes)
    y = r.requant(y, 512)
    b.output(y)
    return b.build()


def profile(model, feeds, repeat: int) -> list[tuple[str, float]]:
    """Seconds per op kind, summed over the instructions, median over ``repeat`` runs."""
    per_op = defaultdict(list)
    for _ in range(repeat):
        totals, last = defaultdict(float), [time.perf_counter()]

        def trace(step, values):
            now = time.perf_counter()
            totals[model.program.code[step.index].op] += now - last[0]
            last[0] = now
        model.run(feeds, trace=trace)
        for k, v in totals.items():
            per_op[k].append(v)
    return sorted(((k, statistics.median(v)) for k, v in per_op.items()), key=lambda kv: -kv[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--ctx", default="cpu")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    t = time.perf_counter()
    data = vm.encode(build_resnet18(args.batch))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    model = vm.load(data, vm.Context(args.ctx))
    load_s = time.perf_counter() - t
    x = np.random.default_rng(1).integers(-127, 128, model.inputs[0].shape, dtype=np.int8)
    model.run(x)  # warm-up
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t)
    paths = defaultdict(int)
    for g in model.analysis.gemm.values():
        paths[g] += 1
    result = {"model": model.hash, "batch": args.batch, "ctx": args.ctx,
              "bytes": len(data), "build_s": build_s, "load_validate_s": load_s,
              "latency_min_s": min(times), "latency_median_s": statistics.median(times),
              "gas": model.gas, "peak_memory": model.peak_memory, "gemm_paths": dict(paths)}
    print(f"ResNet-18-shaped int8, batch {args.batch}, {args.ctx}: "
          f"min {result['latency_min_s'] * 1e3:.1f} ms, median "
          f"{result['latency_median_s'] * 1e3:.1f} ms over {args.repeat} runs; "
          f"load+validate {load_s * 1e3:.0f} ms; model {len(data) / 1e6:.1f} MB; "
          f"GEMM paths {dict(paths)}")
    if args.profile:
        for op, s in profile(model, x, 3):
            print(f"  {op:<18} {s * 1e3:8.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
