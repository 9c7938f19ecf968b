"""vm.load of ResNet-18 in fresh processes: the first load of a process and the later ones.

    python bench/load.py [--runs 12] [--trees DIR [DIR ...]] [--source] [--phases]

Models (batch 1, threads=2): the hand-built ResNet-18 of bench/resnet18.py and the same network
quantized by onnxruntime (QDQ) and imported by compiler.onnx. Each run is a fresh process that
imports vm, reads the model's bytes and calls ``vm.load`` four times: the first load of a
process (onnxruntime imported and the backend's self-test run on first use) and the fastest of
the three later ones, in wall-clock time and in the process's CPU time (all its threads: what
other processes on the machine do not stretch). ``--trees``: code trees (checkouts of this
repository) whose processes alternate run by run and model by model, so that all of them see
the same machine (default: this one). Modules load from bytecode cached in a directory of its
own (~/.cache/detvm/pycache, compiled by one untimed process per tree), as in an installed
package; ``--source`` compiles every module a process imports from source instead
(PYTHONDONTWRITEBYTECODE, as this repository's development machines run). ``--phases``: also
the time of the self-test (onnxruntime's import included) and of the session creations within
the first load.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYCACHE = Path.home() / ".cache" / "detvm" / "pycache"

CHILD = r"""
import json, sys, time
t = time.perf_counter()
import vm
import_s = time.perf_counter() - t
phases = {"selftest": 0.0, "sessions": 0.0}
if __PHASES__:
    from vm.ort import selftest, session
    def timed(module, name, key):
        f = getattr(module, name)
        def g(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                phases[key] += time.perf_counter() - t
        setattr(module, name, g)
    timed(selftest, "verdict", "selftest")
    timed(session, "session", "sessions")
data = open(__PATH__, "rb").read()
loads, cpu = [], []
for k in range(4):
    t, c = time.perf_counter(), time.process_time()
    m = vm.load(data, threads=2)
    loads.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
    if k == 0:
        first, backend = dict(phases), m.backend
    m.close()
print(json.dumps(dict(import_s=import_s, first_s=loads[0], later_s=min(loads[1:]),
                      first_cpu_s=cpu[0], later_cpu_s=min(cpu[1:]),
                      phases=first, backend=backend)))
"""


def models(tmp: Path) -> dict[str, Path]:
    """The two ResNet-18 models as .dvm files in ``tmp``."""
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    import onnx
    import vm
    from compare import build_resnet18, import_int8, quantize, resnet18_onnx
    logging.disable(logging.WARNING)
    log = []
    out = {"hand-built": tmp / "hand.dvm", "imported QDQ": tmp / "imported.dvm"}
    out["hand-built"].write_bytes(vm.encode(build_resnet18(1, log=log)))
    onnx.save(resnet18_onnx(log), tmp / "r18.onnx")
    quantize(tmp / "r18.onnx", tmp / "r18.int8.onnx", "data", (3, 224, 224))
    data, problem = import_int8(tmp / "r18.int8.onnx", 1)
    if data is None:
        raise SystemExit(f"the QDQ ResNet-18 does not import: {problem}")
    out["imported QDQ"].write_bytes(data)
    return out


def child_env(source: bool = False, **extra) -> dict:
    """The environment of a measured child process: modules from bytecode cached in PYCACHE
    (as an installed package has them), or, ``source``, compiled from source on import."""
    env = dict(os.environ, **extra)
    if source:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def child(tree: Path, path: Path, source: bool, phases: bool) -> dict:
    env = child_env(source, PYTHONPATH=str(tree))
    code = CHILD.replace("__PHASES__", repr(phases)).replace("__PATH__", repr(str(path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def ms(values) -> str:
    v = sorted(x * 1e3 for x in values)
    return (f"min {v[0]:.0f}, median {statistics.median(v):.0f}, max {v[-1]:.0f} "
            f"({' '.join(f'{x:.0f}' for x in v)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--trees", nargs="+", type=Path, default=[ROOT])
    ap.add_argument("--source", action="store_true")
    ap.add_argument("--phases", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="detvm-load-"))
    paths = models(tmp)
    if not args.source:
        for tree in args.trees:                       # compile the bytecode, untimed
            child(tree, paths["hand-built"], False, False)
    results = {(t, m): [] for t in args.trees for m in paths}
    for run in range(args.runs):
        for m, path in paths.items():
            trees = args.trees if run % 2 == 0 else args.trees[::-1]
            for tree in trees:
                results[(tree, m)].append(child(tree, path, args.source, args.phases))
    print(f"load average {os.getloadavg()[0]:.1f} at the end; "
          f"{'source' if args.source else 'bytecode'}; {args.runs} fresh processes each")
    for (tree, m), rs in results.items():
        print(f"\n{tree} {m}: {rs[0]['backend']}")
        print(f"  first load  {ms(r['first_s'] for r in rs)} ms")
        print(f"  later loads {ms(r['later_s'] for r in rs)} ms")
        print(f"  CPU time (all threads): first {ms(r['first_cpu_s'] for r in rs)} ms; later "
              f"{ms(r['later_cpu_s'] for r in rs)} ms")
        print(f"  import vm   median {statistics.median(r['import_s'] for r in rs) * 1e3:.0f} ms")
        if args.phases:
            for key in ("selftest", "sessions"):
                print(f"  first load's {key}: {ms(r['phases'][key] for r in rs)} ms")


if __name__ == "__main__":
    main()
