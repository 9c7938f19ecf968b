"""Formal-mode figures of every shipped and benchmark model: formal runs and certificates.

    python bench/formal.py [--models demo,digits,resnet18,ppocr-cls,ppocr-det,yolov8n-320]
                           [--skip run,verify,check,batch] [--json OUT]

Per model, each measurement in a process of its own (its peak resident memory is its own):

* ``run``: ``verify.formal_run`` (steps mode) on one input: seconds, proof status, peak RSS,
  and whether its bytes equal the CPU executor's;
* ``verify``: ``detvm verify MODEL --smt2 DIR`` (seconds, obligations, statuses, peak RSS);
* ``check``: ``detvm check-cert DIR --model MODEL`` once with z3 and once with cvc5 (seconds,
  ok), on the certificate just written;
* ``batch``: the same ``verify`` on the model with a symbolic batch N (the shipped models and
  ResNet-18 symbolized by ``compiler.symbolize``, maximum by the import's default rule): one
  certificate for every N up to the maximum.

Models: ``demo`` (lines, shipped, batch 6), ``digits`` (the shipped CNN on its 8 test images),
``resnet18`` (bench/resnet18.py, 1x3x224x224, seeded random weights and input) and the real
models of compiler/onnx/zoo.py that import (``ppocr-cls``, ``ppocr-det``, ``yolov8n-320``,
``ppocr-rec``, ``ddddocr-det``): quantized as bench/models.py does but with the batch kept
symbolic (``--shape x=N,...``; where it cannot stay symbolic, at batch 1 as bench/models.py),
imported (cached in ~/.cache/detvm/formal/), run formally on one generated input (batch 1).
A real model that cannot be fetched or imported is reported with the reason. Prints a markdown
table with the command, machine, load and commit. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import vm  # noqa: E402
from detvm.common import DEMO_DIR  # noqa: E402

SHIPPED = ("demo", "digits", "resnet18")
REAL = ("ppocr-cls", "ppocr-det", "yolov8n-320", "ppocr-rec", "ddddocr-det")
CACHE = Path(os.environ.get("DETVM_FORMAL_CACHE", Path.home() / ".cache" / "detvm" / "formal"))


# -- the models and their inputs ---------------------------------------------------------------
def model_file(name: str, symbolic: bool) -> Path:
    """The .dvm of ``name`` (symbolic: with a batch symbol), built once into the cache."""
    if name in REAL:
        return _real_model(name)
    if name in ("demo", "digits") and not symbolic:
        return DEMO_DIR / f"{name}.dvm"
    path = CACHE / f"{name}{'-batch' if symbolic else ''}.dvm"
    if not path.exists():
        program = _shipped_program(name)
        if symbolic:
            from compiler.onnx.batch import with_maxima
            from compiler.symbolize import symbolize
            batch = program.tensors[program.inputs[0]].shape[0]
            program = with_maxima(symbolize(program, {"N": batch}, {"N": 1}), {})
        _write(path, vm.encode(program))
    return path


def _shipped_program(name: str):
    if name == "resnet18":
        from resnet18 import build_resnet18
        return build_resnet18(1)
    return vm.load(DEMO_DIR / f"{name}.dvm").program


def _real_model(name: str) -> Path:
    path = CACHE / f"{name}.dvm"
    if path.exists():
        return path
    import models as bm
    from compiler.onnx import import_onnx, zoo
    from compiler.onnx.quantize import quantize_onnx
    recipe = bm.RECIPES[name]
    shape = ("N",) + tuple(recipe.shape[1:])
    def quantized_import(shape, tmp):
        q = quantize_onnx(zoo.fetch(name), {recipe.input: recipe.inputs(1)},
                          Path(tmp) / f"{name}.int8.onnx", shapes={recipe.input: shape},
                          activation="uint8", op_types=None, notify=lambda _: None)
        return import_onnx(q, shapes={recipe.input: shape})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            program = quantized_import(shape, tmp)
        except vm.InvalidError as e:          # the batch cannot stay symbolic: batch 1, as
            program = quantized_import(recipe.shape, tmp)   # bench/models.py imports it
            _write(path.with_suffix(".note"), f"batch fixed to 1: {e.message}".encode())
        _write(path, vm.encode(program))
    return path


def note(name: str) -> str:
    path = CACHE / f"{name}.note"
    return path.read_text() if name in REAL and path.exists() else ""


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_bytes(data)
    part.replace(path)


def model_inputs(name: str, model) -> dict:
    if name in ("demo", "digits"):
        data = dict(np.load(DEMO_DIR / f"{name}_inputs.npz"))
        return {t.name: data[t.name].astype(t.dtype) for t in model.inputs}
    if name in REAL:
        import models as bm
        from vm.floatio import quantize_inputs
        recipe = bm.RECIPES[name]
        return quantize_inputs(model, {recipe.input: recipe.inputs(0)[:1]})
    rng = np.random.default_rng(0)
    t = model.inputs[0]
    top = (1 << (t.precision - 1)) - 1
    return {t.name: rng.integers(-top, top + 1, t.shape).astype(t.dtype)}


# -- one measurement, in a child process -------------------------------------------------------
def measure(kind: str, name: str, cert_dir: str) -> dict:
    if kind == "prepare":
        model_file(name, False)
        if name not in REAL:
            model_file(name, True)
        return {"ok": True}
    if kind == "run":
        return _formal_run(name)
    from detvm.cli import main as detvm
    symbolic = kind == "batch"
    path = str(model_file(name, symbolic))
    start, cpu = time.perf_counter(), time.process_time()
    if kind in ("verify", "batch"):
        import contextlib
        import io
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = detvm(["verify", path, "--json", "--smt2", cert_dir])
        cert = json.loads(out.getvalue())
        obligations = cert["obligations"]
        result = {"obligations": len(obligations),
                  "statuses": dict(Counter(o["status"] for o in obligations)),
                  "smt2_mb": sum(p.stat().st_size for p in Path(cert_dir).glob("*.smt2")) / 1e6}
        result["symbols"] = dict(vm.load(path).program.symbols)
    else:
        from verify.recheck import check_certificate
        report = check_certificate(cert_dir, vm.load(path), solvers=[kind.split(":")[1]])
        status, result = 0 if report.ok else 1, {"files": len(report.files),
                                                 "problems": report.problems[:3]}
    return {"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
            "ok": status == 0, **result}


def _formal_run(name: str) -> dict:
    import verify
    model = vm.load(model_file(name, False))
    inputs = model_inputs(name, model)
    start, cpu_start = time.perf_counter(), time.process_time()
    outputs, proof = verify.formal_run(model, inputs)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    cpu = model.run(inputs)
    methods = Counter()
    for step in proof.steps:
        methods[f"{step.op} {step.method}"] += step.seconds
    return {"seconds": seconds, "cpu_s": cpu_s, "status": proof.status, "ok": proof.proved,
            "instructions": len(model.program.code),
            "batch": int(next(iter(inputs.values())).shape[0]),
            "same_bytes_as_cpu": proof.proved and all(
                outputs[k].tobytes() == cpu[k].tobytes() for k in cpu),
            "slowest": {k: round(v, 2) for k, v in methods.most_common(4)}}


def child(kind: str, name: str, cert_dir: str, timeout_s: float) -> dict:
    """Run one measurement in a fresh process: its result and peak RSS (MB)."""
    cmd = [sys.executable, __file__, "--child", kind, name, cert_dir]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no result within {timeout_s:.0f} s (stopped)"}
    if done.returncode != 0:
        return {"ok": False, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_model(name: str, skip: set, timeout_s: float) -> dict:
    prepared = child("prepare", name, "", timeout_s)   # imports stay out of this process
    if "error" in prepared:
        return prepared
    row = {"note": note(name)} if note(name) else {}
    with tempfile.TemporaryDirectory() as tmp:
        if "verify" not in skip:
            row["verify"] = child("verify", name, f"{tmp}/cert", timeout_s)
            if "check" not in skip and row["verify"].get("ok"):
                for solver in ("z3", "cvc5"):
                    row[f"check_{solver}"] = child(f"check:{solver}", name, f"{tmp}/cert",
                                                  timeout_s)
        if "batch" not in skip and name not in REAL:      # real models: the batch is symbolic
            row["batch"] = child("batch", name, f"{tmp}/batch", timeout_s)
        if "run" not in skip:
            row["run"] = child("run", name, tmp, timeout_s)
    return row


# -- the report --------------------------------------------------------------------------------
def table(report: dict) -> str:
    lines = ["| model | formal run | `detvm verify` | `check-cert` z3 / cvc5 | "
             "batch certificate (every N) |", "|---|---|---|---|---|"]
    for name, row in report["models"].items():
        if "error" in row:
            lines.append(f"| {name} | not available: {row['error']} | | | |")
            continue
        if row.get("note"):
            name = f"{name} ({row['note'][:200]})"
        symbols = (row.get("verify") or {}).get("symbols")
        batch = _verify_cell(row.get("batch")) if "batch" in row else \
            "the certificate itself (symbolic batch)" if symbols else "—"
        lines.append(f"| {name} | {_run_cell(row.get('run'))} | {_verify_cell(row.get('verify'))}"
                     f" | {_check_cell(row)} | {batch} |")
    return "\n".join(lines)


def _run_cell(r) -> str:
    if not r:
        return "—"
    if "error" in r:
        return f"error: {r['error']}"
    return (f"{_s(r)}, {r['status']}, batch {r['batch']}, {r['instructions']} "
            f"instr., peak {r['rss_mb']:.0f} MB" + ("" if r["same_bytes_as_cpu"] else
                                                     ", BYTES DIFFER FROM CPU"))


def _s(r) -> str:
    """Wall-clock seconds (CPU seconds of the process: the machine may be shared)."""
    return f"{r['seconds']:.1f} s ({r['cpu_s']:.1f} s CPU)"


def _mb(mb: float) -> str:
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.2g}"


def _verify_cell(r) -> str:
    if not r:
        return "—"
    if "error" in r:
        return f"error: {r['error']}"
    statuses = ", ".join(f"{v} {k}" for k, v in sorted(r["statuses"].items()))
    syms = "".join(f", {s} <= {m}" for s, m in r.get("symbols", {}).items())
    return (f"{_s(r)}, {r['obligations']} obligations ({statuses}){syms}, "
            f"{_mb(r['smt2_mb'])} MB SMT-LIB2, peak {r['rss_mb']:.0f} MB")


def _check_cell(row) -> str:
    cells = []
    for solver in ("z3", "cvc5"):
        r = row.get(f"check_{solver}")
        if r:
            cells.append(f"{_s(r)} " + ("ok" if r["ok"] else
                                                     f"FAILED {r.get('error') or r['problems']}"))
    return " / ".join(cells) or "—"


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (Linux; ru_maxrss would include the
    parent's memory at the fork), else ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SHIPPED + REAL))
    ap.add_argument("--skip", default="", help="comma-separated: run, verify, check, batch")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="wall-clock seconds allowed to each measurement (default 1800)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = measure(*args.child)
        result["rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    report = {"command": "python bench/formal.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "load_before": os.getloadavg(), "models": {}}
    skip = set(filter(None, args.skip.split(",")))
    for name in args.models.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        report["models"][name] = run_model(name, skip, args.timeout)
        print(json.dumps(report["models"][name]), file=sys.stderr, flush=True)
    report["load_after"] = os.getloadavg()
    m = report["machine"]
    print(f"`{report['command']}` at {m['commit']}, {m['date']}: {m['cores']} x {m['cpu']}, "
          f"Python {m['python']}, load average {report['load_before'][0]:.1f} before, "
          f"{report['load_after'][0]:.1f} after\n")
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
