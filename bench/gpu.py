"""detvm on the GPU (cupy) against PyTorch CUDA fp32, in one process run on the device.

    python bench/gpu.py [--models resnet18 resnet50] [--batches 1 32 256] [--repeat 20]
                        [--json OUT]

For each model (the ResNet-18- and ResNet-50-shaped int8 programs of bench/, seeded random
weights) and batch: detvm ``vm.gpu()`` latency (inputs and outputs cross the bus inside the
timing, as a user sees it), PyTorch fp32 on the same network (weights w * 2^-shift, TF32 off)
and, where onnxruntime has a CUDA provider, ORT fp32 on the float ONNX graph. Bit-exactness
of the GPU against the CPU executor is checked on the same inputs at batch 1 (and 32 for
ResNet-18). Prints a markdown table; writes JSON. A benchmark, not a test: it needs cupy, a
CUDA device and (for the comparison) torch.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import vm  # noqa: E402
from compare import timed  # noqa: E402
from resnet18 import build_resnet18  # noqa: E402
from resnet50 import build_resnet50  # noqa: E402

BUILDERS = {"resnet18": build_resnet18, "resnet50": build_resnet50}
LIMITS = vm.Limits(max_memory=64 << 30, max_gas=1 << 50)
CPU_CHECK = {("resnet18", 1), ("resnet18", 32), ("resnet50", 1)}


def torch_model(layers: list):
    """A callable running the logged layers in PyTorch fp32 on CUDA (TF32 off)."""
    import torch
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    params = []
    for kind, src, dst, p in layers:
        if kind in ("conv", "fc"):
            s = 2.0 ** -p["shift"]
            w = torch.tensor(p["w"].astype(np.float32) * s, device=dev)
            b = torch.tensor(p["b"].astype(np.float32) * s, device=dev)
            params.append((w, b))
        else:
            params.append(None)

    @torch.no_grad()
    def run(x):
        env = {"data": x}
        for (kind, src, dst, p), wb in zip(layers, params):
            if kind == "conv":
                y = F.conv2d(env[src], wb[0], wb[1], stride=p["stride"], padding=p["pad"])
                env[dst] = F.relu(y) if p["relu"] else y
            elif kind == "maxpool":
                env[dst] = F.max_pool2d(env[src], 3, 2, 1)
            elif kind == "add":
                env[dst] = F.relu((env[src[0]] + env[src[1]]) * 0.5)
            elif kind == "avgpool":
                env[dst] = env[src].mean(dim=(2, 3))
            else:
                env[dst] = F.linear(env[src], wb[0], wb[1])
        return env[layers[-1][2]]
    return run


def bench_one(name: str, batch: int, repeat: int) -> dict:
    import cupy
    log: list = []
    program = BUILDERS[name](batch=batch, log=log)
    t = time.perf_counter()
    gpu = vm.load(program, vm.gpu(), limits=LIMITS)
    load_s = time.perf_counter() - t
    x = np.random.default_rng(batch).integers(-127, 128, gpu.inputs[0].shape, dtype=np.int8)
    row = {"model": name, "batch": batch, "load_validate_s": load_s,
           "detvm_gpu": timed(lambda: gpu.run(x), repeat, cupy.cuda.Device().synchronize)}
    out = gpu.run(x)
    if (name, batch) in CPU_CHECK:
        cpu = vm.load(program, vm.cpu(), limits=LIMITS).run(x)
        row["bit_exact_vs_cpu"] = all(out[k].tobytes() == cpu[k].tobytes() for k in out)
    try:
        import torch
        fn = torch_model(log)
        xt = torch.tensor(x.astype(np.float32), device="cuda")
        row["torch_fp32"] = timed(lambda: fn(xt), repeat, torch.cuda.synchronize)
    except ImportError as e:
        row["torch_fp32"] = {"skipped": f"torch not installed: {e}"}
    return row


def table(rows: list) -> str:
    lines = ["| model | batch | detvm gpu min / median (ms) | torch fp32 min (ms) | "
             "detvm/torch | throughput ratio | bit-exact vs cpu |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d, t = r["detvm_gpu"], r.get("torch_fp32", {})
        ratio = d["min_ms"] / t["min_ms"] if "min_ms" in t else float("nan")
        lines.append(f"| {r['model']} | {r['batch']} | {d['min_ms']:.2f} / "
                     f"{d['median_ms']:.2f} | "
                     + (f"{t['min_ms']:.2f}" if "min_ms" in t else "n/a")
                     + f" | {ratio:.2f}x | {1 / ratio:.2f}x | "
                     f"{r.get('bit_exact_vs_cpu', 'not checked')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32, 256])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    rows = [bench_one(m, b, args.repeat) for m in args.models for b in args.batches]
    print(f"device: {props['name'].decode()}, cupy {cupy.__version__}, host "
          f"{platform.processor() or platform.machine()}\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": props["name"].decode(), "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
