"""The ``detvm`` command line. User errors print one line and exit non-zero, no traceback.

Exit status: 0 ok; 1 the model or input is at fault (malformed, invalid, trap: deterministic);
2 usage; 3 environment (file missing, executor unavailable, out of memory); 4 internal bug.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import DetvmError, EnvironmentFault, InternalError, TrapError

EXIT_USAGE, EXIT_ENV, EXIT_INTERNAL = 2, 3, 4
DEMO_DIR = Path(__file__).parent / "models"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except DetvmError as e:
        print(f"detvm: {e}", file=sys.stderr)
        if isinstance(e, InternalError):
            return EXIT_INTERNAL
        return EXIT_ENV if isinstance(e, EnvironmentFault) else 1
    except KeyboardInterrupt:
        print("detvm: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="detvm", description="Deterministic integer inference VM")
    p.add_argument("--version", action="version", version=f"detvm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("run", help="run a model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input (NAME= may be left out for a single-input model; "
                        "a .npz file supplies inputs by name)")
    r.add_argument("-o", "--output", help="write the outputs to this .npz")
    r.add_argument("--json", action="store_true")
    r.add_argument("--ctx", default="cpu", choices=["cpu", "gpu", "formal", "reference"])
    r.add_argument("--compat", choices=["cvm"], help="import a CVM directory in compat mode")
    r.add_argument("--float-io", action="store_true",
                   help="quantize float inputs and dequantize outputs (imported models' metadata)")
    r.set_defaults(func=cmd_run)

    ic = sub.add_parser("import-cvm", help="import a CVM model (graph JSON + params) to .dvm")
    ic.add_argument("graph")
    ic.add_argument("params")
    ic.add_argument("-o", "--output", required=True)
    ic.add_argument("--compat", choices=["cvm"], help="reproduce CVM's quirks")
    ic.set_defaults(func=cmd_import_cvm)

    ec = sub.add_parser("export-cvm", help="write a model as a CVM directory (symbol, params)")
    ec.add_argument("model")
    ec.add_argument("-o", "--output", required=True, metavar="DIR")
    ec.set_defaults(func=cmd_export_cvm)

    m = sub.add_parser("demo", help="run the shipped digits CNN and check its output bytes")
    m.set_defaults(func=cmd_demo)

    from verify.cli import add_commands     # verify, check-cert (z3 imported only when run)
    add_commands(sub)
    from compiler.onnx.cli import add_commands as add_onnx_commands   # import-onnx, quantize
    add_onnx_commands(sub)
    return p


# ---------------------------------------------------------------------------------------------

def _load(path: str, ctx: str = "cpu", compat: str | None = None):
    from . import Context, Model, load
    if Path(path).is_dir():
        return Model(_import_cvm(Path(path) / "symbol", Path(path) / "params", compat),
                     Context(ctx))
    return load(path, Context(ctx))


def _read(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror or e}") from None


def _import_cvm(graph: Path, params: Path, compat: str | None):
    from compiler.cvm import import_cvm
    name = graph.parent.resolve().name if graph.name == "symbol" else graph.stem
    return import_cvm(_read(graph), _read(params), compat, name=name or "cvm")


def cmd_import_cvm(args) -> None:
    from . import Model
    model = Model(_import_cvm(Path(args.graph), Path(args.params), args.compat))
    _write(args.output, model.to_bytes())
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {model.gas})")


def cmd_export_cvm(args) -> None:
    from compiler.cvm import export_cvm
    graph, params = export_cvm(_load(args.model).program)
    try:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create {args.output}: {e.strerror or e}") from None
    _write(Path(args.output) / "symbol", graph)
    _write(Path(args.output) / "params", params)
    print(f"{args.output}: symbol ({len(graph)} bytes), params ({len(params)} bytes)")


def _write(path: str, data: bytes | str) -> None:
    try:
        Path(path).write_bytes(data.encode() if isinstance(data, str) else data)
    except OSError as e:
        raise EnvironmentFault(f"cannot write {path}: {e.strerror or e}") from None


def cmd_compile(args) -> None:
    from compiler import parse
    from . import Model
    try:
        text = Path(args.source).read_text(encoding="utf-8")
    except OSError as e:
        raise EnvironmentFault(f"cannot read {args.source}: {e.strerror or e}") from None
    model = Model(parse(text))
    _write(args.output, model.to_bytes())
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {model.gas})")


def cmd_dis(args) -> None:
    from compiler import disassemble
    text = disassemble(_load(args.model).program)
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)


def info_dict(model) -> dict:
    """Everything known about a model before running it."""
    t = lambda ts: [{"name": x.name, "shape": list(x.shape), "precision": x.precision,
                     "dtype": x.dtype.name} for x in ts]
    return {"model": model.hash, "name": model.name, "semantics": model.program.semantics,
            "inputs": t(model.inputs), "outputs": t(model.outputs), "gas": model.gas,
            "peak_memory": model.peak_memory, "input_length": model.input_length,
            "input_type_size": model.input_type_size, "output_length": model.output_length,
            "output_type_size": model.output_type_size,
            "instructions": len(model.program.code),
            "ops": dict(sorted(Counter(i.op for i in model.program.code).items())),
            "metadata": model.metadata, **_cvm_facts(model)}


def _cvm_facts(model) -> dict:
    """CVM's API facts of a model imported from CVM."""
    if "cvm.compat" not in model.metadata:
        return {}
    from .runtime import CVMError, load_model
    try:
        return {"cvm": load_model(model).info()}
    except CVMError as e:
        return {"cvm": {"error": e.message}}


