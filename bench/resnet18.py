"""ResNet-18-shaped int8 program at 1x3x224x224: build it, then time load and inference.

    python bench/resnet18.py [--batch 1] [--repeat 10] [--threads N] [--ctx cpu] [--profile]
                             [--json OUT]

Random weights (seeded), CVM-style requantization (conv -> cvm_right_shift to p8 -> relu),
residual adds (elemwise_add p9 -> cvm_right_shift back to p8), global average pooling as
sum + shift, and a 1000-way dense head. ``resnet18_onnx`` writes the float ONNX graph of the
same weights (bench/compare.py times it with ONNX Runtime). A benchmark, not a test.
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
    """Adds CVM-style integer layers to a Builder with seeded random weights, and logs every
    layer (``self.layers``) so that the same network can be written as a float ONNX graph."""

    def __init__(self, b: Builder, seed: int = 0):
        self.b, self.rng, self.k, self.layers = b, np.random.default_rng(seed), 0, []

    def _name(self, kind: str) -> str:
        self.k += 1
        return f"{kind}{self.k}"

    def conv(self, x, cin, cout, k, stride=1, pad=0, relu=True):
        w = self.rng.integers(-127, 128, (cout, cin, k, k), dtype=np.int8)
        bias = self.rng.integers(-2000, 2001, (cout,), dtype=np.int32)
        y = self.b.op("conv2d", x, self.b.const(self._name("w"), w, precision=8),
                      self.b.const(self._name("b"), bias, precision=16), channels=cout,
                      kernel_size=(k, k), strides=(stride, stride), padding=(pad, pad))
        shift = self.shift(cin * k * k)
        y = self.b.op("cvm_right_shift", y, precision=8, shift_bit=shift)
        y = self.b.op("relu", y) if relu else y
        self.layers.append(("conv", x, y, dict(w=w, b=bias, stride=stride, pad=pad,
                                              shift=shift, relu=relu)))
        return y

    @staticmethod
    def shift(fan_in: int) -> int:
        """The requantization shift that keeps the activations' spread through fan_in."""
        return max(1, round(math.log2(math.sqrt(fan_in) * WEIGHT_STD)))

    def block(self, x, cin, cout, stride):
        y = self.conv(x, cin, cout, 3, stride, 1)
        y = self.conv(y, cout, cout, 3, 1, 1, relu=False)
        short = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, 0,
                                                                relu=False)
        return self.residual(y, short)

    def residual(self, y, short):
        """elemwise_add (p9) -> cvm_right_shift back to p8 -> relu."""
        s = self.b.op("elemwise_add", y, short)
        s = self.b.op("cvm_right_shift", s, precision=8, shift_bit=1)
        s = self.b.op("relu", s)
        self.layers.append(("add", (y, short), s, {}))
        return s

    def stem(self, x, width: int):
        """7x7/2 conv (3 -> width), relu, 3x3/2 max pool."""
        y = self.conv(x, 3, width, 7, 2, 3)
        p = self.b.op("max_pool2d", y, pool_size=(3, 3), strides=(2, 2), padding=(1, 1))
        self.layers.append(("maxpool", y, p, {}))
        return p

    def head(self, y, cin: int, classes: int, size: int):
        """Global average pooling (sum + shift) and the dense classifier, requantized."""
        b = self.b
        pooled = b.op("sum", y, axis=(2, 3))
        spatial = math.ceil(size / 32) ** 2
        pooled = b.op("cvm_right_shift", pooled, precision=8,
                      shift_bit=max(1, spatial.bit_length() - 1))
        self.layers.append(("avgpool", y, pooled, {}))
        w = self.rng.integers(-127, 128, (classes, cin), dtype=np.int8)
        bias = self.rng.integers(-2000, 2001, (classes,), dtype=np.int32)
        out = b.op("dense", pooled, b.const("fc_w", w, precision=8),
                   b.const("fc_b", bias, precision=16), units=classes)
        out = b.op("cvm_right_shift", out, precision=8, shift_bit=self.shift(cin))
        self.layers.append(("fc", pooled, out, dict(w=w, b=bias, shift=self.shift(cin))))
        return out


def build_resnet18(batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0,
                   width: int = 64, log: list | None = None):
    """The ResNet-18-shaped int8 program (a vm.Program); stage widths width x (1, 2, 4, 8).
    ``log`` (a list) receives the layer records that :func:`resnet18_onnx` reads."""
    b = Builder("resnet18-int8")
    r = ResNetBuilder(b, seed)
    y, cin = r.stem(b.input("data", (batch, 3, size, size), 8), width), width
    for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
        y = r.block(y, cin, cout, stride)
        y = r.block(y, cout, cout, 1)
        cin = cout
    b.output(r.head(y, cin, classes, size))
    if log is not None:
        log.extend(r.layers)
    return b.build()


