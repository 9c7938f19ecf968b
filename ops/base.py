"""The operator record: every op is declared once, with all of its rules.

Integer contract (see DESIGN.md):

* Values are mathematical integers. A tensor of precision ``p`` holds values with
  ``|x| <= bound(p) = 2**(p-1) - 1`` (CVM convention, symmetric).
* Rules never see floats. Kernels receive integer arrays in whatever storage dtype the executor
  chose (int8 for p <= 8, int32 otherwise on the CPU); they must widen *explicitly*
  (:func:`wide`) before any arithmetic that could leave that dtype, and may return any integer
  dtype that holds the exact result. The executor narrows to the output's storage dtype, which
  validation proved large enough.
* Rules raise :class:`OpError` for bad shapes or attributes; the VM turns it into an
  ``InvalidError`` that quotes the instruction.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

REQUIRED = object()
"""Marker for an attribute without a default value."""

Shape = tuple


class OpError(ValueError):
    """A rule rejects an op's inputs or attributes (the VM names the instruction)."""


def fail(message: str):
    """Raise :class:`OpError` with ``message``."""
    raise OpError(message)


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (values may be hostile)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def require(condition: bool, message: str) -> None:
    """Raise :class:`OpError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise OpError(message)


# ---------------------------------------------------------------------------------------------
# Precision arithmetic (CVM conventions, exact integers)
# ---------------------------------------------------------------------------------------------

def bound(p: int) -> int:
    """R(p) = 2**(p-1) - 1: the largest magnitude a precision-``p`` tensor may hold."""
    return (1 << (p - 1)) - 1


def bitlen(n: int) -> int:
    """Number of bits of a non-negative integer; bitlen(0) = 0 (CVM GetReduceSumBit)."""
    return int(n).bit_length()


def number_precision(n: int) -> int:
    """CVM GetNumberPrecision(n) = bitlen(n + 1) + 1 for n >= 0.

    It over-counts by one when n = 2**k - 1 (127 -> 9), and CVM relies on that value for output
    byte widths, so it is reproduced exactly.
    """
    return bitlen(n + 1) + 1


def precision_for(magnitude: int) -> int:
    """The smallest precision p with magnitude <= bound(p) (exact, no over-count)."""
    return max(1, bitlen(magnitude) + 1)


def size_of(shape: Sequence[int]) -> int:
    """Number of elements of ``shape`` (1 for a scalar shape)."""
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# Attribute schema
# ---------------------------------------------------------------------------------------------

ATTR_KINDS = ("int", "bool", "ints", "str", "optint")


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind, default and admissible range.

    kinds: ``int``; ``bool``; ``ints`` (tuple of ints, ``length`` admissible lengths);
    ``str`` (one of ``choices``); ``optint`` (None or an int).
    ``lo``/``hi`` bound an int, every element of an ``ints``, or the int of an ``optint``.
    ``expand`` = n: a single value of an ``ints`` stands for n equal values (canonical form).
    ``symbolic``: an ``ints`` whose entries may name a batch symbol of the program (reshape's
    target shape, strided_slice's bounds); the VM substitutes the symbol's value before any
    rule sees the attribute (vm/symbolic.py).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    lo: int | None = None
    hi: int | None = None
    length: tuple[int, ...] | None = None
    choices: tuple[str, ...] | None = None
    expand: int | None = None
    symbolic: bool = False

    def __post_init__(self):
        if self.kind not in ATTR_KINDS:
            raise TypeError(f"attribute {self.name}: unknown kind {self.kind!r}")
        if self.symbolic and (self.kind != "ints" or self.expand):
            raise TypeError(f"attribute {self.name}: only an ints without expand is symbolic")

    def normalize(self, value: Any) -> Any:
        """Type-check and range-check ``value``; return its canonical Python form."""
        kind, name = self.kind, self.name
        if kind == "bool":
            require(isinstance(value, bool),
                    f"attribute {name} must be a bool, got {shown(value)}")
            return value
        if kind == "str":
            require(isinstance(value, str),
                    f"attribute {name} must be a string, got {shown(value)}")
            require(self.choices is None or value in self.choices,
                    f"attribute {name} must be one of {', '.join(self.choices or ())}, "
                    f"got {shown(value)}")
            return value
        if kind == "optint" and value is None:
            return None
        if kind == "ints":
            if _is_int(value):
                value = (value,)
            require(isinstance(value, (tuple, list)),
                    f"attribute {name} must be a tuple of ints, got {shown(value)}")
            require(self.length is None or len(value) in self.length or
                    self.expand and len(value) == 1,          # the count first: O(1)
                    f"attribute {name} must have {' or '.join(map(str, self.length or ()))} "
                    f"values, got {len(value)}")
            if all(type(v) is int for v in value):            # the common case at C speed
                value = tuple(value)
                if value and not ((self.lo is None or min(value) >= self.lo) and
                                  (self.hi is None or max(value) <= self.hi)):
                    for v in value:
                        self._check_range(v)
            else:
                entry = (lambda v: _is_int(v) or isinstance(v, str)) if self.symbolic \
                    else _is_int
                require(all(entry(v) for v in value),
                        f"attribute {name} must be a tuple of ints, got {shown(value)}")
                value = tuple(v if isinstance(v, str) else int(v) for v in value)
                for v in value:
                    if not isinstance(v, str):      # a symbol: checked once substituted
                        self._check_range(v)
            if self.expand and len(value) == 1:
                value = value * self.expand
            return value
        require(_is_int(value), f"attribute {name} must be an int, got {shown(value)}")
        self._check_range(int(value))
        return int(value)

    def _check_range(self, v: int) -> None:
        lo, hi = self.lo, self.hi
        require((lo is None or v >= lo) and (hi is None or v <= hi),
                f"attribute {self.name} value {v} out of range "
                f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# The op record
# ---------------------------------------------------------------------------------------------

STORAGE_BITS = 32
"""The widest precision a tensor may have (int32 storage, vm/validate.py)."""
RULES = ("shape", "precision", "cost", "scalar", "kernel", "z3")
BATCH_KINDS = ("map", "rows")
"""The batch rule (``OpDef.batch``) of an op that accepts inputs with a symbolic first axis:

