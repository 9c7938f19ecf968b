"""Where a real-model slice's time goes: detvm's fused steps against onnxruntime int8's nodes.

    python bench/slice_profile.py [--model yolov8n-320] [--threads 1] [--repeat 40]

The slice of bench/slices.py (the model's first six convolutions, quantized as ``detvm
quantize`` does), batch 1, on the float input compare.py uses. detvm: each fused step of the
plan (vm/ort sessions and numpy kernels), from the run with the smallest total of
``--repeat``, in plan order. onnxruntime int8 (its default session, graph optimizations on, threads not
spinning): each node's kernel time from onnxruntime's own profiler, the lower quartile of the
runs. Both whole-call minima are printed first, taken in alternating turns.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import vm  # noqa: E402
from compare import detvm_feeds  # noqa: E402
from resnet18 import profile  # noqa: E402
from slices import SLICES, quantized_slice  # noqa: E402


def ort_session(path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_nodes(path: Path, feeds: dict, threads: int, repeat: int, tmp: Path) -> list:
    """(node, op type, microseconds: the lower quartile over ``repeat`` runs), graph order."""
    session = ort_session(path, threads, str(tmp / "ort"))
    for _ in range(repeat):
        session.run(None, feeds)
    times: dict[tuple, list] = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"][:-len("_kernel_time")], event["args"].get("op_name", ""))
            times.setdefault(key, []).append(event["dur"])
    return [(name, op, sorted(d)[len(d) // 4]) for (name, op), d in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="yolov8n-320", choices=sorted(SLICES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    input_name, shape = SLICES[args.model]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _, quantized, data = quantized_slice(args.model, tmp)
        model = vm.load(data, threads=args.threads)
        xf = np.random.default_rng(1).random(shape, dtype=np.float32)
        x = detvm_feeds(model, xf)
        int8 = ort_session(quantized, args.threads)
        calls = {"detvm": lambda: model.run(x), "ORT int8": lambda: int8.run(None, {input_name: xf})}
        best = dict.fromkeys(calls, float("inf"))
        for turn in range(args.repeat + 2):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                if turn >= 2:
                    best[name] = min(best[name], time.perf_counter() - start)
        print(f"{args.model} slice, {args.threads} thread(s): " + ", ".join(
            f"{k} {v * 1e3:.3f} ms" for k, v in best.items()) +
            f" (ratio {best['detvm'] / best['ORT int8']:.2f}); {model.backend}")
        rows = profile(model, x[model.inputs[0].name], args.repeat, grouped=False)
        print(f"\ndetvm steps (ms, one run): total {sum(s for _, s, _ in rows) * 1e3:.3f}")
        for key, seconds, _ in rows:
            print(f"  {seconds * 1e3:7.3f}  {key}")
        nodes = ort_nodes(quantized, {input_name: xf}, args.threads, args.repeat, tmp)
        print(f"\nORT int8 nodes (us, lower quartile): total {sum(n[2] for n in nodes)}")
        for name, op, us in nodes:
            print(f"  {us:7d}  {op:18s} {name}")


if __name__ == "__main__":
    main()
