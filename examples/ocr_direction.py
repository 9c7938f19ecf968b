"""Is this line of text upside down? PP-OCR's text-direction classifier, run by detvm.

    pip install ".[onnx,test]"          # onnx, onnxruntime, Pillow (renders the text)
    python examples/ocr_direction.py ["some text"] [--turn] [--out DIR]

1. fetches the pretrained classifier from the rapidocr-onnxruntime wheel (compiler/onnx/zoo.py,
   cached in ~/.cache/detvm/models);
2. quantizes it as ``detvm quantize`` does (input 1x3x48x192, uint8 activations, int8
   per-channel weights, calibrated on 32 rendered words) and imports it: an integer-only
   program, written to DIR/ppocr-cls.dvm (and the quantized ONNX beside it);
3. renders the text with Pillow (upright, or turned 180 degrees with --turn), preprocesses it as
   rapidocr does, and runs the program: the same bytes on every machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vm  # noqa: E402
from compiler.onnx import import_onnx, samples, zoo  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402

LABELS = ("0", "180")
SHAPE = (1, 3, 48, 192)


def build(out: Path) -> vm.Model:
    """The quantized classifier as a detvm model (built once into ``out``)."""
    dvm = out / "ppocr-cls.dvm"
    if not dvm.exists():
        calibration, _ = samples.text_crops(32, seed=1)
        onnx_path = quantize_onnx(zoo.fetch("ppocr-cls"), {"x": calibration},
                                  out / "ppocr-cls.int8.onnx", shapes={"x": SHAPE},
                                  activation="uint8", op_types=None)
        dvm.write_bytes(vm.encode(import_onnx(onnx_path)))
    return vm.load(dvm)


def render(text: str, turn: bool) -> np.ndarray:
    """The text drawn black on white, as rapidocr hands a crop to the classifier (BGR)."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=32)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font)
    image = Image.new("RGB", (right - left + 12, bottom - top + 12), "white")
    ImageDraw.Draw(image).text((6 - left, 6 - top), text, font=font, fill="black")
    if turn:
        image = image.rotate(180)
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def classify(model: vm.Model, crop: np.ndarray) -> tuple[str, float]:
    x = samples.classifier_input(crop)[None]
    name = model.outputs[0].name
    probs = model.run({model.inputs[0].name: x}, float_io=True)[name][0]
    return LABELS[int(np.argmax(probs))], float(np.max(probs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("text", nargs="?", default="Deterministic inference, every time")
    p.add_argument("--turn", action="store_true", help="turn the text upside down")
    p.add_argument("--out", type=Path, help="where to keep the models (default: a temporary "
                                            "directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        model = build(out)
        label, confidence = classify(model, render(args.text, args.turn))
    print(f"{args.text!r}{' (turned)' if args.turn else ''}: {label} degrees "
          f"(probability {confidence:.3f})")
    print(f"model {model.hash[:16]}... gas {model.gas}, {len(model.program.code)} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
