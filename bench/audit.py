"""Throughput of ``detvm audit``: the local engine and a Dask LocalCluster of 1 and 2 workers
on the same data set, rows checked identical.

    pip install ".[audit]" && python bench/audit.py [--items 512] [--chunk 32] [--repeat 3]

The model is the shipped digits CNN (one item = its 8-image input; a receipt per item traces
all 9 instructions). Each figure is the best (and the median) of ``--repeat`` runs of the
engine alone (the cluster is started before the clock, its start time is reported apart). The
engines take turns (local, 1 worker, 2 workers, then again), both clusters started before the
first turn (the idle one's processes wait meanwhile), so the machine's load falls on all
alike. docs/audit.md has the figures; on a 2-core machine two workers share the cores with the
client.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vm  # noqa: E402
from detvm.audit_data import Source  # noqa: E402
from detvm.audit_run import Sink, local_cluster, run_dask, run_local  # noqa: E402
from detvm.common import DEMO_DIR  # noqa: E402


def data_set(path: Path, items: int) -> None:
    """``items`` distinct 8-image inputs: the shipped test images, rolled and shifted."""
    base = np.load(DEMO_DIR / "digits_inputs.npz")["image"]
    rng = np.random.default_rng(0)
    x = np.stack([np.roll(base, k % 8, axis=0) + rng.integers(-2, 3, base.shape)
                  for k in range(items)]).astype(base.dtype)
    np.savez(path, image=x)


def timed(engine, model, source, chunk: int, out: Path) -> tuple[float, list]:
    import pyarrow.parquet as pq
    sink = Sink(out, {"bench": 1}, resume=False)
    chunks = ((s, a, source.names(s, s + len(a["image"]))) for s, a in source.chunks(chunk))
    start = time.perf_counter()
    engine(model.to_bytes(), chunks, sink)
    sink.finish(source.count)
    seconds = time.perf_counter() - start
    return seconds, pq.read_table(out).to_pylist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    model = vm.load(DEMO_DIR / "digits.dvm")
    engines, clusters = {"local": _local()}, []
    try:
        for n in (1, 2):
            started = time.perf_counter()
            cluster, client = local_cluster(n)
            client.wait_for_workers(n)
            clusters.append((cluster, client, time.perf_counter() - started))
            engines[f"dask, {n} worker{'s' * (n > 1)}"] = _dask(client, n)
        with tempfile.TemporaryDirectory() as tmp:
            times = _turns(engines, model, Path(tmp), args)
    finally:
        for cluster, client, _ in clusters:
            client.close()
            cluster.close()
    print(f"detvm audit throughput: digits CNN, {args.items} items (8 images each), chunks of "
          f"{args.chunk}; {args.repeat} turns, the engines alternating within each turn; "
          f"rows identical across engines")
    print(f"machine: {platform.machine()}, {_cores()} cores, Python {platform.python_version()}"
          f", load average {os.getloadavg()[0]:.1f} at the end")
    print("| engine | items/s (best) | images/s (best) | seconds best / median | "
          "cluster start (s) |")
    print("|---|---|---|---|---|")
    starts = ["—"] + [f"{c[2]:.1f}" for c in clusters]
    for (label, runs), start in zip(times.items(), starts):
        best = min(runs)
        print(f"| {label} | {args.items / best:.0f} | {8 * args.items / best:.0f} | "
              f"{best:.2f} / {statistics.median(runs):.2f} | {start} |")


def _local():
    return lambda data, chunks, sink: run_local(data, "cpu", chunks, "root", sink,
                                                lambda n: None)


def _dask(client, workers: int):
    return lambda data, chunks, sink: run_dask(client, data, "cpu", chunks, "root", sink,
                                               lambda n: None, 2 * workers + 1)


def _turns(engines: dict, model, tmp: Path, args) -> dict[str, list[float]]:
    """Each turn runs every engine once, in turn (the machine's load falls on all alike);
    every engine's rows are checked identical to the first run's."""
    data_set(tmp / "data.npz", args.items)
    source = Source(tmp / "data.npz", model)
    times, reference = {label: [] for label in engines}, None
    for k in range(args.repeat):
        for label, run in engines.items():
            seconds, rows = timed(run, model, source, args.chunk, tmp / f"{k}-{label}")
            reference = reference or rows
            assert rows == reference, f"{label}: rows differ"
            times[label].append(seconds)
    return times


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
