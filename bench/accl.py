"""Throughput of vm.accl's pipelines against a plain loop of Model.run, on the digits CNN.

    python bench/accl.py [--frames 2000] [--repeat 5] [--workers 1 2]

Each configuration runs the same frames; the figures are the best of ``--repeat`` rounds taken
in turns (plain loop, then each pipeline), frames per second. Every pipeline's outputs are
checked byte for byte against the loop's. On a 2-core machine two workers can at best double
the loop, and only when the runs release the GIL long enough (numpy kernels do, the Python
dispatch between them does not).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vm  # noqa: E402
from vm.accl import AsyncAccl, MultiStreamAsyncAccl  # noqa: E402


def loop(model, frames) -> list[bytes]:
    return [model.run({"image": x})["logits"].tobytes() for x in frames]


def pipeline(model, frames, workers: int, streams: int = 1) -> list[bytes]:
    if streams == 1:
        source, got = iter(frames), []
        accl = AsyncAccl(model, stream_workers=workers)
        accl.connect_input(lambda: next(source, None))
        accl.connect_output(lambda logits: got.append(logits.tobytes()))
        accl.wait()
        return got
    parts = [frames[s::streams] for s in range(streams)]
    positions, got = [0] * streams, [[] for _ in range(streams)]

    def source(s):
        if positions[s] == len(parts[s]):
            return None
        positions[s] += 1
        return parts[s][positions[s] - 1]

    accl = MultiStreamAsyncAccl(model, stream_workers=workers)
    accl.connect_streams(source, lambda s, logits: got[s].append(logits.tobytes()), streams)
    accl.wait()
    return [got[k % streams][k // streams] for k in range(len(frames))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    model = vm.load(ROOT / "vm" / "models" / "digits.dvm")
    rng = np.random.default_rng(0)
    frames = [rng.integers(-128, 128, (8, 1, 8, 8)).astype(np.int8) for _ in range(args.frames)]
    want = loop(model, frames)
    configs = {"plain loop": lambda: loop(model, frames)}
    for w in args.workers:
        configs[f"AsyncAccl, {w} worker(s)"] = lambda w=w: pipeline(model, frames, w)
        configs[f"MultiStreamAsyncAccl, 4 streams, {w} worker(s)"] = \
            lambda w=w: pipeline(model, frames, w, 4)
    best = {name: float("inf") for name in configs}
    for _ in range(args.repeat):
        for name, fn in configs.items():
            start = time.perf_counter()
            got = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            assert got == want, f"{name}: outputs differ from the loop's"
    print(f"digits CNN, batch 8 per frame, {args.frames} frames, best of {args.repeat}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, backend {getattr(model, 'backend', 'numpy')}")
    print("| configuration | frames/s | vs loop |\n|---|---|---|")
    base = best["plain loop"]
    for name, seconds in best.items():
        print(f"| {name} | {args.frames / seconds:,.0f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
