"""Formal-mode benchmarks: the ResNet-18 certificate and the formal execution of the demo.

    python bench/formal.py [--smt2 DIR] [--check] [--json OUT]

Targets (2 cores): certificate of the ResNet-18-shaped program at 1x3x224x224 <= 60 s; formal
execution of the demo model (`detvm demo`) <= 30 s. With ``--smt2 DIR`` the certificate is also
written as SMT-LIB2 (and with ``--check`` re-checked), which is timed separately. A benchmark,
not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import verify  # noqa: E402
import vm  # noqa: E402
from bench.resnet18 import build_resnet18  # noqa: E402
from detvm.common import DEMO_DIR  # noqa: E402


def resnet_certificate(smt2: str | None, check: bool) -> dict:
    model = vm.load(vm.encode(build_resnet18(1)))
    start = time.perf_counter()
    cert = verify.certify(model)
    seconds = time.perf_counter() - start
    out = {"resnet18_certificate_s": seconds, "obligations": len(cert.obligations),
           "statuses": dict(Counter(ob.status for ob in cert.obligations)),
           "proved": cert.proved,
           "gemm_paths": dict(Counter(ob.facts["path"] for ob in cert.obligations
                                      if ob.name.startswith("gemm_licence"))),
           "licences": dict(Counter(ob.name.split(": ", 1)[1].split(" ")[0]
                                    for ob in cert.obligations if ob.name.startswith("licence[")))}
    if smt2:
        start = time.perf_counter()
        cert.write(smt2)
        out["smt2_write_s"] = time.perf_counter() - start
        out["smt2_bytes"] = sum(p.stat().st_size for p in Path(smt2).glob("*.smt2"))
        if check:
            start = time.perf_counter()
            report = verify.check_certificate(smt2, solvers=["z3"])
            out["smt2_check_z3_s"] = time.perf_counter() - start
            out["smt2_check_ok"] = report.ok
    return out


def demo_formal() -> dict:
    inputs = dict(np.load(DEMO_DIR / "demo_inputs.npz"))
    expected = dict(np.load(DEMO_DIR / "demo_expected.npz"))
    start = time.perf_counter()
    model = vm.load(DEMO_DIR / "demo.dvm", vm.formal())
    outputs = model.run(inputs)
    seconds = time.perf_counter() - start
    cpu = vm.load(DEMO_DIR / "demo.dvm")
    _, proof = verify.formal_run(cpu, inputs)
    same = all(outputs[k].tobytes() == expected[k].tobytes() for k in expected)
    return {"demo_formal_s": seconds, "demo_formal_proof": proof.status,
            "demo_formal_solver_s": proof.seconds, "demo_constraints": proof.constraints,
            "demo_bytes_match": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smt2", help="also write the ResNet-18 certificate to this directory")
    ap.add_argument("--check", action="store_true", help="re-check the written certificate")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    result = {**resnet_certificate(args.smt2, args.check), **demo_formal()}
    print(f"ResNet-18 (1x3x224x224) certificate: {result['resnet18_certificate_s']:.2f} s, "
          f"{result['obligations']} obligations {result['statuses']}, "
          f"GEMM paths {result['gemm_paths']}, licences {result['licences']}")
    if args.smt2:
        print(f"  SMT-LIB2: {result['smt2_bytes'] / 1e6:.1f} MB written in "
              f"{result['smt2_write_s']:.2f} s"
              + (f", re-checked by z3 in {result['smt2_check_z3_s']:.1f} s "
                 f"({'ok' if result['smt2_check_ok'] else 'FAILED'})" if args.check else ""))
    print(f"demo formal execution: {result['demo_formal_s']:.2f} s (load + run), proof "
          f"{result['demo_formal_proof']} ({result['demo_constraints']} constraints, solver "
          f"{result['demo_formal_solver_s']:.2f} s), bytes match: {result['demo_bytes_match']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
