"""The ONNX commands: import-onnx, quantize (docs/onnx.md).

onnx and onnxruntime are imported only when one of them runs. Progress and notes go to
stderr, the written model's summary to stdout.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from compiler.onnx.fixed import ROUNDINGS
from compiler.onnx.quantize import FORMATS, TYPES
from vm.errors import InvalidError

from .common import add_memory_ceiling, limits_of, write_file


def add_commands(sub) -> None:
    i = sub.add_parser("import-onnx", help="import a quantized ONNX model (QDQ or QOperator)")
    i.add_argument("model", help="the .onnx file (from onnxruntime.quantization)")
    _common(i)
    i.set_defaults(func=cmd_import_onnx)

    q = sub.add_parser("quantize", help="quantize a float ONNX model with onnxruntime, then "
                                        "import it")
    q.add_argument("model", help="the float .onnx file")
    q.add_argument("--calibration", required=True, metavar="DATA.npz",
                   help="calibration samples: one array per input name (first axis: samples)")
    q.add_argument("--format", choices=FORMATS, default="qdq")
    q.add_argument("--activation", choices=TYPES, default="int8")
    q.add_argument("--weight", choices=TYPES, default="int8")
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor "
                                                            "(default: per output channel)")
    q.add_argument("--op-types", type=_op_types, default=False, metavar="all|OP,OP,...",
                   help="the op types onnxruntime quantizes (default: all, every one it can)")
    q.add_argument("--no-split-outputs", dest="split_outputs", action="store_false",
                   help="quantize a Concat that makes a graph output with one scale (by "
                        "default it stays float: each input keeps its own scale)")
    q.add_argument("--save-onnx", "--keep-onnx", metavar="PATH", dest="save_onnx",
                   help="also write the quantized .onnx that is imported here")
    _common(q)
    q.set_defaults(func=cmd_quantize)


def _common(p) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT.dvm")
    p.add_argument("--shape", action="append", type=shape_arg, default=[],
                   metavar="NAME=D0,D1,...",
                   help="fix the dims of input NAME (repeatable; needed for symbolic dims "
                        "other than the batch; D0 = N keeps the batch symbolic)")
    p.add_argument("--batch", type=int, default=None,
                   help="fix a symbolic batch axis to this size (by default it stays symbolic)")
    p.add_argument("--max", action="append", type=max_arg, default=[], metavar="NAME=K",
                   help="the maximum of the symbolic batch NAME (default: the largest power "
                        "of two up to 1024 within the gas and memory ceilings)")
    p.add_argument("--rounding", choices=ROUNDINGS, default="fp32",
                   help="requantize rounding: fp32 = onnxruntime's float32 arithmetic "
                        "reproduced with integers (default); half_even = the exact ratio")
    p.add_argument("--name", help="model name (default: the ONNX graph name)")
    add_memory_ceiling(p)


def shape_arg(text: str) -> tuple[str, tuple]:
    """``NAME=D0,D1,...`` -> (NAME, dims); D0 may name the symbolic batch (``N``): the
    other dims are fixed, the batch stays symbolic. A usage error otherwise."""
    name, sep, dims = text.rpartition("=")
    parts = dims.split(",")
    try:
        values = tuple(int(d) for d in parts[1:])
        first = parts[0] if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parts[0]) else int(parts[0])
    except ValueError:
        values = first = None
    if not sep or not name or values is None or any(d < 1 for d in values) or (
            isinstance(first, int) and first < 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=D0,D1,... with positive "
                                         "integer dims (D0 may name the symbolic batch: N)")
    return name, (first, *values)


def max_arg(text: str) -> tuple[str, int]:
    """``NAME=K`` -> (NAME, K); a usage error otherwise."""
    name, sep, value = text.rpartition("=")
    if not sep or not name or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=K with a positive integer K")
    return name, int(value)


def _op_types(text: str):
    return None if text == "all" else tuple(t for t in text.split(",") if t)


def shapes_of(args) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in args.shape:
        if name in shapes and shapes[name] != dims:
            raise InvalidError(f"--shape gives input {name!r} two shapes")
        shapes[name] = dims
    return shapes


def _import(path, args):
    from compiler.onnx import import_onnx
    from vm import Model
    maxima = dict(args.max)
    if len(maxima) != len(args.max):
        raise InvalidError("--max gives a symbol twice")
    limits = limits_of(args)
    model = Model(import_onnx(path, batch=args.batch, shapes=shapes_of(args), maxima=maxima,
                              rounding=args.rounding, name=args.name, limits=limits),
                  limits=limits)
    write_file(args.output, model.to_bytes())
    symbols = "".join(f", {s} <= {n}" for s, n in model.symbols.items())
    gas = model.gas_formula if model.symbols else model.gas
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {gas}{symbols})")


def cmd_import_onnx(args) -> None:
    _import(args.model, args)


def _note(message: str) -> None:
    sys.stderr.write(f"detvm: note: {message}\n")


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rcalibrating: batch {done}/{total}")
    if done == total:
        sys.stderr.write("\nquantizing\n")
    sys.stderr.flush()


def cmd_quantize(args) -> None:
    from compiler.onnx import check_float_model, left_float
    from compiler.onnx.graph import load_model
    from compiler.onnx.prepare import input_names
    from compiler.onnx.quantize import quantize_onnx, read_calibration
    float_model = load_model(args.model)
    shapes = shapes_of(args)
    check_float_model(float_model, batch=args.batch or 1, shapes=shapes)
    data = read_calibration(args.calibration, input_names(float_model))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.save_onnx or Path(tmp) / "quantized.onnx")
        options = {} if args.op_types is False else {"op_types": args.op_types}
        quantize_onnx(float_model, data, target, shapes=shapes, fmt=args.format,
                      activation=args.activation, weight=args.weight,
                      per_channel=not args.per_tensor, split_outputs=args.split_outputs,
                      progress=_progress, notify=_note, **options)
        leftovers = left_float(target, batch=args.batch or 1, shapes=shapes)
        if leftovers:
            sys.stderr.write(f"detvm: warning: the quantized model has nodes that detvm "
                             f"cannot import (left float by onnxruntime, or quantized ops "
                             f"detvm lacks): {leftovers}\n")
        sys.stderr.write(f"quantized ({args.format}, {args.activation} activations); "
                         "importing\n")
        _import(target, args)
