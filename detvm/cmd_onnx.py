"""The ONNX commands: import-onnx, quantize (docs/onnx.md).

onnx and onnxruntime are imported only when one of them runs.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from compiler.onnx.fixed import ROUNDINGS
from compiler.onnx.quantize import FORMATS, TYPES

from .common import write_file


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
    q.add_argument("--keep-onnx", metavar="PATH", help="also keep the quantized .onnx here")
    _common(q)
    q.set_defaults(func=cmd_quantize)


def _common(p) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT.dvm")
    p.add_argument("--batch", type=int, default=1, help="the symbolic batch axis (default 1)")
    p.add_argument("--rounding", choices=ROUNDINGS, default="fp32",
                   help="requantize rounding: fp32 = onnxruntime's float32 arithmetic "
                        "reproduced with integers (default); half_even = the exact ratio")
    p.add_argument("--name", help="model name (default: the ONNX graph name)")


def _import(path, args):
    from compiler.onnx import import_onnx
    from vm import Model
    model = Model(import_onnx(path, batch=args.batch, rounding=args.rounding, name=args.name))
    write_file(args.output, model.to_bytes())
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {model.gas})")


def cmd_import_onnx(args) -> None:
    _import(args.model, args)


def cmd_quantize(args) -> None:
    from compiler.onnx.graph import load_model
    from compiler.onnx.quantize import quantize_onnx, read_calibration
    names = [i.name for i in load_model(args.model).graph.input]
    data = read_calibration(args.calibration, names[:1] if len(names) == 1 else names)

    def progress(done, total):
        sys.stderr.write(f"\rcalibrating: batch {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.keep_onnx or Path(tmp) / "quantized.onnx")
        quantize_onnx(args.model, data, target, fmt=args.format, activation=args.activation,
                      weight=args.weight, per_channel=not args.per_tensor, progress=progress)
        sys.stderr.write(f"quantized ({args.format}, {args.activation} activations); "
                         "importing\n")
        _import(target, args)
