"""The public Model: load bytes, validate, bind, run numpy in / numpy out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ops.base import bound, shown

from . import plugins
from .encoding import decode, encode, model_hash
from .errors import EnvironmentFault, TrapError
from .executors import Context, make_executor
from .floatio import dequantize_outputs, quantize_inputs, read_params
from .interp import Plan
from .program import Program
from .validate import Limits, first_outside, validate


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape, precision and numpy storage dtype."""

    name: str
    shape: tuple[int, ...]
    precision: int
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _type_size(precisions) -> int:
    """CVM type size: 1 byte when every precision is <= 8, else 4 (int32)."""
    return 1 if max(precisions) <= 8 else 4


class Model:
    """A validated program bound to an executor. Create it with :func:`vm.load`.

    ``run`` is thread-safe: it keeps no state between calls.
    """

    def __init__(self, program: Program, ctx: Context | None = None,
                 limits: Limits | None = None, data: bytes | None = None,
                 threads: int | None = None):
        self.program = program
        self.analysis = validate(program, limits or Limits())
        self.float_io = read_params(program)
        """The checked float boundary of the metadata (vm/floatio.py), for ``float_io``."""
        self.ctx = ctx or Context("cpu")
        self._bytes = data if data is not None else encode(program)
        self.hash = model_hash(self._bytes)
        executor = make_executor(self.ctx)
        with executor.exclusive():               # the formal executor builds z3 terms here
            self.plan = Plan(program, self.analysis, executor, threads)
        info = lambda i: TensorInfo(program.tensors[i].name, program.tensors[i].shape,
                                    program.tensors[i].precision, program.tensors[i].dtype)
        self.inputs = [info(i) for i in program.inputs]
        self.outputs = [info(i) for i in program.outputs]

    # -- facts (known before running) -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.program.name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.program.metadata)

    @property
    def gas(self) -> int:
        """CVM gas (GetOps): op weights x output sizes + 5 x every tensor's elements."""
        return self.analysis.gas

    @property
    def peak_memory(self) -> int:
        """Peak bytes of live tensors with buffers freed once dead."""
        return self.analysis.peak_memory

    @property
    def input_type_size(self) -> int:
        return _type_size(t.precision for t in self.inputs) if self.inputs else 1

    @property
    def input_length(self) -> int:
        return sum(t.size for t in self.inputs) * self.input_type_size

    @property
    def output_type_size(self) -> int:
        return _type_size(t.precision for t in self.outputs)

    @property
    def output_length(self) -> int:
        return sum(t.size for t in self.outputs) * self.output_type_size

    def to_bytes(self) -> bytes:
        """The canonical .dvm bytes (their SHA-256 is :attr:`hash`)."""
        return self._bytes

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: Any, trace=None, float_io: bool = False) -> dict[str, np.ndarray]:
        """Run on a dict ``{input name: integer array}`` (or one array for a single-input
        model); return ``{output name: array}`` in the outputs' storage dtypes.

        Inputs are checked, never clamped: a missing or unknown name, a wrong shape, a
        non-integer dtype or a value outside the input's precision is a TrapError.
        ``float_io``: float inputs are quantized and outputs dequantized with the scales and
        zero points in the metadata (vm/floatio.py, the float boundary outside the VM).
        """
        if float_io:
            inputs = quantize_inputs(self, inputs)
        plan = self.bound_plan()
        feeds = self._check_inputs(inputs)
        ex = plan.executor
        with ex.exclusive():
            device = {self.program.inputs[k]: ex.from_host(a) for k, a in enumerate(feeds)}
            values = plan.run(device, trace)
            out = {t.name: np.array(ex.to_host(v), dtype=t.dtype, copy=True)
                   for t, v in zip(self.outputs, values)}
        if float_io:
            return dequantize_outputs(self, out)
        return out

    def _check_inputs(self, inputs: Any) -> list[np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise TrapError(f"model has {len(self.inputs)} inputs "
                                f"({', '.join(t.name for t in self.inputs)}): pass a dict")
            inputs = {self.inputs[0].name: inputs}
        names = [t.name for t in self.inputs]
        unknown = [key for key in inputs if key not in names]     # the caller's order
        if unknown:
            raise TrapError(f"unknown input {shown(unknown[0])} (inputs: {', '.join(names)})")
        return [_check_input(t, inputs.get(t.name)) for t in self.inputs]

    def bound_plan(self) -> Plan:
        """The executor-bound plan; a TrapError once the model is closed."""
        if self.plan is None:
            raise TrapError(f"model {self.name!r} is closed")
        return self.plan

    # -- context manager --------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.plan is None

    def close(self) -> None:
        """Release the executor's resources (idempotent); running afterwards is a TrapError,
        the facts (hash, gas, inputs, outputs) stay readable."""
        if self.plan is not None:
            self.plan.close()
        self.plan = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " (closed)" if self.closed else ""
        return (f"<detvm.Model {self.name!r} {self.hash[:12]} on {self.ctx}{state}: "
                f"{len(self.inputs)} in, {len(self.outputs)} out, gas {self.gas}>")


def _check_input(t: TensorInfo, value: Any) -> np.ndarray:
    if value is None:
        raise TrapError(f"missing input {t.name!r}")
    try:
        array = np.asarray(value)
    except MemoryError:
        raise EnvironmentFault(f"input {t.name!r}: out of memory reading it") from None
    except Exception as e:      # the caller's object failed to convert itself
        raise TrapError(f"input {t.name!r}: cannot be read as an array "
                        f"({type(e).__name__}: {shown(str(e))})") from None
    if array.dtype.kind not in "iu":
        raise TrapError(f"input {t.name!r}: dtype {array.dtype} is not an integer type")
    if tuple(array.shape) != tuple(t.shape):
        raise TrapError(f"input {t.name!r}: shape {tuple(array.shape)} != {tuple(t.shape)}")
    r = bound(t.precision)
    info = np.iinfo(array.dtype)
    k = first_outside(array, max(-r, info.min), min(r, info.max))     # in array's dtype
    if k is not None:
        raise TrapError(f"input {t.name!r}: value {int(array.reshape(-1)[k])} at flat index "
                        f"{k} outside precision {t.precision} (|v| <= {r})")
    return array.astype(t.dtype)


def load(source: Any, ctx: Context | None = None, limits: Limits | None = None,
         require_certificate: bool = False, certificate: Any = None,
         threads: int | None = None) -> Model:
    """Load a model from a path (``.dvm`` bytes or ``.dvmt`` text) or from bytes; validate it
    completely, then bind it to ``ctx`` (default ``vm.cpu()``).

    ``require_certificate``: the model must carry a certificate, the directory ``certificate``
    (default: ``<model path>.cert`` next to the model file), that is this model's own and
    re-checks with z3 (verify/, docs/formal.md); a missing or failing one is an InvalidError.
    ``threads`` (cpu): None keeps the BLAS library's own threading; n runs on n lanes with one
    BLAS thread each (needs threadpoolctl; docs/performance.md). The bytes never depend on it.
    """
    model = _load(source, ctx, limits, threads)
    if require_certificate:
        check = plugins.require("certificates", "check", "certificate checking")
        if certificate is None and isinstance(source, (str, os.PathLike)):
            certificate = os.fspath(source) + ".cert"
        check(model, certificate)
    return model


def _load(source: Any, ctx: Context | None, limits: Limits | None,
          threads: int | None = None) -> Model:
    if isinstance(source, Program):
        return Model(source, ctx, limits, threads=threads)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise EnvironmentFault(f"cannot read {path}: {e.strerror or e}") from None
        if path.endswith(".dvmt"):
            parse = plugins.require("loaders", "dvmt", "reading assembly text (.dvmt)")
            return Model(parse(data.decode("utf-8", errors="replace")), ctx, limits,
                         threads=threads)
        source = data
    program = decode(source)
    return Model(program, ctx, limits, data=bytes(source), threads=threads)
