"""``detvm quantize``: onnxruntime.quantization.quantize_static with good defaults, fed from an
``.npz`` of calibration samples, then :func:`compiler.onnx.import_onnx`.

The float model is first made ready (compiler/onnx/prepare.py: static dims, opset 13 for
per-channel weights, graph outputs made by a Concat left float), then onnxruntime's
pre-processing (shape inference, BatchNormalization folded into Conv), static quantization,
MinMax calibration, weights int8 per channel (symmetric), activations int8 or uint8
(asymmetric), QDQ (default) or QOperator format. onnxruntime is optional
(``pip install 'detvm[onnx]'``) and imported only here.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from vm.errors import EnvironmentFault, InvalidError

from . import prepare
from .graph import load_model, optional_module

FORMATS = ("qdq", "qoperator")
TYPES = ("int8", "uint8")
CHUNK = 16
"""Calibration samples per onnxruntime run when the model's batch axis is symbolic."""
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


def _reader(quantization, samples: Mapping[str, np.ndarray], step: int, exact: bool,
            progress: Callable | None):
    """Batches of ``step`` samples (``exact``: only whole batches, for a static batch)."""
    n = len(next(iter(samples.values())))
    starts = list(range(0, n - step + 1 if exact else n, step))

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


def _preprocessed(source: Path, target: Path) -> str:
    """onnxruntime's recommended pre-processing (shape inference, graph optimizations that
    fold BatchNormalization into Conv) of ``source`` written to ``target``; its symbolic shape
    inference is skipped when it refuses the model, and ``source`` is used as it is when
    onnx's refuses."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:        # a missing dependency is the environment's fault: say so
        raise EnvironmentFault(f"onnxruntime's quantization pre-processing lacks a dependency "
                               f"({e}); pip install 'detvm[onnx]'") from None
    for skip_symbolic in (False, True):
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()), _working_dir(target.parent):
                quant_pre_process(os.fspath(source), os.fspath(target),
                                  skip_symbolic_shape=skip_symbolic)
            return os.fspath(target)
        except Exception:           # optional step: e.g. symbolic shape inference refuses
            continue
    return os.fspath(source)


@contextlib.contextmanager
def _working_dir(path: Path):
    """Run in ``path``: onnxruntime's symbolic shape inference, when it cannot finish, saves
    the model (sym_shape_infer_temp.onnx and a <uuid>.data of its weights) into the working
    directory before it raises; there they go with the temporary directory instead of
    being left in the caller's."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's advice (Python logging) and its sessions' warnings kept off stderr."""
    import onnxruntime
    logging.disable(logging.WARNING)
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        onnxruntime.set_default_logger_severity(2)


def quantize_onnx(model, calibration: Mapping[str, np.ndarray], output_path, *,
                  shapes: Mapping[str, Sequence[int]] | None = None, fmt: str = "qdq",
                  activation: str = "int8", weight: str = "int8", per_channel: bool = True,
                  op_types: Sequence[str] | None = None,
                  split_outputs: bool = True, progress: Callable | None = None,
                  notify: Callable[[str], None] | None = None) -> str:
    """Write the statically quantized ``model`` (a float ONNX model: path, bytes or
    onnx.ModelProto) to ``output_path``; return that path.

    ``shapes`` fixes inputs' dims (symbolic dims other than the batch must be fixed);
    ``op_types`` the op types to quantize (None: all onnxruntime can); ``split_outputs``
    leaves float a Concat that makes a graph output; ``progress(done, total)`` follows the
    calibration, ``notify(message)`` hears what was changed in the model."""
    q = _ort_quantization()
    if fmt not in FORMATS or activation not in TYPES or weight not in TYPES:
        raise InvalidError(f"format must be one of {FORMATS}, types one of {TYPES}")
    notify = notify or (lambda message: None)
    model, dims = prepare.prepared(load_model(model), shapes,
                                   per_channel=per_channel, notify=notify)
    model = prepare.fold_batch_constants(model, dims, notify)
    n = prepare.check_calibration(calibration, dims)
    static = {d[0] for d in dims.values() if d and d[0] is not None}
    exclude = prepare.split_outputs(model, notify) if split_outputs else []
    types = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    step = max(static) if static else min(CHUNK, n)
    onnx = optional_module("onnx", "quantize")
    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet():
            onnx.save(model, os.path.join(tmp, "prepared.onnx"))
            q.quantize_static(
                _preprocessed(Path(tmp) / "prepared.onnx", Path(tmp) / "pre.onnx"),
                os.fspath(output_path), _reader(q, calibration, step, bool(static), progress),
                quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
                activation_type=types[activation], weight_type=types[weight],
                per_channel=per_channel, calibrate_method=q.CalibrationMethod.MinMax,
                op_types_to_quantize=list(op_types) if op_types is not None else None,
                nodes_to_exclude=exclude)
    except (ValueError, RuntimeError) as e:
        raise InvalidError(f"onnxruntime quantization failed: {e}") from None
    return os.fspath(output_path)
