"""The float boundary of imported models: ``Model.run(inputs, float_io=True)``.

The VM stays integer-only. This module, outside it, quantizes float inputs with the scale and
zero point stored in the model's metadata and dequantizes the outputs, in IEEE float32 exactly
as ONNX QuantizeLinear / DequantizeLinear (and onnxruntime) do:

    q = clip(round_half_even(x / scale) + zero_point, type range)      (input.NAME.*)
    y = (q - zero_point) * scale          then softmax when output.NAME.post = softmax:AXIS

Metadata keys (docs/onnx.md): ``input.NAME.scale`` / ``.zero_point`` (comma lists: one value,
or one per index along ``.axis``), ``.dtype``; ``output.NAME.scale`` / ``.zero_point`` /
``.axis`` / ``.post``. Inputs and outputs without a scale pass through as integers.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import TrapError

RANGES = {"int2": (-2, 1), "uint2": (0, 3), "int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
          "uint16": (0, 65535), "int32": (-(1 << 31) + 1, (1 << 31) - 1)}


def _params(meta: Mapping[str, str], key: str, ndim: int):
    """(scale float32, zero float32) broadcastable to an ndim array, or None."""
    if key + "scale" not in meta:
        return None
    scale = np.array([float(v) for v in meta[key + "scale"].split(",")], dtype=np.float32)
    zero = np.array([int(v) for v in meta.get(key + "zero_point", "0").split(",")],
                    dtype=np.float32)
    axis = int(meta.get(key + "axis", "1"))
    shape = [-1 if d == axis else 1 for d in range(ndim)]
    return (scale.reshape(shape) if scale.size > 1 else scale.reshape(()),
            zero.reshape(shape) if zero.size > 1 else zero.reshape(()))


def quantize_inputs(model, inputs: Any) -> Any:
    """Float arrays quantized for every input that has a stored scale."""
    if not isinstance(inputs, Mapping):
        if len(model.inputs) != 1:
            return inputs                   # Model.run reports the error
        inputs = {model.inputs[0].name: inputs}
    out = dict(inputs)
    for t in model.inputs:
        key = f"input.{t.name}."
        params = _params(model.metadata, key, len(t.shape))
        if params is None or t.name not in inputs:
            continue
        x = np.asarray(inputs[t.name], dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise TrapError(f"input {t.name!r}: non-finite float values")
        scale, zero = params
        q = np.rint(x / scale) + zero
        lo, hi = RANGES[model.metadata.get(key + "dtype", "int8")]
        out[t.name] = np.clip(q, lo, hi).astype(np.int64)
    return out


def dequantize_outputs(model, outputs: dict) -> dict:
    """Float32 outputs for every output that has a stored scale (softmax applied if asked)."""
    result = {}
    for name, q in outputs.items():
        key = f"output.{name}."
        params = _params(model.metadata, key, q.ndim)
        if params is None:
            result[name] = q
            continue
        scale, zero = params
        y = (q.astype(np.float32) - zero) * scale
        post = model.metadata.get(key + "post", "")
        if post.startswith("softmax:"):
            axis = int(post.split(":")[1])
            e = np.exp(y - y.max(axis=axis, keepdims=True))
            y = e / e.sum(axis=axis, keepdims=True)
        result[name] = y.astype(np.float32)
    return result
