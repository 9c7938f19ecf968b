"""``detvm quantize``: onnxruntime.quantization.quantize_static with good defaults, fed from an
``.npz`` of calibration samples, then :func:`compiler.onnx.import_onnx`.

onnxruntime's pre-processing (shape inference, BatchNormalization folded into Conv), static
quantization, MinMax calibration, int8 weights per channel (symmetric), activations int8 or
uint8 (asymmetric), QDQ (default) or QOperator format. onnxruntime is optional
(``pip install 'detvm[onnx]'``) and imported only here.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Mapping

import numpy as np

from vm.errors import EnvironmentFault, InvalidError

from .graph import optional_module

FORMATS = ("qdq", "qoperator")
TYPES = ("int8", "uint8")
CHUNK = 16
"""Calibration samples per ORT run when the model's batch axis is symbolic."""


def _ort_quantization():
    return optional_module("onnxruntime.quantization", "quantize")


def read_calibration(path, input_names: list[str]) -> dict[str, np.ndarray]:
    """Arrays keyed by input name from an .npz (a single array serves a single input)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise EnvironmentFault(f"cannot read calibration data {path}: {e}") from None
    if len(arrays) == 1 and len(input_names) == 1:
        return {input_names[0]: next(iter(arrays.values()))}
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise InvalidError(f"calibration data has no array for input(s) {', '.join(missing)} "
                           f"(arrays: {', '.join(arrays)})")
    return {n: arrays[n] for n in input_names}


def _reader(quantization, samples: Mapping[str, np.ndarray], static_batch: int | None,
            progress: Callable | None):
    n = len(next(iter(samples.values())))
    step = static_batch or CHUNK
    starts = list(range(0, n - step + 1 if static_batch else n, step))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.k = 0

        def get_next(self):
            if self.k >= len(starts):
                return None
            s = starts[self.k]
            self.k += 1
            if progress is not None:
                progress(self.k, len(starts))
            return {name: a[s:s + step].astype(np.float32) for name, a in samples.items()}
    return Reader()


def _preprocessed(quantization, model_path, output_path) -> str:
    """onnxruntime's recommended pre-processing (shape inference, graph optimizations that
    fold BatchNormalization into Conv), written next to the output; the model unchanged if
    it fails."""
    target = os.fspath(output_path) + ".pre.onnx"
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        quant_pre_process(os.fspath(model_path), target)
        return target
    except ImportError as e:        # a missing dependency is the environment's fault: say so
        raise EnvironmentFault(f"onnxruntime's quantization pre-processing lacks a dependency "
                               f"({e}); pip install 'detvm[onnx]'") from None
    except Exception:               # optional step: e.g. symbolic shape inference refuses
        return os.fspath(model_path)


def quantize_onnx(model_path, calibration: Mapping[str, np.ndarray], output_path, *,
                  fmt: str = "qdq", activation: str = "int8", weight: str = "int8",
                  per_channel: bool = True, progress: Callable | None = None) -> str:
    """Write the statically quantized model to ``output_path``; return it."""
    q = _ort_quantization()
    if fmt not in FORMATS or activation not in TYPES or weight not in TYPES:
        raise InvalidError(f"format must be one of {FORMATS}, types one of {TYPES}")
    from .graph import load_model
    model = load_model(os.fspath(model_path))
    first = model.graph.input[0].type.tensor_type.shape.dim
    static = int(first[0].dim_value) if first and first[0].HasField("dim_value") else None
    types = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    logging.disable(logging.WARNING)            # its advice goes to the root logger
    try:
        q.quantize_static(
            _preprocessed(q, model_path, output_path), os.fspath(output_path),
            _reader(q, calibration, static, progress),
            quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
            activation_type=types[activation], weight_type=types[weight],
            per_channel=per_channel, calibrate_method=q.CalibrationMethod.MinMax,
            op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool",
                                  "GlobalAveragePool", "Relu", "Clip", "Concat", "Flatten",
                                  "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad"])
    except (ValueError, RuntimeError) as e:
        raise InvalidError(f"onnxruntime quantization failed: {e}") from None
    finally:
        logging.disable(logging.NOTSET)
        if os.path.exists(os.fspath(output_path) + ".pre.onnx"):
            os.remove(os.fspath(output_path) + ".pre.onnx")
    return os.fspath(output_path)
