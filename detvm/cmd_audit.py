"""The audit commands: trace, replay, diff (docs/audit.md). ``run --receipt`` is in cmd_model.

Exit status of replay and diff: 0 when the runs agree, 1 when they differ (or the receipt is
not this model's or these inputs'), as for any deterministic fault.
"""
from __future__ import annotations

import json
import sys

from vm.divergence import EXECUTORS
from vm.errors import TrapError

from .common import load_model, read_file, read_inputs


def add_commands(sub) -> None:
    t = sub.add_parser("trace", help="hash every instruction's output and the Merkle root")
    t.add_argument("model")
    _inputs(t)
    t.add_argument("--ctx", default="cpu", choices=CONTEXTS)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_trace)

    r = sub.add_parser("replay", help="re-run a receipt: 'match' or the first difference")
    r.add_argument("receipt", help="a receipt written by `detvm run --receipt`")
    r.add_argument("--model", required=True)
    _inputs(r)
    r.add_argument("--ctx", default="cpu", choices=CONTEXTS)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser("diff", help="the first instruction where executors (or a receipt) "
                                    "part, with both values")
    d.add_argument("model")
    _inputs(d)
    d.add_argument("--executors", default=None, metavar="A,B[,...]",
                   help=f"executors to compare (of {', '.join(EXECUTORS)}; default "
                        "cpu,reference, or cpu against a receipt)")
    d.add_argument("--against", metavar="R.json", help="compare with a receipt's trace")
    d.add_argument("--fast", action="store_true",
                   help="trace each executor's fastest path (fused CPU steps, onnxruntime "
                        "regions) instead of the per-instruction one")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_diff)


def _inputs(p) -> None:
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input (NAME= may be left out for a single-input model; "
                        "a .npz file supplies inputs by name)")


CONTEXTS = ("cpu", "reference", "formal", "gpu")


def _executors(spec: str | None, default: str) -> list[str]:
    from vm.divergence import context
    names = [s.strip() for s in (spec or default).split(",") if s.strip()]
    for n in names:
        context(n)                       # a TrapError naming an unknown one
    return names


def cmd_trace(args) -> None:
    from vm.audit import trace
    model = load_model(args.model, args.ctx)
    tr = trace(model, read_inputs(args.input, model))
    if args.json:
        print(json.dumps({"model": tr.model, "semantics": tr.semantics, "executor": tr.executor,
                          "root": tr.root, "instructions": [
                              {"index": e.index, "op": e.op,
                               "outputs": [{"name": o.name, "shape": list(o.shape),
                                            "dtype": o.dtype, "sha256": o.sha256}
                                           for o in e.outputs]} for e in tr.entries]}))
        return
    print(f"model  {tr.model}\nsemantics {tr.semantics}, executor {tr.executor}")
    width = max((len(e.op) for e in tr.entries), default=2)
    for e in tr.entries:
        for o in e.outputs:
            print(f"{e.index:5d}  {e.op:<{width}}  {o.sha256}  %{o.name} {list(o.shape)} "
                  f"{o.dtype}")
    print(f"root   {tr.root}")


def cmd_replay(args) -> int:
    from vm import receipt
    from vm.audit import trace
    doc = receipt.loads(read_file(args.receipt))
    model = load_model(args.model, args.ctx)
    verdict = receipt.compare(doc, trace(model, read_inputs(args.input, model)))
    if args.json:
        print(json.dumps({"match": verdict.match, "first": verdict.first,
                          "problems": verdict.problems}))
    elif verdict.match:
        print(f"match: model {doc['model']['sha256'][:16]}..., trace root {doc['trace']['root']}")
    else:
        if verdict.first is not None:
            print(f"first difference: {model.program.describe(verdict.first)}")
        for problem in verdict.problems:
            print(f"differs: {problem}")
    return 0 if verdict.match else 1


def cmd_diff(args) -> int:
    from vm import receipt
    from vm.divergence import context, diff, diff_receipt
    if args.against:
        doc = receipt.loads(read_file(args.against))
        names = _executors(args.executors, "cpu")
        model = load_model(args.model, context(names[0]))
        report = diff_receipt(model, read_inputs(args.input, model), doc, names[0], args.fast)
    else:
        names = _executors(args.executors, "cpu,reference")
        if len(names) < 2:
            raise TrapError("--executors: name at least two (or use --against R.json)")
        model = load_model(args.model)
        inputs = read_inputs(args.input, model)
        report = diff(model.program, inputs, [context(n) for n in names], names,
                      fast=args.fast)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_report(report, sys.stdout)
    return 0 if report.agree else 1


def _print_report(report, out) -> None:
    sides = ", ".join(report.sides)
    if report.agree:
        root = next(iter(report.roots.values()))
        n = report.compared
        what = f"trace root {root}" if root else f"{n} tensor{'s' * (n != 1)} compared"
        out.write(f"agree: {sides} ({what})\n")
        return
    out.write(f"differ: {sides}\n")
    div = report.divergence
    if div is not None:
        a, b = div.sides
        attrs = ", ".join(f"{k}={v}" for k, v in div.attrs.items()) or "none"
        shapes = lambda ts: ", ".join(f"%{t['name']} {t['shape']} p{t['precision']}" for t in ts)
        out.write(f"first divergence: %{div.output}, computed by instruction {div.index} "
                  f"`{div.text}`\n"
                  f"  op {div.op}; attributes {attrs}\n"
                  f"  inputs {shapes(div.inputs) or 'none'}; outputs {shapes(div.outputs)}\n")
        if div.element is not None:
            out.write(f"  %{div.output}{list(div.element)} (flat index {div.flat}): "
                      f"{a} {div.values[0]}, {b} {div.values[1]}\n")
        out.write(f"  sha256 of %{div.output}: {a} {div.hashes[0]}, {b} {div.hashes[1]}\n")
        for side, covers in div.steps.items():
            out.write(f"  {side} computed it in one step covering instructions "
                      f"{', '.join(map(str, covers))}\n")
        if div.note:
            out.write(f"  note: {div.note}\n")
    for problem in report.problems:
        out.write(f"  {problem}\n")
