"""The public Model: load bytes, validate, bind, run numpy in / numpy out."""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from ops.base import bound, shown

from . import collector, plugins
from .decoding import decode
from .encoding import encode, model_hash
from .errors import EnvironmentFault, InternalError, InvalidError, TrapError
from .executors import Context, make_executor
from .floatio import dequantize_outputs, quantize_inputs, read_params
from .interp import Plan, device_consts, make_lanes
from .memory import lanes_memory
from .program import Program
from .symbolic import instantiate, shape_at
from .validate import SMALL_SCAN, Analysis, Limits, below_power_of_two, first_outside, validate

INSTANCES = 4
"""How many instances (one per set of symbol values) a model with symbols keeps bound."""


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (its first dim may be a symbol: ``("N", 10)``),
    precision and numpy storage dtype."""

    name: str
    shape: tuple
    precision: int
    dtype: np.dtype

    @functools.cached_property
    def symbol(self) -> str | None:
        return self.shape[0] if self.shape and isinstance(self.shape[0], str) else None

    @property
    def size(self) -> int:
        """Element count (a symbolic shape: TypeError; see :meth:`size_for`)."""
        if self.symbol:
            raise TypeError(f"{self.name!r} has the symbolic shape {self.shape}")
        return int(np.prod(self.shape))

    def size_for(self, dims: Mapping[str, int]) -> int:
        return int(np.prod(shape_at(self.shape, dims)))


@dataclass
class Instance:
    """The fixed-shape program of a model for symbol values ``dims``, validated and bound."""

    dims: dict
    program: Program
    analysis: Analysis
    plan: Plan


def _type_size(precisions) -> int:
    """CVM type size: 1 byte when every precision is <= 8, else 4 (int32)."""
    return 1 if max(precisions) <= 8 else 4


class Model:
    """A validated program bound to an executor. Create it with :func:`vm.load`.

    A program with symbols (a batch ``N <= max``, vm/symbolic.py) is validated for every value
    of its symbols; each call runs the instance for the values its inputs give (instantiated,
    validated and bound on first use, a few kept). ``run`` is thread-safe.
    """

    package = None
    """A :class:`vm.package.PackageInfo` when loaded from a package."""

    def __init__(self, program: Program, ctx: Context | None = None,
                 limits: Limits | None = None, data: bytes | None = None,
                 threads: int | None = None):
        if ctx is not None and not isinstance(ctx, Context):
            raise TrapError(f"ctx must be a context such as vm.cpu() or vm.gpu(0), got "
                            f"{type(ctx).__name__} {shown(repr(ctx))}")
        with collector.paused():
            self._load(program, ctx, limits, data, threads)

    def _load(self, program, ctx, limits, data, threads) -> None:
        self.program = program
        self.limits = limits or Limits()
        self.analysis = validate(program, self.limits)
        self.float_io = read_params(program)
        """The checked float boundary of the metadata (vm/floatio.py), for ``float_io``."""
        self.ctx = ctx or Context("cpu")
        self._bytes = data if data is not None else encode(program)
        self.hash = model_hash(self._bytes)
        self.symbols = dict(program.symbols)
        self.threads = threads
        self._executor = make_executor(self.ctx)
        self._lock = threading.Lock()
        self._instances: OrderedDict = OrderedDict()
        self.closed = False
        self.plan = None
        self._consts = self._lanes = None
        if self.symbols:
            self._consts, self._lanes = device_consts(program, self._executor), \
                make_lanes(threads)
        else:
            with self._executor.exclusive():      # the formal executor builds z3 terms here
                self.plan = Plan(program, self.analysis, self._executor, threads)
            self._instances[()] = Instance({}, program, self.analysis, self.plan)
        info = lambda i: TensorInfo(program.tensors[i].name, tuple(program.tensors[i].shape),
                                    program.tensors[i].precision, program.tensors[i].dtype)
        self.inputs = [info(i) for i in program.inputs]
        self.outputs = [info(i) for i in program.outputs]
        self._input_names = {t.name: None for t in self.inputs}      # in order
        self._output_names = [t.name for t in self.outputs]
        self._direct = _direct_run(self) if self.plan is not None and self.plan.single \
            else None

    # -- facts (known before running) -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.program.name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.program.metadata)

    @property
    def gas(self) -> int:
        """CVM gas (GetOps): op weights x output sizes + 5 x every tensor's elements; for a
        model with symbols, at their maxima (an upper bound of every call: :meth:`gas_for`)."""
        return self.analysis.gas

    @property
    def gas_formula(self):
        """Gas as an affine function of the symbols (``str()``: ``a + b*N``)."""
        return self.analysis.gas_formula

    @property
    def backend(self) -> str:
        """How this model computes, in words: the executor, and on the CPU whether regions
        run on onnxruntime (with its self-test verdict) or why they do not (a model with
        symbols: its most recently bound instance's)."""
        if self.plan is not None:
            return self.plan.backend
        instances = list(self._instances.values())
        return instances[-1].plan.backend if instances else self._executor.backend

    @property
    def peak_memory(self) -> int:
        """The validated bound of a run's allocations on one lane (at the symbols' maxima): live
        tensors with buffers freed once dead, plus each step's scratch (vm/memory.py)."""
        return self.analysis.peak_memory

    @property
    def memory_bound(self) -> int:
        """The bound of a run's allocations on this model's lanes (``threads``): the peak
        memory plus, per extra lane, the largest step's scratch and a kept workspace."""
        return lanes_memory(self.analysis.peak_memory, self.analysis.tile, self.threads or 1)

    @property
    def memory_formula(self):
        """Peak memory as the maximum of affine functions of the symbols."""
        return self.analysis.memory_formula

    def gas_for(self, **dims: int) -> int:
        """The gas of a call with these symbol values (``model.gas_for(N=32)``)."""
        return self.analysis.gas_formula.at(self._check_dims(dims))

    def memory_for(self, **dims: int) -> int:
        """The peak memory of a call with these symbol values."""
        return self.analysis.memory_formula.at(self._check_dims(dims))

    def dims(self, inputs: Any) -> dict[str, int]:
        """The symbol values ``inputs`` give (checked as :meth:`run` checks them)."""
        return self._check_inputs(inputs)[1]

    def _check_dims(self, dims: Mapping[str, int]) -> dict[str, int]:
        unknown = sorted(set(dims) - set(self.symbols))
        if unknown:
            raise TrapError(f"unknown symbol {unknown[0]!r} (symbols: "
                            f"{', '.join(sorted(self.symbols)) or 'none'})")
        missing = sorted(set(self.symbols) - set(dims))
        if missing:
            raise TrapError(f"no value for symbol {missing[0]}")
        for s, n in dims.items():
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) \
                    or not 1 <= n <= self.symbols[s]:
                raise TrapError(f"{s} = {n!r} outside [1, {self.symbols[s]}]")
        return {s: int(n) for s, n in dims.items()}

    @property
    def input_type_size(self) -> int:
        return _type_size(t.precision for t in self.inputs) if self.inputs else 1

    @property
    def input_length(self) -> int:
        """CVM input length in bytes (at the symbols' maxima)."""
        return sum(t.size_for(self.symbols) for t in self.inputs) * self.input_type_size

    @property
    def output_type_size(self) -> int:
        return _type_size(t.precision for t in self.outputs)

    @property
    def output_length(self) -> int:
        """CVM output length in bytes (at the symbols' maxima)."""
        return sum(t.size_for(self.symbols) for t in self.outputs) * self.output_type_size

    def to_bytes(self) -> bytes:
        """The canonical .dvm bytes (their SHA-256 is :attr:`hash`)."""
        return self._bytes

    # -- instances --------------------------------------------------------------------------
    def instance(self, **dims: int) -> Instance:
        """The fixed-shape program for these symbol values, validated and bound (cached)."""
        dims = self._check_dims(dims)
        key = tuple(sorted(dims.items()))
        if self.closed:
            raise TrapError(f"model {self.name!r} is closed")
        with self._lock:
            if key in self._instances:
                self._instances.move_to_end(key)
                return self._instances[key]
        program = instantiate(self.program, dims)
        try:
            analysis = validate(program, self.limits)
        except InvalidError as e:   # the symbolic validation promised every value
            raise InternalError(f"the instance for {dims} fails validation: {e}") from e
        if analysis.gas != self.analysis.gas_formula.at(dims):
            raise InternalError(f"instance gas {analysis.gas} != {self.gas_formula} at {dims}")
        with self._executor.exclusive():
            plan = Plan(program, analysis, self._executor, self.threads, self._consts,
                        self._lanes)
        found = Instance(dims, program, analysis, plan)
        with self._lock:
            found = self._instances.setdefault(key, found)
            self._instances.move_to_end(key)
            while len(self._instances) > INSTANCES:
                self._instances.popitem(last=False)
        return found

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: Any, trace=None, float_io: bool = False,
            out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on a dict ``{input name: integer array}`` (or one array for a single-input
        model); return ``{output name: array}`` in the outputs' storage dtypes.

        Inputs are checked, never clamped: a missing or unknown name, a wrong shape, a
        non-integer dtype or a value outside the input's precision is a TrapError. A batched
        input's first dim gives its symbol's value (the same for every input with it).
        ``out``: caller-owned arrays, by output name, written in place (their dtype and shape
        must be exactly the output's; TrapError otherwise) and returned in the result.
        ``float_io``: float inputs are quantized and outputs dequantized with the scales and
        zero points in the metadata (vm/floatio.py, the float boundary outside the VM).
        """
        if self._direct is not None and trace is None and not float_io and not out:
            result = self._direct(inputs)
            if result is not None:
                return result
        if float_io:
            if out:
                raise TrapError("out= holds integer outputs: it cannot be used with float_io")
            inputs = quantize_inputs(self, inputs)
        feeds, dims = self._check_inputs(inputs)
        result = self._run_checked(feeds, dims, trace, out)
        return dequantize_outputs(self, result) if float_io else result

    def _run_checked(self, feeds: list, dims: dict, trace=None,
                    out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """:meth:`run` on inputs ``_check_inputs`` returned (storage dtypes, input order)."""
        inst = self.instance(**dims) if dims or self.closed or not self.plan else \
            self._instances[()]
        single = inst.plan.single
        if single is not None and trace is None and not out:
            return dict(zip(self._output_names, single(feeds)))
        buffers = self._check_out(out or {}, inst) if out else {}
        ex, program = inst.plan.executor, inst.program
        direct = {program.outputs[k]: b for k, b in buffers.items()} \
            if ex.name == "cpu" else None
        with ex.exclusive():
            device = dict(zip(inst.plan.input_ids, map(ex.from_host, feeds)))
            values = inst.plan.run(device, trace, out=direct)
            result = {}
            for k, (t, v) in enumerate(zip(self.outputs, values)):
                if k in buffers:
                    if v is not buffers[k]:
                        np.copyto(buffers[k], ex.to_host(v), casting="unsafe")
                    result[t.name] = buffers[k]
                else:
                    result[t.name] = np.array(ex.to_host(v), dtype=t.dtype, copy=True)
        return result

    def run_many(self, items, float_io: bool = False) -> list[dict[str, np.ndarray]]:
        """Run on several input dicts; return one output dict per item, each identical to
        ``run(item)``. A model with symbols runs them as batches along its symbols (vm/many.py)."""
        from .many import run_many
        if isinstance(items, Mapping) or not hasattr(items, "__iter__"):
            raise TrapError(f"run_many takes a list of input dicts, got {type(items).__name__}")
        return run_many(self, list(items), float_io)

    def trace(self, inputs: Any, keep=(), strict: bool = True):
        """Run instruction by instruction and hash every output: a :class:`vm.audit.Trace`
        (per-instruction SHA-256, Merkle ``root``, the outputs as ``results``)."""
        from .audit import trace
        return trace(self, inputs, keep, strict)

    def _check_inputs(self, inputs: Any) -> tuple[list[np.ndarray], dict[str, int]]:
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise TrapError(f"model has {len(self.inputs)} inputs "
                                f"({', '.join(t.name for t in self.inputs)}): pass a dict")
            inputs = {self.inputs[0].name: inputs}
        names = self._input_names
        if not names.keys() >= inputs.keys():
            unknown = next(key for key in inputs if key not in names)   # the caller's order
            raise TrapError(f"unknown input {shown(unknown)} (inputs: {', '.join(names)})")
        dims: dict[str, tuple[int, str]] = {}
        feeds = [_check_input(t, inputs.get(t.name), self.symbols, dims) for t in self.inputs]
        return feeds, {s: n for s, (n, _) in dims.items()} if dims else {}

    def _check_out(self, out: Mapping, inst: Instance) -> dict[int, np.ndarray]:
        """Output index -> caller buffer, each checked (TrapError) before anything runs."""
        if not isinstance(out, Mapping):
            raise TrapError(f"out must be a dict {{output name: array}}, got "
                            f"{type(out).__name__}")
        index = {t.name: k for k, t in enumerate(self.outputs)}
        buffers: dict[int, np.ndarray] = {}
        for name, buf in out.items():
            if name not in index:
                raise TrapError(f"out: unknown output {name!r} (outputs: {', '.join(index)})")
            t = self.outputs[index[name]]
            shape = shape_at(t.shape, inst.dims)
            if not isinstance(buf, np.ndarray) or buf.dtype != t.dtype \
                    or buf.shape != shape or not buf.flags.writeable:
                got = (f"{buf.dtype} {buf.shape}{'' if buf.flags.writeable else ' read-only'}"
                       if isinstance(buf, np.ndarray) else type(buf).__name__)
                raise TrapError(f"out[{name!r}]: needs a writeable {t.dtype} array of shape "
                                f"{shape}, got {got}")
            if any(np.may_share_memory(buf, other) for other in buffers.values()):
                raise TrapError(f"out[{name!r}] overlaps another output buffer")
            buffers[index[name]] = buf
        return buffers

    def bound_plan(self) -> Plan:
        """The executor-bound plan of a fixed-shape model; a TrapError once the model is closed
        (a model with symbols has one per instance: :meth:`instance`)."""
        if self.closed:
            raise TrapError(f"model {self.name!r} is closed")
        if self.plan is None:
            raise TrapError(f"model {self.name!r} has the symbols {', '.join(self.symbols)}: "
                            "its plans are per instance (Model.instance)")
        return self.plan

    # -- context manager --------------------------------------------------------------------
    def close(self) -> None:
        """Release the executor's resources (idempotent); running afterwards is a TrapError,
        the facts (hash, gas, inputs, outputs) stay readable."""
        self.closed, self._direct = True, None
        with self._lock:
            instances, self._instances = list(self._instances.values()), OrderedDict()
        for inst in instances:
            inst.plan.close()
        if self.symbols and self._lanes is not None:
            self._lanes.close()
        self.plan = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        gas = f"gas {self.gas_formula}" if self.symbols else f"gas {self.gas}"
        state = " (closed)" if self.closed else ""
        return (f"<detvm.Model {self.name!r} {self.hash[:12]} on {self.ctx}{state}: "
                f"{len(self.inputs)} in, {len(self.outputs)} out, {gas}>")


def _direct_run(model: Model) -> Callable:
    """:meth:`Model.run`'s shortcut for a fixed-shape model whose plan is one session
    (:attr:`Plan.single`): a dict of exactly the input names holding numpy arrays of exactly
    the inputs' storage dtypes and shapes, whose values pass the range test of
    :func:`_check_input`, runs with nothing else in between (the digits CNN at batch 1, in a
    tight loop: 25.1 -> 20-21 us a call, the session alone 16.7). Any other call returns None
    and takes the general path, which checks it and says what is wrong. A small input whose
    bytes select the session's narrow variant (:attr:`Plan.single_bytes`) is tested for
    bytes first: bytes are within its precision (its range straddles [0, 255]), and the
    session is told which variant to run."""
    plan, names = model.plan, model._output_names
    single = plan.single
    gates = []
    for k, t in enumerate(model.inputs):
        scan = _scan_bounds(t.precision, t.dtype)
        bytes_test = k in plan.single_bytes and t.size <= SMALL_SCAN and \
            (scan is None or scan[0] <= 0 and scan[1] >= 255)
        gates.append((t.name, t.dtype, t.shape, scan, bytes_test))
    known = bool(plan.single_bytes) and all(gates[k][4] for k in plan.single_bytes)
    count = len(gates)

    def direct(inputs) -> dict[str, np.ndarray] | None:
        if type(inputs) is not dict or len(inputs) != count:
            return None
        feeds, narrow = [], known or None
        for name, dtype, shape, scan, bytes_test in gates:
            array = inputs.get(name)
            if type(array) is not np.ndarray or array.dtype != dtype or array.shape != shape:
                return None
            if bytes_test and below_power_of_two(array, 8):
                pass                                            # bytes: within precision
            elif scan is not None and first_outside(array, *scan) is not None:
                return None
            elif bytes_test:
                narrow = False
            feeds.append(array)
        return dict(zip(names, single(feeds, narrow)))
    return direct


def _check_input(t: TensorInfo, value: Any, symbols: Mapping[str, int],
                 dims: dict[str, tuple[int, str]]) -> np.ndarray:
    """``value`` checked against ``t`` and stored in its dtype; a batched input's first dim is
    recorded in ``dims`` (symbol -> (value, input name)) and must agree with earlier ones."""
    if value is None:
        raise TrapError(f"missing input {t.name!r}")
    try:
        array = value if type(value) is np.ndarray else np.asarray(value)
    except MemoryError:
        raise EnvironmentFault(f"input {t.name!r}: out of memory reading it") from None
    except Exception as e:      # the caller's object failed to convert itself
        raise TrapError(f"input {t.name!r}: cannot be read as an array "
                        f"({type(e).__name__}: {shown(str(e))})") from None
    if array.dtype.kind not in "iu":
        raise TrapError(f"input {t.name!r}: dtype {array.dtype} is not an integer type")
    symbol = t.symbol
    if symbol is None:
        if array.shape != t.shape:
            raise TrapError(f"input {t.name!r}: shape {tuple(array.shape)} != "
                            f"({', '.join(map(str, t.shape))})")
    else:
        if array.ndim != len(t.shape) or array.shape[1:] != t.shape[1:]:
            raise TrapError(f"input {t.name!r}: shape {tuple(array.shape)} != "
                            f"({', '.join(map(str, t.shape))}) ({symbol} <= {symbols[symbol]})")
        n, limit = array.shape[0], symbols[symbol]
        if not 1 <= n <= limit:
            raise TrapError(f"input {t.name!r}: {symbol} = {n} outside [1, {limit}]")
        seen = dims.setdefault(symbol, (n, t.name))
        if seen[0] != n:
            raise TrapError(f"input {t.name!r}: {symbol} = {n}, but input {seen[1]!r} has "
                            f"{symbol} = {seen[0]}")
    scan = _scan_bounds(t.precision, array.dtype)
    k = None if scan is None else first_outside(array, *scan)
    if k is not None:
        raise TrapError(f"input {t.name!r}: value {int(array.reshape(-1)[k])} at flat index "
                        f"{k} outside precision {t.precision} (|v| <= {bound(t.precision)})")
    return array.astype(t.dtype, copy=False)


@functools.lru_cache(maxsize=None)
def _scan_bounds(precision: int, dtype: np.dtype) -> tuple[int, int] | None:
    """The bounds to check values of ``dtype`` against for ``precision`` (|v| <= 2^(p-1) - 1),
    each representable in ``dtype``; None when every value of ``dtype`` is within."""
    r, info = bound(precision), np.iinfo(dtype)
    low, high = int(info.min), int(info.max)
    return None if -r <= low and high <= r else (max(-r, low), min(r, high))


def open_model(source: Any, ctx: Context | None = None, limits: Limits | None = None,
               threads: int | None = None) -> Model:
    """A Model from a Program, a path (``.dvm`` bytes or ``.dvmt`` text) or ``.dvm`` bytes."""
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
    with collector.paused():
        program = decode(source, limits)
        return Model(program, ctx, limits, data=bytes(source), threads=threads)
