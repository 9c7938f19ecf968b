"""detvm (cpu) against ONNX Runtime fp32 and int8, in one process run.

    pip install ".[bench]"        # onnx, onnxruntime, threadpoolctl
    python bench/compare.py [--repeat 30] [--batches 1 32] [--threads 1 2] [--json OUT]

Models: the ResNet-18-shaped network of bench/resnet18.py (seeded random weights: detvm runs
its int8 program; ORT runs the float ONNX graph of the same weights and that graph quantized by
onnxruntime.quantization.quantize_static, QDQ, uint8 activations / int8 weights) and the digits
CNN of examples/digits_cnn.py (float ONNX, the same quantization, imported into detvm with
compiler.onnx at each batch size), and the first six convolutions of real models
(bench/slices.py, batch 1; --no-slices skips them, --only-slices runs them alone). Also: detvm
on the ONNX-imported ResNet-18 when the importer takes it; load time (the first load of a
process includes the backend's self-test) and peak RSS of a fresh child process, for detvm and
for ORT fp32 and int8; byte checks (threads 1 vs N, fused vs per-instruction path). Timed runs
alternate in turns; every cell is the minimum (and median) of at least 15 runs; ORT's threads
do not spin. Prints a markdown table; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "examples")]

import vm  # noqa: E402
from resnet18 import build_resnet18, resnet18_onnx  # noqa: E402


def timed(fn, repeat: int, sync=lambda: None) -> dict:
    """min / median milliseconds of ``fn()`` over ``repeat`` runs after two warm-ups;
    ``sync()`` waits for asynchronous devices before each clock reading."""
    return timed_together({"fn": fn}, repeat, sync=sync)["fn"]


MIN_RUNS = 15
"""Every cell is the minimum (and median) of at least this many runs."""
SETTLE_S = 0.02
"""Pause before each turn (the sessions' intra-op threads do not spin: allow_spinning 0)."""


def timed_together(fns: dict, repeat: int, block: int = 5, sync=lambda: None) -> dict:
    """min / median milliseconds of each of ``fns`` over ``repeat`` runs, taken in turns of
    ``block`` runs each (after two warm-ups each; who goes first rotates from turn to turn),
    so that all of them see the same machine: this VM's speed drifts by up to 1.5x over
    seconds. ``first_over_this``: the median over the turns of the first fn's median time
    divided by this fn's in the same turn."""
    for fn in fns.values():
        for _ in range(2):
            fn()
            sync()
    names = list(fns)
    times = {name: [] for name in names}
    medians = {name: [] for name in names}
    for turn, start in enumerate(range(0, repeat, block)):
        k = turn % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(SETTLE_S)        # the previous runtime's spinning workers go idle
            these = []
            for _ in range(min(block, repeat - start)):
                t = time.perf_counter()
                fns[name]()
                sync()
                these.append(time.perf_counter() - t)
            times[name] += these
            medians[name].append(statistics.median(these))
    first = names[0]
    return {name: {"min_ms": min(t) * 1e3, "median_ms": statistics.median(t) * 1e3,
                   "runs": repeat,
                   "first_over_this": statistics.median(
                       a / b for a, b in zip(medians[first], medians[name]))}
            for name, t in times.items()}


def ort_session(path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize(src: Path, dst: Path, name: str, shape, seed: int = 0) -> None:
    """onnxruntime.quantization.quantize_static: QDQ, uint8 activations, int8 weights."""
    from onnxruntime import quantization as q
    rng = np.random.default_rng(seed)
    samples = [rng.random((1, *shape), dtype=np.float32) for _ in range(8)]

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}
    q.quantize_static(str(src), str(dst), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)


def import_int8(path: Path, batch: int):
    """The ONNX int8 model imported into detvm at ``batch`` (compiler/onnx), or the reason
    it could not be."""
    try:
        from compiler.onnx import import_onnx
        return vm.encode(import_onnx(str(path), batch=batch, rounding="fp32")), None
    except Exception as e:                    # not there yet, or an op it does not take
        return None, f"{type(e).__name__}: {e}"


def rows_for(label: str, detvm_bytes: dict, ort_fp32: Path, ort_int8: Path, input_name: str,
             shape, args, report: dict, batches=None) -> None:
    """Time detvm and ORT fp32 / int8 at every batch (of ``batches``, else ``args.batches``)
    and thread count; check the bytes."""
    rng = np.random.default_rng(1)
    for batch in batches or args.batches:
        data = detvm_bytes.get(batch)
        xf = rng.random((batch, *shape), dtype=np.float32)
        repeat = max(MIN_RUNS, args.repeat // (6 if batch > 8 else 1))
        outputs = {}
        for threads in args.threads:
            row = {"model": label, "batch": batch, "threads": threads}
            fns, model = {}, None
            for kind, path in (("ort_fp32", ort_fp32), ("ort_int8", ort_int8)):
                session = ort_session(path, threads)
                fns[kind] = lambda session=session: session.run(None, {input_name: xf})
            if data is not None:
                model = vm.load(data, threads=threads)
                feeds = detvm_feeds(model, xf)
                fns = {"detvm": lambda: model.run(feeds), **fns}
            row.update(timed_together(fns, repeat, block=max(1, min(5, repeat // 4))))
            if model is not None:
                outputs[threads] = model.run(feeds)
                if threads == args.threads[0]:
                    slow = model.run(feeds, trace=lambda step, values: None)   # unfused
                    row["fused_equals_per_instruction"] = all(
                        slow[k].tobytes() == outputs[threads][k].tobytes() for k in slow)
                model.close()
            report["rows"].append(row)
            print_row(row)
        if len(outputs) > 1:
            first = outputs[args.threads[0]]
            same = all(all(o[k].tobytes() == first[k].tobytes() for k in first)
                       for o in outputs.values())
            report["checks"][f"{label} batch {batch}: bytes identical across threads"] = same


def detvm_feeds(model, xf) -> dict:
    """detvm's input: the float input ORT runs on, quantized by the model's own input
    quantization (the imported QDQ model's QuantizeLinear, kept in its metadata: the same
    integers ORT int8 computes on); random integers over the input's precision for a model
    without one (the hand-built ResNet-18)."""
    t = model.inputs[0]
    if ("input", t.name) in model.float_io:
        from vm.floatio import quantize_inputs
        return {t.name: quantize_inputs(model, {t.name: xf})[t.name].astype(t.dtype)}
    r = (1 << (t.precision - 1)) - 1
    return {t.name: np.random.default_rng(2).integers(-r, r + 1, t.shape).astype(t.dtype)}


def print_row(row: dict) -> None:
    d, f, q = row.get("detvm"), row["ort_fp32"], row["ort_int8"]
    ms = lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}"
    cell = lambda r: f"{ms(r['min_ms'])} / {ms(r['median_ms'])}" if r else "skipped"
    ratio = lambda a, b: (f"{a['min_ms'] / b['min_ms']:.2f} ({b['first_over_this']:.2f})"
                          if a else "-")
    print(f"| {row['model']} | {row['batch']} | {row['threads']} | {cell(d)} | {cell(f)} | "
          f"{cell(q)} | {ratio(d, f)} | {ratio(d, q)} |", flush=True)


def child_memory(path: Path, threads: int) -> dict:
    """Load + validate time and peak RSS of a fresh process that loads and runs ``path``."""
    code = f"""
import json, sys, time
sys.path[:0] = [{str(ROOT)!r}]
import numpy as np, vm
def hwm():   # this process image's peak RSS (ru_maxrss would include the parent's, via fork)
    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))
    return int(line.split()[1]) / 1024
base = hwm()
t = time.perf_counter(); import onnxruntime; import_s = time.perf_counter() - t
data = open({str(path)!r}, 'rb').read()
loads = []
for _ in range(5):
    t = time.perf_counter(); m = vm.load(data, threads={threads}); loads.append(time.perf_counter() - t)
    if _ < 4: m.close()
t0 = time.perf_counter(); p = vm.decode(data); t1 = time.perf_counter(); vm.validate(p); t2 = time.perf_counter()
x = np.random.default_rng(1).integers(-127, 128, m.inputs[0].shape).astype(np.int8)
for _ in range(3): m.run(x)
print(json.dumps(dict(load_min_s=min(loads), load_first_s=loads[0], ort_import_s=import_s,
    backend=m.backend, decode_s=t1 - t0,
    validate_s=t2 - t1, baseline_rss_mb=base, peak_rss_mb=hwm(),
    scratch_mb=m.plan.scratch_bytes / 2**20)))
"""
    return run_child(code)


def run_child(code: str) -> dict:
    """Run ``code`` in a fresh process whose modules load from cached bytecode, as in an
    installed package (bench/load.py's cache; an untimed first run of ``code`` compiles it)."""
    from load import child_env
    env = child_env()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout)


def ort_child_memory(path: Path, input_name: str, shape, threads: int) -> dict:
    """Session creation time and peak RSS of a fresh process that runs ``path`` on ORT."""
    code = f"""
import json, sys, time
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "bench")!r}]
import numpy as np, onnxruntime
from compare import ort_session
def hwm():
    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))
    return int(line.split()[1]) / 1024
base = hwm()
t = time.perf_counter(); s = ort_session({str(path)!r}, {threads}); load = time.perf_counter() - t
x = np.random.default_rng(1).random({tuple(shape)!r}, dtype=np.float32)
for _ in range(3): s.run(None, {{{input_name!r}: x}})
print(json.dumps(dict(load_s=load, baseline_rss_mb=base, peak_rss_mb=hwm())))
"""
    return run_child(code)


def memory_limit(program) -> float:
    """2 x (weights + the two largest activations) + 100 MB, in MB (storage dtypes)."""
    weights = sum(np.asarray(a).nbytes for a in program.consts.values())
    acts = sorted((t.size * t.dtype.itemsize for t in program.tensors if t.kind != "const"),
                  reverse=True)
    return (2 * (weights + sum(acts[:2])) + 100e6) / 2**20


def slice_rows(tmp: Path, args, report: dict) -> None:
    """The first six convolutions of real models (bench/slices.py), batch 1."""
    import slices
    for name, (input_name, shape) in slices.SLICES.items():
        try:
            fixed, quantized, data = slices.quantized_slice(name, tmp)
        except Exception as e:                 # not cached and no network, or not imported
            note = f"{name} slice skipped: {type(e).__name__}: {str(e)[:200]}"
            report["notes"].append(note)
            print(f"\n{note}\n")
            continue
        rows_for(f"{name} ({slices.CONVS} convs)", {1: data}, fixed, quantized, input_name,
                 shape[1:], args, report, batches=[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-slices", action="store_true",
                    help="skip the real-model slices (bench/slices.py)")
    ap.add_argument("--only-slices", action="store_true",
                    help="run the real-model slices alone (no ResNet-18, digits, load/memory)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "compare.json"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)              # onnxruntime.quantization's advice
    import onnx
    import onnxruntime
    tmp = Path(tempfile.mkdtemp(prefix="detvm-bench-"))
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "onnxruntime": onnxruntime.__version__},
              "rows": [], "checks": {}, "notes": []}
    print("Runs alternate in turns between detvm and ORT; ratios: of the minima (and, in "
          "parentheses, the median of the per-turn ratios).\n")
    print("| model | batch | threads | detvm min / median ms | ORT fp32 min / median ms | "
          "ORT int8 min / median ms | detvm / ORT fp32 | detvm / ORT int8 |")
    print("|---|---|---|---|---|---|---|---|")

    if args.only_slices:
        slice_rows(tmp, args, report)
        finish(report, args)
        return
    log = []
    resnet = {b: vm.encode(build_resnet18(b, log=log if b == args.batches[0] else None))
              for b in args.batches}
    onnx.save(resnet18_onnx(log), tmp / "resnet18.onnx")
    quantize(tmp / "resnet18.onnx", tmp / "resnet18.int8.onnx", "data", (3, 224, 224))
    rows_for("ResNet-18", resnet, tmp / "resnet18.onnx", tmp / "resnet18.int8.onnx", "data",
             (3, 224, 224), args, report)

    imported = {b: import_int8(tmp / "resnet18.int8.onnx", b) for b in args.batches}
    if all(v[0] is not None for v in imported.values()):
        rows_for("ResNet-18 (ONNX int8 imported)", {b: v[0] for b, v in imported.items()},
                 tmp / "resnet18.onnx", tmp / "resnet18.int8.onnx", "data", (3, 224, 224),
                 args, report)
    else:
        note = f"ResNet-18 ONNX import skipped: {next(v[1] for v in imported.values() if v[1])}"
        report["notes"].append(note)
        print(f"\n{note}\n")

    try:
        from digits_cnn import DigitsCNN
        onnx.save(DigitsCNN(seed=0).onnx_model(), tmp / "digits.onnx")
        quantize(tmp / "digits.onnx", tmp / "digits.int8.onnx", "image", (1, 8, 8))
        digits = {b: import_int8(tmp / "digits.int8.onnx", b) for b in args.batches}
        missing = [v[1] for v in digits.values() if v[0] is None]
        if missing:
            raise RuntimeError(missing[0])
        rows_for("digits CNN", {b: v[0] for b, v in digits.items()}, tmp / "digits.onnx",
                 tmp / "digits.int8.onnx", "image", (1, 8, 8), args, report)
    except Exception as e:
        note = f"digits CNN row skipped (importer or model not available yet): {e}"
        report["notes"].append(note)
        print(f"\n{note}\n")

    if not args.no_slices:
        slice_rows(tmp, args, report)

    path = tmp / "resnet18.dvm"
    path.write_bytes(resnet[args.batches[0]])
    mem = child_memory(path, max(args.threads))
    mem["limit_mb"] = memory_limit(vm.decode(resnet[args.batches[0]]))
    report["resnet18_load_and_memory"] = mem
    print(f"\nResNet-18 batch {args.batches[0]} (child process, threads {max(args.threads)}): "
          f"{json.dumps(mem)}")
    for kind, src in (("ort_fp32", "resnet18.onnx"), ("ort_int8", "resnet18.int8.onnx")):
        mem = ort_child_memory(tmp / src, "data", (args.batches[0], 3, 224, 224),
                               max(args.threads))
        report[f"resnet18_{kind}_memory"] = mem
        print(f"ResNet-18 batch {args.batches[0]} on {kind} (child process): {json.dumps(mem)}")
    finish(report, args)


def finish(report: dict, args) -> None:
    """Print the byte checks; write the JSON report."""
    for k, v in report["checks"].items():
        print(f"check: {k}: {v}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
