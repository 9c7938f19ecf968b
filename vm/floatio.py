"""The float boundary of imported models: ``Model.run(inputs, float_io=True)``.

The VM stays integer-only. This module, outside it, quantizes float inputs with the scale and
zero point stored in the model's metadata and dequantizes the outputs, in IEEE float32 exactly
as ONNX QuantizeLinear / DequantizeLinear (and onnxruntime) do:

    q = clip(round_half_even(x / scale) + zero_point, type range)      (input.NAME.*)
    y = (q - zero_point) * scale          then softmax when output.NAME.post = softmax:AXIS

Metadata keys (docs/onnx.md): ``input.NAME.scale`` / ``.zero_point`` (comma lists: one value,
or one per index along ``.axis``), ``.dtype``; ``output.NAME.scale`` / ``.zero_point`` /
``.axis`` / ``.post``. Inputs and outputs without a scale pass through as integers.

The metadata is untrusted: :func:`read_params` checks it completely when the model loads (an
InvalidError naming the key), so a run never meets a bad scale, zero point, type or axis.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ops.base import bound, shown

from .errors import InvalidError, TrapError

RANGES = {"int2": (-2, 1), "uint2": (0, 3), "int4": (-8, 7), "uint4": (0, 15),
          "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
          "uint16": (0, 65535), "int32": (-(1 << 31) + 1, (1 << 31) - 1)}
FIELDS = {"input": ("scale", "zero_point", "axis", "dtype"),
          "output": ("scale", "zero_point", "axis", "post")}
_FLOAT = re.compile(r"[+-]?(\d{1,40}\.?\d{0,40}|\.\d{1,40})([eE][+-]?\d{1,4})?")
_INT = re.compile(r"[+-]?\d{1,12}")
F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Quantization:
    """How one input or output crosses the float boundary: float32 ``scale`` and ``zero``
    (scalars, or shaped to broadcast along ``axis``), the integer range ``lo..hi`` (inputs) and
    the softmax axis ``post`` (outputs, or None)."""

    scale: np.ndarray
    zero: np.ndarray
    lo: int = 0
    hi: int = 0
    post: int | None = None


def read_params(program) -> dict[tuple[str, str], Quantization]:
    """{(\"input\" | \"output\", name): Quantization} from the metadata, checked: scales finite
    and > 0, zero points integers inside the type, one value or one per index along a valid
    axis, a known dtype whose range fits the input's precision, a softmax axis inside the
    output; dequantized extremes finite in float32. Raises InvalidError naming the key."""
    meta, tensors = program.metadata, program.tensors
    ports = {"input": {tensors[i].name: tensors[i] for i in program.inputs},
             "output": {tensors[i].name: tensors[i] for i in program.outputs}}
    for key in meta:
        side, _, rest = key.partition(".")
        name, _, field = rest.rpartition(".")
        if side in ports and name in ports[side] and field not in FIELDS[side]:
            raise InvalidError(f"metadata {shown(key)}: unknown field {field!r} (known: "
                               f"{', '.join(FIELDS[side])})")
    out = {}
    for side, named in ports.items():
        for name, t in named.items():
            q = _read(meta, f"{side}.{name}.", side, t)
            if q is not None:
                out[side, name] = q
    return out


def _read(meta: Mapping[str, str], key: str, side: str, t) -> Quantization | None:
    dtype = meta.get(key + "dtype", "int8")
    if dtype not in RANGES:
        raise InvalidError(f"metadata {shown(key + 'dtype')}: unknown type {shown(dtype)} "
                           f"(known: {', '.join(RANGES)})")
    if key + "scale" not in meta:
        extra = [f for f in ("zero_point", "axis", "post") if key + f in meta]
        if extra:
            raise InvalidError(f"metadata {shown(key + extra[0])} without {key}scale")
        return None
    ndim, r = len(t.shape), bound(t.precision)
    scale = np.array(_list(meta[key + "scale"], _FLOAT, key + "scale"), dtype=np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all() and (scale <= F32_MAX).all()):
        raise InvalidError(f"metadata {key}scale: every scale must be finite and > 0")
    scale = scale.astype(np.float32)
    if not (scale > 0).all():
        raise InvalidError(f"metadata {key}scale: a scale is 0 in float32")
    zero = np.array(_list(meta.get(key + "zero_point", "0"), _INT, key + "zero_point"),
                    dtype=np.int64)
    axis = _axis(meta.get(key + "axis", "1"), ndim, key + "axis")
    for values, what in ((scale, "scale"), (zero, "zero_point")):
        if values.size not in (1, t.shape[axis] if axis is not None else 1):
            raise InvalidError(f"metadata {key}{what}: {values.size} values for the "
                               f"{t.shape[axis] if axis is not None else 1} indices along "
                               f"axis {axis} of {shown(t.name)}")
    lo, hi = RANGES[dtype] if side == "input" else (-r, r)
    if side == "input" and (-lo > r or hi > r):
        raise InvalidError(f"metadata {key}dtype: {dtype} does not fit the input's precision "
                           f"p{t.precision}")
    if (zero < lo).any() or (zero > hi).any():
        raise InvalidError(f"metadata {key}zero_point: outside the range [{lo}, {hi}]")
    if side == "output" and float(scale.max()) * float(np.abs(zero).max() + r) > F32_MAX / 2:
        raise InvalidError(f"metadata {key}scale: dequantized values overflow float32")
    post = _post(meta.get(key + "post"), ndim, key + "post")
    shape = [-1 if d == axis else 1 for d in range(ndim)]
    shaped = lambda a: a.reshape(shape) if a.size > 1 else a.reshape(())
    return Quantization(shaped(scale), shaped(zero.astype(np.float32)), lo, hi, post)


def _list(text: str, pattern: re.Pattern, what: str) -> list:
    items = text.split(",")
    if len(items) > 1 << 24 or not all(pattern.fullmatch(v) for v in items):
        raise InvalidError(f"metadata {what}: {shown(text)} is not a comma list of numbers")
    return [float(v) if pattern is _FLOAT else int(v) for v in items]


def _axis(text: str, ndim: int, what: str) -> int | None:
    """The axis (normalized), or None for a model whose ports have fewer than 2 dims and
    no axis key (per-tensor only)."""
    if not _INT.fullmatch(text) or not -ndim <= int(text) < ndim:
        if text == "1" and ndim < 2:
            return None
        raise InvalidError(f"metadata {what}: {shown(text)} is not an axis of a "
                           f"{ndim}-D tensor")
    return int(text) % ndim


def _post(text: str | None, ndim: int, what: str) -> int | None:
    if text is None:
        return None
    kind, _, axis = text.partition(":")
    if kind != "softmax" or not _INT.fullmatch(axis) or not -ndim <= int(axis) < ndim:
        raise InvalidError(f"metadata {what}: {shown(text)} is not softmax:AXIS with an "
                           f"axis of a {ndim}-D output")
    return int(axis) % ndim


def quantize_inputs(model, inputs: Any) -> Any:
    """Float arrays quantized for every input that has a stored scale."""
    if not isinstance(inputs, Mapping):
        if len(model.inputs) != 1:
            return inputs                   # Model.run reports the error
        inputs = {model.inputs[0].name: inputs}
    out = dict(inputs)
    for t in model.inputs:
        q = model.float_io.get(("input", t.name))
        if q is None or t.name not in inputs:
            continue
        try:
            with np.errstate(over="ignore"):    # beyond float32: inf, refused below
                x = np.asarray(inputs[t.name], dtype=np.float32)
        except MemoryError:
            raise
        except Exception as e:                  # the caller's object failed to convert
            raise TrapError(f"input {t.name!r}: not a float array "
                            f"({type(e).__name__}: {shown(str(e))})") from None
        if not np.all(np.isfinite(x)):
            raise TrapError(f"input {t.name!r}: non-finite float values")
        with np.errstate(over="ignore"):        # |x / scale| beyond float32 saturates below
            v = np.rint(x / q.scale) + q.zero
        out[t.name] = np.clip(v, q.lo, q.hi).astype(np.int64)
    return out


def dequantize_outputs(model, outputs: dict) -> dict:
    """Float32 outputs for every output that has a stored scale (softmax applied if asked)."""
    result = {}
    for name, v in outputs.items():
        q = model.float_io.get(("output", name))
        if q is None:
            result[name] = v
            continue
        y = (v.astype(np.float32) - q.zero) * q.scale       # finite: checked at load
        if q.post is not None:
            e = np.exp(y - y.max(axis=q.post, keepdims=True))
            y = e / e.sum(axis=q.post, keepdims=True)
        result[name] = y.astype(np.float32)
    return result