* ``"map"``:  output row r is computed from row r of every batched input and the whole of every
  other input (elementwise and broadcasting ops, concatenate on an axis >= 1, where); any input
  may be batched;
* ``"rows"``: the same, but only input 0 may be batched (conv2d, pools, dense on its data; the
  other inputs, e.g. weights, are shared by every row);
* a tuple of input positions: the same, with only those inputs batchable (lut: its data
  inputs 1 and 2, never the table);
* a callable ``(attrs, ranks, limit) -> kind`` (one of the above) for ops whose attributes may
  address axis 0 (reductions, transpose, argmax, strided_slice): it raises OpError saying why
  when they do. ``attrs`` are canonical and may hold the symbol (a str) in ``symbolic`` attributes,
  ``ranks`` are the input ranks, ``limit`` the symbol's declared maximum.

None (the default) refuses a batched input. The law every rule states: the op applied to inputs
of batch N gives, row by row, what it gives applied to each row alone (tests/test_batch.py).
"""


@dataclass(frozen=True)
class OpDef:
    """An operator and all of its rules.

    inputs:   input names; a trailing ``?`` marks an optional input, a trailing ``*`` a variadic
              tail of one or more inputs.
    shape:    ``(shapes, attrs) -> shape | [shape, ...]``; raises OpError.
    precision:``(precs, shapes, attrs) -> p | [p, ...]``: the bound rule (output precisions).
    cost:     ``(shapes, attrs) -> int``: CVM GetOps base weight per element of output 0.
    scalar:   ``(refs, attrs) -> Ref | [Ref, ...]``: pure-Python reference on unbounded ints.
    kernel:   ``(xp, *arrays, **attrs) -> array | (array, ...)`` against an array namespace.
    acc_bound:optional ``(precs, shapes, attrs, consts) -> int``: proven bound of every partial
              sum of the op's reduction; it licenses exact float BLAS (float32 < 2**24,
              float64 < 2**53). The executor passes the chosen path as ``gemm=`` to the kernel.
    z3:       ``(zx, *tensors, **attrs) -> Ref | (Ref, ...)``: the Z3 encoding of the same
              semantics on tensors of Z3 terms, against an arithmetic namespace ``zx``
              (verify/domains.py: integers or bit-vectors; ops never import z3).
    const_precision: optional ``(precs, shapes, attrs, consts) -> p | [p, ...]``: a tighter
              bound rule read where the plain ``precision`` exceeds :data:`STORAGE_BITS` and
              some inputs are program constants (``consts[k]``: input k's array, or None): e.g.
              qconv2d's bound per output channel from its constant weights. O(attributes +
              constants), never O(output); verify/bounds.py's bound must be at least as tight.
    work:     optional ``(shapes, precs, attrs) -> int``: gas beyond CVM's GetOps (which charges
              ``cost`` per element of output 0) for an op whose running time grows faster than
              its output (non_max_suppression's pairwise overlaps), so that gas bounds time;
              linear in the first dim of input 0 (the batch: symbolic gas is affine).
    scratch:  the kernel's temporaries beyond its inputs and its outputs in storage dtype: an
              int n = n int64 words per element of the inputs and outputs (widened copies, the
              int64 result the executor narrows; default 4), or ``(in_shapes,
              out_shapes, attrs) -> bytes``, affine in the batch (a tiled kernel: its constant
              tile). It enters the peak memory (vm/memory.py); tests/test_memory.py measures
              every op against it.
    overrides:per-executor kernels, e.g. ``{"gpu": kernel}``.
    inplace:  CVM's in-place whitelist: output may share storage with input 0.
    batch:    the batch rule: None, ``"map"``, ``"rows"`` or a callable (:data:`BATCH_KINDS`).
    """

    name: str
    opcode: int
    doc: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[Attr, ...]
    shape: Callable
    precision: Callable
    cost: Callable
    scalar: Callable
    kernel: Callable
    acc_bound: Callable | None = None
    work: Callable | None = None
    const_precision: Callable | None = None
    scratch: int | Callable = 4
    z3: Callable | None = None
    overrides: Mapping[str, Callable] = field(default_factory=dict)
    inplace: bool = False
    batch: str | Callable | None = None

    def __post_init__(self):
        where = f"op {self.name!r}"
        if not (self.batch is None or callable(self.batch) or _batch_kind(self.batch)):
            raise TypeError(f"{where}: batch rule must be None, 'map', 'rows', a tuple of input "
                            f"positions or a callable, got {self.batch!r}")
        if not isinstance(self.opcode, int) or not 0 < self.opcode < 1 << 16:
            raise TypeError(f"{where}: opcode must be an int in [1, 65535]")
        if not (self.doc and self.doc.strip()):
            raise TypeError(f"{where}: missing doc (the integer semantics)")
        for rule in RULES:
            if not callable(getattr(self, rule)):
                raise TypeError(f"{where}: missing rule {rule!r}")
        if not self.outputs:
            raise TypeError(f"{where}: needs at least one output")
        names = [a.name for a in self.attrs]
        if len(set(names)) != len(names):
            raise TypeError(f"{where}: duplicate attribute names")

    def scratch_bytes(self, in_shapes, out_shapes, attrs: Mapping) -> int:
        """The bound of the kernel's temporaries for these shapes (see ``scratch``)."""
        if callable(self.scratch):
            return self.scratch(in_shapes, out_shapes, attrs)
        return 8 * self.scratch * sum(size_of(s) for s in (*in_shapes, *out_shapes))

    # -- arity ------------------------------------------------------------------------------
    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    def arity(self) -> tuple[int, int | None]:
        """(min, max) number of inputs; max is None for a variadic op."""
        required = sum(1 for n in self.inputs if not n.endswith(("?", "*")))
        if self.variadic:
            return required + 1, None
        return required, len(self.inputs)

    # -- generic checks used by every front-end ---------------------------------------------
    def check_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Reject unknown keys, fill defaults, type- and range-check: the canonical attrs."""
        known = {a.name: a for a in self.attrs}
        for key in given:
            require(key in known, f"{self.name} has no attribute {shown(key)}"
                    + (f" (known: {', '.join(sorted(known))})" if known else ""))
        out = {}
        for a in self.attrs:
            if a.name in given:
                out[a.name] = a.normalize(given[a.name])
            else:
                require(a.default is not REQUIRED, f"{self.name} needs attribute {a.name!r}")
                out[a.name] = a.default
        return out

    def check_arity(self, n: int) -> None:
        lo, hi = self.arity()
        want = str(lo) if hi == lo else f"{lo}..{'n' if hi is None else hi}"
        require(n >= lo and (hi is None or n <= hi), f"{self.name} takes {want} inputs, got {n}")

    def infer_shapes(self, shapes: Sequence[Shape], attrs: Mapping) -> list[Shape]:
        self.check_arity(len(shapes))
        return _as_list(self.shape([tuple(s) for s in shapes], attrs), len(self.outputs))

    def infer_precisions(self, precs: Sequence[int], shapes: Sequence[Shape],
                         attrs: Mapping, consts: Sequence | None = None) -> list[int]:
        """The output precisions: the ``precision`` rule; where it exceeds
        :data:`STORAGE_BITS` and ``consts`` holds some inputs' constant arrays, the
        ``const_precision`` rule (so a program valid without it gets the same precisions)."""
        shapes = [tuple(s) for s in shapes]
        out = _as_list(self.precision(list(precs), shapes, attrs), len(self.outputs))
        if (self.const_precision is not None and max(out) > STORAGE_BITS and consts
                and any(c is not None for c in consts)):
            out = _as_list(self.const_precision(list(precs), shapes, attrs, list(consts)),
                           len(self.outputs))
        return out

    def batchable(self, attrs: Mapping, ranks: Sequence[int], limit: int) -> tuple[int, ...]:
        """The positions of the inputs this application accepts batched (OpError when the op
        or its attributes accept none)."""
        rule = self.batch
        require(rule is not None, f"{self.name} does not accept a batched input (its first "
                "axis may not be symbolic: the op declares no batch rule)")
        kind = rule(attrs, list(ranks), limit) if callable(rule) else rule
        if not _batch_kind(kind):
            raise TypeError(f"op {self.name!r}: batch rule returned {kind!r}")
        if kind == "map":
            return tuple(range(len(ranks)))
        return (0,) if kind == "rows" else tuple(kind)


def _batch_kind(kind) -> bool:
    """Whether ``kind`` is a batch rule's answer: "map", "rows" or a tuple of positions."""
    if isinstance(kind, tuple):
        return bool(kind) and all(_is_int(k) and k >= 0 for k in kind)
    return kind in BATCH_KINDS


def _as_list(value, n: int) -> list:
    if n == 1:
        return [value]
    value = list(value)
    if len(value) != n:
        raise TypeError(f"rule returned {len(value)} results for {n} outputs")
    return value


# ---------------------------------------------------------------------------------------------
# Scalar-reference tensors: shape + flat C-order list of Python ints
# ---------------------------------------------------------------------------------------------

@dataclass
class Ref:
    """A tensor for the scalar reference: ``data`` is the flat C-order list of Python ints."""

    shape: tuple[int, ...]
    data: list[int]

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if len(self.data) != size_of(self.shape):
            raise ValueError(f"Ref: {len(self.data)} values for shape {self.shape}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def at(self, index: Sequence[int]) -> int:
        """The element at the multi-index ``index``."""
        return self.data[flat_index(self.shape, index)]

    @classmethod
    def build(cls, shape: Sequence[int], fn: Callable[[tuple], int]) -> "Ref":
        """A tensor whose element at every multi-index ``i`` is ``fn(i)``."""
        shape = tuple(shape)
        return cls(shape, [int(fn(i)) for i in indices(shape)])

    @classmethod
    def from_array(cls, a) -> "Ref":
        return cls(tuple(a.shape), [int(v) for v in a.reshape(-1).tolist()])

    def to_array(self, dtype="int64"):
        import numpy as np
        return np.array(self.data, dtype=dtype).reshape(self.shape)


def indices(shape: Sequence[int]):
    """All multi-indices of ``shape`` in C order."""
    return itertools.product(*(range(d) for d in shape))


def flat_index(shape: Sequence[int], index: Sequence[int]) -> int:
    flat = 0
    for d, i in zip(shape, index):
        flat = flat * d + i
    return flat


def unravel(shape: Sequence[int], flat: int) -> tuple[int, ...]:
    out = []
    for d in reversed(shape):
        out.append(flat % d)
        flat //= d
    return tuple(reversed(out))


# ---------------------------------------------------------------------------------------------
# Kernel helpers
# ---------------------------------------------------------------------------------------------

def wide(xp, a):
    """``a`` as int64: the explicit widening every arithmetic kernel does first."""
    return a.astype(xp.int64, copy=False)


def clip_ints(xp, a, lo: int, hi: int):
    """Elementwise min(max(a, lo), hi) on an int64 array."""
    return xp.minimum(xp.maximum(a, lo), hi)


def trunc_div(a: int, b: int) -> int:
    """Division truncating toward zero (C semantics); b != 0."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q
