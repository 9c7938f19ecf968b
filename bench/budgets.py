"""The time budgets of docs/format.md (Budgets), checked on this machine: exits 1 on a violation.

    python bench/budgets.py [--examples N] [--largest N] [--json FILE]

1. every rejection of the hostile corpus (tests/hostile.py) within REJECTION_SECONDS
   (best of 3 runs, CPU time of the process) and REJECTION_BYTES beyond its input's bytes;
2. load time of accepted models linear in their bytes: <= LOAD_FIXED + LOAD_PER_BYTE x bytes
   (relu chains of 10^3..10^6 instructions, mixed chains of 10^4..10^6 (dense, shifts, clips,
   residual additions, requantizes, reshapes: tests/test_budgets.py mixed_chain), constants of
   1..16 MiB, a conv weight of 4 MiB), on the default backend and on numpy; models of 10^6
   instructions are loaded once (about 10 s each), the others best of 3;
3. run time within the gas: <= RUN_FIXED + RUN_PER_INSTRUCTION x instructions + gas / GAS_RATE
   for every op, at the worst case per gas unit hypothesis finds among the law cases scaled up
   (tests/test_memory.py; ``target`` steers it towards seconds per gas) and the hand-made
   worst cases of tests/test_budgets.py (WORST_CASES).

Times are process CPU seconds, the best of 3 (noise on a shared machine only adds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vm                                                    # noqa: E402
from compiler import Builder                                 # noqa: E402
from tests.hostile import corpus                             # noqa: E402
from tests.test_budgets import (REJECTION_MEMORY, WORST_CASES, mixed_chain,  # noqa: E402
                                relu_chain, run_budget)

REJECTION_SECONDS = 0.050
REJECTION_BYTES = REJECTION_MEMORY
LOAD_FIXED = 0.050
LOAD_PER_BYTE = 0.5e-6
"""Seconds per byte of an accepted model's load (decode, validate, bind)."""
ONCE = 10 ** 6
"""Models of this many instructions or more are loaded once, not best of 3."""


def best_of(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.process_time()
        try:
            fn()
        except Exception:        # noqa: BLE001 - rejections are the point here
            pass
        best = min(best, time.process_time() - t)
    return best


def rejections() -> list[dict]:
    out = []
    for case in corpus():
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        try:
            case.run()
            error = None
        except Exception as e:   # noqa: BLE001
            error = e
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        seconds = best_of(case.run)
        ok = isinstance(error, case.error) and seconds < REJECTION_SECONDS and \
            peak < REJECTION_BYTES
        out.append(dict(check="rejection", case=case.name, seconds=seconds, bytes=peak,
                        error=type(error).__name__, ok=ok))
    return out


def accepted_models(largest: int):
    """(name, .dvm bytes, instructions) of the accepted models whose load is timed."""
    for n in (1000, 10000, 100000, 1000000):
        if n <= largest:
            yield f"relu chain of {n}", relu_chain(n), n
    for n in (10000, 100000, 1000000):
        if n <= largest:
            yield f"mixed chain of {n}", mixed_chain(n), n
    rng = np.random.default_rng(0)
    for mib in (1, 4, 16):
        b = Builder(f"const{mib}")
        x = b.input("x", (1, 1024), 8)
        w = b.const("w", rng.integers(-127, 128, (mib * 1024, 1024)).astype(np.int8), 8)
        b.output(b.op("dense", x, w, units=mib * 1024, use_bias=False))
        yield f"dense of a {mib} MiB weight", vm.encode(b.build()), 1
    b = Builder("conv")
    x = b.input("x", (1, 1, 2048, 2048), 4)
    w = b.const("w", 7 - 14 * rng.integers(0, 2, (1, 1, 2048, 2048)), 4)
    b.output(b.op("conv2d", x, w, channels=1, kernel_size=(2048, 2048), use_bias=False))
    yield "conv2d of a 4 MiB wide kernel", vm.encode(b.build()), 1


def loads(largest: int) -> list[dict]:
    out = []
    for name, blob, count in accepted_models(largest):
        for backend in ("auto", "numpy"):
            ctx = vm.cpu(backend=backend)
            seconds = best_of(lambda: vm.load(blob, ctx), 1 if count >= ONCE else 3)
            limit = LOAD_FIXED + LOAD_PER_BYTE * len(blob)
            out.append(dict(check="load", case=f"{name} ({backend})", bytes=len(blob),
                            seconds=seconds, us_per_byte=1e6 * seconds / len(blob),
                            us_per_instruction=1e6 * seconds / count, ok=seconds <= limit))
    return out


def runs(examples: int) -> list[dict]:
    from hypothesis import HealthCheck, given, settings, strategies as st, target
    from tests.test_memory import CASES, scaled_case
    out = []
    for name in sorted(CASES):
        worst = {}

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def probe(data):
            built = scaled_case(name, data.draw(CASES[name]), data)
            if built is None:
                return
            fraction, facts = measure(*built)
            target(fraction)
            if fraction > worst.get("fraction", -1):
                worst.update(facts, fraction=fraction)
        probe()
        for case_name, build in WORST_CASES.items():
            if case_name.split(":")[0] == name:
                fraction, facts = measure(*build())
                if fraction > worst.get("fraction", -1):
                    worst.update(facts, fraction=fraction, case=case_name)
        if worst:
            out.append(dict(check="run", op=name, ok=worst["fraction"] <= 1, **worst))
    return out


def measure(program, feeds) -> tuple[float, dict]:
    """(run seconds / budget, facts) on the numpy executor."""
    model = vm.load(program, ctx=vm.Context("cpu", backend="numpy"))
    typed = {t.name: np.asarray(feeds[t.name]).astype(t.dtype) for t in model.inputs}
    model.run(typed)
    seconds = best_of(lambda: model.run(typed))
    budget = run_budget(model.gas, len(program.code))
    return seconds / budget, dict(gas=model.gas, seconds=seconds,
                                  gas_per_second=model.gas / max(seconds, 1e-9))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=30, help="hypothesis cases per op")
    p.add_argument("--largest", type=int, default=ONCE,
                   help="instructions of the longest chain loaded (default 10^6)")
    p.add_argument("--json", help="write every figure there")
    args = p.parse_args(argv)
    results = rejections() + loads(args.largest) + runs(args.examples)
    for r in results:
        facts = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in r.items() if k not in ("check", "ok"))
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']:9s} {facts}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} of {len(results)} within budget")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
