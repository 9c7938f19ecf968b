"""The model commands: compile, dis, info, run, demo."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vm.errors import EnvironmentFault
from vm.executors import BACKENDS

from .common import (DEMO_DIR, add_memory_ceiling, limits_of, load_model, output_digest,
                     read_inputs, write_file)
from .info import info_of, print_info


BACKEND_HELP = ("the CPU backend: auto (onnxruntime's integer kernels where its self-test "
                "passed and they pay), onnxruntime (every instruction it can), numpy")


def add_commands(sub) -> None:
    c = sub.add_parser("compile", help="assemble a .dvmt text program into a .dvm model")
    c.add_argument("source")
    c.add_argument("-o", "--output", required=True)
    c.set_defaults(func=cmd_compile)

    d = sub.add_parser("dis", help="disassemble a model into readable text")
    d.add_argument("model")
    d.add_argument("-o", "--output")
    d.set_defaults(func=cmd_dis)

    i = sub.add_parser("info", help="hash, inputs, outputs, gas, memory, CVM lengths")
    i.add_argument("model", help="a .dvm/.dvmt file or a CVM model directory (symbol, params)")
    i.add_argument("--json", action="store_true")
    i.add_argument("--compat", choices=["cvm"], help="import a CVM directory in compat mode")
    i.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    add_memory_ceiling(i)
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("run", help="run a model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input (NAME= may be left out for a single-input model; "
                        "a .npz file supplies inputs by name)")
    r.add_argument("-o", "--output", help="write the outputs to this .npz")
    r.add_argument("--json", action="store_true")
    r.add_argument("--ctx", default="cpu", choices=["cpu", "gpu", "formal", "reference"])
    r.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    add_memory_ceiling(r)
    r.add_argument("--compat", choices=["cvm"], help="import a CVM directory in compat mode")
    r.add_argument("--float-io", action="store_true",
                   help="quantize float inputs and dequantize outputs (imported models' metadata)")
    r.add_argument("--receipt", metavar="R.json", help="also write the run's receipt (runs "
                   "instruction by instruction to hash every output; docs/audit.md)")
    r.add_argument("--trace-level", choices=["root", "hashes", "full"], default="hashes",
                   help="what the receipt keeps of the trace: the root, every instruction's "
                        "output hashes (default), or their values too")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("demo", help="run the shipped digits CNN and check its output bytes")
    m.set_defaults(func=cmd_demo)


def cmd_compile(args) -> None:
    from compiler import parse
    from vm import Model
    try:
        text = Path(args.source).read_text(encoding="utf-8")
    except OSError as e:
        raise EnvironmentFault(f"cannot read {args.source}: {e.strerror or e}") from None
    model = Model(parse(text))
    write_file(args.output, model.to_bytes())
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {model.gas})")


def cmd_dis(args) -> None:
    from compiler import disassemble
    text = disassemble(load_model(args.model).program)
    if args.output:
        write_file(args.output, text)
    else:
        sys.stdout.write(text)


def cmd_info(args) -> None:
    info = info_of(load_model(args.model, compat=args.compat, backend=args.backend,
                              limits=limits_of(args)))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_info(info)


def cmd_run(args) -> None:
    model = load_model(args.model, args.ctx, args.compat, args.backend, limits_of(args))
    feeds = read_inputs(args.input, model)
    if args.receipt:
        outputs = _run_with_receipt(model, feeds, args)
    else:
        outputs = model.run(feeds, float_io=args.float_io)
    if args.float_io:
        from vm.floatio import quantize_inputs
        feeds = quantize_inputs(model, feeds)
    gas = model.gas_for(**model.dims(feeds))          # what this call was charged
    if args.output:
        try:
            np.savez(args.output, **outputs)
        except OSError as e:
            raise EnvironmentFault(f"cannot write {args.output}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps({"model": model.hash, "gas": gas,
                          "output_sha256": output_digest(outputs),
                          "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name,
                                          "values": v.reshape(-1).tolist()}
                                      for k, v in outputs.items()}}))
        return
    for k, v in outputs.items():
        print(f"%{k} {list(v.shape)} {v.dtype.name}\n{np.array2string(v, threshold=64)}")
    print(f"model {model.hash}\ngas {gas}\noutput sha256 {output_digest(outputs)}")


def _run_with_receipt(model, inputs, args) -> dict:
    """Run through :func:`vm.trace` and write the receipt (the integer run: float inputs are
    quantized first, and the outputs dequantized after)."""
    from vm import receipt, trace
    from vm.floatio import dequantize_outputs, quantize_inputs
    tr = trace(model, quantize_inputs(model, inputs) if args.float_io else inputs,
               keep="all" if args.trace_level == "full" else ())
    write_file(args.receipt, receipt.dumps(receipt.make(tr, model.name, args.trace_level)))
    return dequantize_outputs(model, tr.results) if args.float_io else tr.results


def cmd_demo(args) -> int:
    """The shipped digits CNN (examples/train_digits.py) on eight held-out test images."""
    from vm import load
    model = load(DEMO_DIR / "digits.dvm")
    data = dict(np.load(DEMO_DIR / "digits_inputs.npz"))
    expected = dict(np.load(DEMO_DIR / "digits_expected.npz"))
    outputs = model.run({t.name: data[t.name] for t in model.inputs})
    labels = model.metadata.get("labels", "").split(",")
    scores = next(iter(outputs.values()))
    print(f"model   {model.name} ({model.hash[:16]}...)")
    print(f"gas     {model.gas}")
    for k, row in enumerate(scores.reshape(scores.shape[0], -1)):
        best = int(np.argmax(row))
        name = labels[best] if best < len(labels) else str(best)
        truth = f" (label {int(data['label'][k])})" if "label" in data else ""
        print(f"image {k}: {name:<3}{truth:<11} int8 logits {row.tolist()}")
    same = output_digest(outputs) == output_digest(expected)
    print(f"output sha256 {output_digest(outputs)}: "
          + ("matches the expected bytes" if same else "DIFFERS from the expected bytes"))
    from vm import receipt
    shipped = receipt.loads((DEMO_DIR / "digits_receipt.json").read_bytes())
    replay = receipt.compare(shipped, model.trace({t.name: data[t.name] for t in model.inputs}))
    print(f"trace root {shipped['trace']['root'][:16]}... (every instruction's output hashed): "
          + ("matches the shipped receipt" if replay.match else
             f"DIFFERS from the shipped receipt: {replay.problems[0]}"))
    return 0 if same and replay.match else 1
