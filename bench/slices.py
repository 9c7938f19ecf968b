"""Slices of real models for bench/compare.py: the first six convolutions of a pretrained
model (and every node they depend on), with the model's input fixed to batch 1, quantized as
``detvm quantize`` does (QDQ, uint8 activations, int8 per-channel weights) and imported.

The models come from compiler/onnx/zoo.py (pinned wheels, cached in ~/.cache/detvm/models);
a model that is not cached and cannot be fetched is skipped with the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CONVS = 6
SLICES = {           # model: (input name, input shape)
    "ppocr-cls": ("x", (1, 3, 48, 192)),
    "yolov8n-320": ("images", (1, 3, 320, 320)),
    "ppocr-det": ("x", (1, 3, 640, 640)),
}


def conv_slice(name: str, tmp: Path, convs: int = CONVS) -> Path:
    """The float ONNX model from ``name``'s input to the output of its ``convs``-th Conv
    (in the graph's node order), input dims fixed; its path."""
    import onnx
    from onnx.utils import Extractor
    from compiler.onnx import zoo
    from compiler.onnx.graph import load_model, with_input_dims
    input_name, shape = SLICES[name]
    model = with_input_dims(load_model(zoo.fetch(name)), {input_name: shape})
    model = onnx.shape_inference.infer_shapes(model)
    ends = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    sliced = Extractor(model).extract_model([input_name], [ends[convs - 1]])
    path = tmp / f"{name}.{convs}conv.onnx"
    onnx.save(sliced, path)
    return path


def quantized_slice(name: str, tmp: Path) -> tuple[Path, Path, bytes]:
    """(float slice, its QDQ int8 quantization, the .dvm bytes detvm imports from it)."""
    import vm
    from compiler.onnx import import_onnx
    from compiler.onnx.quantize import quantize_onnx
    input_name, shape = SLICES[name]
    fixed = conv_slice(name, tmp)
    calibration = np.random.default_rng(0).random((8, *shape[1:]), dtype=np.float32)
    quantized = Path(quantize_onnx(fixed, {input_name: calibration},
                                   tmp / f"{name}.{CONVS}conv.int8.onnx",
                                   shapes={input_name: shape}, activation="uint8",
                                   op_types=None))
    return fixed, quantized, vm.encode(import_onnx(str(quantized), batch=1))