def resnet18_onnx(layers: list, size: int = 224, opset: int = 17, ir_version: int = 8):
    """The float ONNX graph (Conv, Relu, MaxPool, Add, GlobalAveragePool, Flatten, Gemm) of
    the logged layers: weights w * 2^-shift, biases b * 2^-shift; batch dimension ``N``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    name = lambda t: "data" if t == "data" else f"t_{t}"

    def weight(tag, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), tag))
        return tag

    for k, (kind, src, dst, p) in enumerate(layers):
        if kind == "conv":
            s = 2.0 ** -p["shift"]
            out = name(dst) + ("_pre" if p["relu"] else "")
            kk = p["w"].shape[2]
            nodes.append(helper.make_node(
                "Conv", [name(src), weight(f"w{k}", p["w"] * s), weight(f"b{k}", p["b"] * s)],
                [out], kernel_shape=[kk, kk], strides=[p["stride"]] * 2, pads=[p["pad"]] * 4))
            if p["relu"]:
                nodes.append(helper.make_node("Relu", [out], [name(dst)]))
        elif kind == "add":
            nodes.append(helper.make_node("Add", [name(src[0]), name(src[1])],
                                          [name(dst) + "_sum"]))
            nodes.append(helper.make_node("Relu", [name(dst) + "_sum"], [name(dst)]))
        elif kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [name(src)], [name(dst)],
                                          kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
        elif kind == "avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", [name(src)], ["gap"]))
            nodes.append(helper.make_node("Flatten", ["gap"], [name(dst)]))
        else:                                                # fc
            s = 2.0 ** -p["shift"]
            nodes.append(helper.make_node(
                "Gemm", [name(src), weight("fc_w", p["w"] * s), weight("fc_b", p["b"] * s)],
                ["logits"], transB=1))
    classes = layers[-1][3]["w"].shape[0]
    graph = helper.make_graph(
        nodes, "resnet18-float",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def profile(model, feeds, repeat: int, grouped: bool = True) -> list[tuple[str, float, int]]:
    """(step kind, seconds, count): the fused steps grouped by ops, output shape and kernel,
    summed per run, the run with the smallest total of ``repeat`` runs, slowest first; with
    ``grouped`` False, each step alone, in plan order."""
    code, tensors = model.program.code, model.program.tensors
    best, rows = None, None
    for _ in range(repeat):
        times, last = [], [time.perf_counter()]

        def trace(step, values):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
        model.plan.run({model.program.inputs[0]: feeds}, trace=trace, fused=True)
        if best is None or sum(times) < best:
            best, rows = sum(times), times
    groups: dict[str, list] = {}
    for k, (step, seconds) in enumerate(zip(model.plan.fast, rows)):
        ops_ = "+".join(dict.fromkeys(code[i].op for i in step.covers))
        shape = "x".join(map(str, tensors[step.outputs[0]].shape[1:]))
        key = f"{'' if grouped else f'{k:3d} '}{ops_} -> {shape} [{type(step.kernel).__name__}]"
        g = groups.setdefault(key, [0.0, 0])
        g[0] += seconds
        g[1] += 1
    found = [(k, s, n) for k, (s, n) in groups.items()]
    return sorted(found, key=lambda r: -r[1]) if grouped else found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", default="cpu")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    t = time.perf_counter()
    data = vm.encode(build_resnet18(args.batch))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    model = vm.load(data, vm.Context(args.ctx), threads=args.threads)
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
    wino = sum(1 for v in model.analysis.winograd.values() if v is not None)
    result = {"model": model.hash, "batch": args.batch, "ctx": args.ctx,
              "threads": args.threads, "bytes": len(data), "build_s": build_s,
              "load_validate_s": load_s, "latency_min_s": min(times),
              "latency_median_s": statistics.median(times), "gas": model.gas,
              "peak_memory": model.peak_memory, "gemm_paths": dict(paths), "winograd": wino}
    print(f"ResNet-18-shaped int8, batch {args.batch}, {args.ctx}, threads {args.threads}: "
          f"min {result['latency_min_s'] * 1e3:.1f} ms, median "
          f"{result['latency_median_s'] * 1e3:.1f} ms over {args.repeat} runs; "
          f"load+validate {load_s * 1e3:.0f} ms; model {len(data) / 1e6:.1f} MB; "
          f"whole-sum GEMM licences {dict(paths)}; Winograd convs {wino}")
    if args.profile and args.ctx == "cpu":
        rows = profile(model, x, max(5, args.repeat))
        print("| step (fused ops -> output shape [kernel]) | count | ms | share |\n|---|---|---|---|")
        total = sum(r[1] for r in rows)
        for key, s, n in rows:
            print(f"| {key} | {n} | {s * 1e3:.2f} | {s / total:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