def cmd_info(args) -> None:
    info = info_dict(_load(args.model, compat=args.compat))
    if args.json:
        print(json.dumps(info, indent=2))
        return
    io = lambda x: f"%{x['name']} {x['shape']} p{x['precision']} {x['dtype']}"
    print(f"model      {info['name']}\nhash       {info['model']}\n"
          f"semantics  {info['semantics']}")
    for x in info["inputs"]:
        print(f"input      {io(x)}")
    for x in info["outputs"]:
        print(f"output     {io(x)}")
    print(f"gas        {info['gas']}\npeak mem   {info['peak_memory']} bytes\n"
          f"CVM        input_length {info['input_length']}, input_type_size "
          f"{info['input_type_size']}, output_length {info['output_length']}, "
          f"output_type_size {info['output_type_size']}")
    ops = ", ".join(f"{k} {v}" for k, v in info["ops"].items())
    print(f"code       {info['instructions']} instructions: {ops}")
    for k, v in info["metadata"].items():
        print(f"meta       {k} = {v}")
    for k, v in info.get("cvm", {}).items():
        print(f"cvm        {k} = {v}")


def _read_inputs(specs: list[str], model) -> dict:
    feeds = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        if not name:
            if len(model.inputs) != 1 and not path.endswith(".npz"):
                raise TrapError(f"--input {spec}: the model has several inputs; write NAME=FILE")
            name = model.inputs[0].name
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EnvironmentFault(f"cannot read input {path}: {e}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            feeds.update({k: loaded[k] for k in loaded.files})
        else:
            feeds[name] = loaded
    return feeds


def output_digest(outputs: dict) -> str:
    """SHA-256 over the outputs' bytes (storage dtype, little endian, in output order)."""
    h = hashlib.sha256()
    for a in outputs.values():
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def cmd_run(args) -> None:
    model = _load(args.model, args.ctx, args.compat)
    outputs = model.run(_read_inputs(args.input, model), float_io=args.float_io)
    if args.output:
        try:
            np.savez(args.output, **outputs)
        except OSError as e:
            raise EnvironmentFault(f"cannot write {args.output}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps({"model": model.hash, "gas": model.gas,
                          "output_sha256": output_digest(outputs),
                          "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name,
                                          "values": v.reshape(-1).tolist()}
                                      for k, v in outputs.items()}}))
        return
    for k, v in outputs.items():
        print(f"%{k} {list(v.shape)} {v.dtype.name}\n{np.array2string(v, threshold=64)}")
    print(f"model {model.hash}\ngas {model.gas}\noutput sha256 {output_digest(outputs)}")


def cmd_demo(args) -> int:
    """The shipped digits CNN (examples/train_digits.py) on eight held-out test images."""
    from . import load
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
