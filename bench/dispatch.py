"""Per-instruction overhead of the numpy executor: what the interpreter loop costs per
instruction where the arithmetic is negligible (tensors of a few dozen elements).

    python bench/dispatch.py [--repeat 200] [--rounds 15]

Programs: the shipped digits CNN (vm/models/digits.dvm, its batch of 8) and a chain of 96 small
instructions (elementwise add of a constant, relu, shift, clip, multiply, subtract on 1x64
int8/int32 tensors; two branches joined every eight instructions, so that not every
instruction is a single-reader tail). Each is run on the fused plan (what ``model.run`` runs)
and on the one-step-per-instruction plan (``trace=``, whose per-step cost is the loop's own),
on the numpy executor (``vm.cpu(backend="numpy")``; on versions without backends, the only
CPU executor) and, where there is one, on the default CPU executor. Reports microseconds per
program instruction of ``model.run``: the fastest of ``--rounds`` x ``--repeat`` calls.
Run it with another checkout first on ``sys.path`` to compare versions (the Builder and
``vm.load`` / ``model.run`` are all it uses).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import vm  # noqa: E402
from compiler import Builder  # noqa: E402


def chain(n: int = 96):
    """``n`` small pointwise instructions on 1x64 tensors, two branches joined every eight."""
    b = Builder("chain")
    x = b.input("x", (1, 64), 8)
    rng = np.random.default_rng(0)
    a = x
    for k in range(n // 8):
        c = b.const(f"c{k}", rng.integers(-60, 60, (1, 64)), 7)
        y = b.op("elemwise_add", a, c)
        y = b.op("relu", y)
        y = b.op("cvm_right_shift", y, shift_bit=1, precision=8)
        z = b.op("elemwise_sub", a, c)
        z = b.op("cvm_clip", z, precision=8)
        z = b.op("relu", z)
        s = b.op("elemwise_add", y, z)
        a = b.op("cvm_clip", s, precision=8)
    b.output(a)
    return b.build()


def per_instruction(model, feeds, count: int, repeat: int, rounds: int, **kw) -> float:
    """Microseconds per instruction: the fastest of ``rounds`` x ``repeat`` calls (the
    machine's noise only ever adds time)."""
    for _ in range(5):
        model.run(feeds, **kw)
    best = float("inf")
    for _ in range(rounds * repeat):
        t = time.perf_counter()
        model.run(feeds, **kw)
        best = min(best, time.perf_counter() - t)
    return best / count * 1e6


def contexts() -> dict:
    try:
        numpy_ctx = vm.cpu(backend="numpy")
    except TypeError:                          # a version with one CPU executor
        return {"numpy": vm.cpu()}
    return {"numpy": numpy_ctx, "default": vm.cpu()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    digits = vm.decode((ROOT / "vm" / "models" / "digits.dvm").read_bytes())
    image = dict(np.load(ROOT / "vm" / "models" / "digits_inputs.npz"))["image"]
    programs = {"digits CNN": (digits, {"image": image}),
                "96-instruction chain": (chain(), {"x": np.arange(-32, 32, dtype=np.int8)[None]})}
    rows = []
    for label, (program, feeds) in programs.items():
        data, count = vm.encode(program), len(program.code)
        for name, ctx in contexts().items():
            model = vm.load(data, ctx)
            fused = per_instruction(model, feeds, count, args.repeat, args.rounds)
            steps = per_instruction(model, feeds, count, args.repeat, args.rounds,
                                    trace=lambda step, values: None)
            rows.append(dict(program=label, instructions=count, executor=name,
                             fused_us=fused, per_instruction_us=steps,
                             steps=len(getattr(model.plan, "fast", ()) or ())))
    print(f"vm from {Path(vm.__file__).parent.parent}")
    print("| program | instructions | executor | fused plan us/instr (steps) | "
          "one step per instruction us/instr |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['program']} | {r['instructions']} | {r['executor']} | "
              f"{r['fused_us']:.2f} ({r['steps']}) | {r['per_instruction_us']:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
