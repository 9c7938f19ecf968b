"""CVM's input and output byte layouts (cvm.md §2.2, cvm-observed.md §3 and §8).

Input: the flat C-order ``data`` as int8 (input precision <= 8) or int32. Output: one int8 or
int32 per element (int8 when every output precision is <= 8; 1-byte outputs are plain int8
truncations); several outputs, and ``detection``, interleave row by row (a row = size / last
dim, equal for every output); ``argmax`` writes one int32 index per row. int32 is little endian,
or big endian as on CVM's chain layer.

Default mode gives the results CVM meant; compat mode ("cvm") reproduces its byte-level quirks:
inputs are clamped to the input precision, output widths follow CVM's precision rules (a
``where`` takes the condition's), argmax compares int8 truncations and fills only the first
ceil(rows / last dim) rows (the rest stay 0), single-output ``detection`` fails, the detection
length ignores the batch, and a graph whose ``data`` is not its first non-parameter node sizes
its input wrongly and can never run.
"""
from __future__ import annotations

import numpy as np

from ops.base import bound

from .errors import TrapError
from .program import Program

POSTPROCESS = ("argmax", "detection")


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, last dim) of an output."""
    last = shape[-1]
    return int(np.prod(shape)) // last, last


class ByteLayout:
    """The byte layout of one model (``facts`` from :func:`compiler.cvm.facts`)."""

    def __init__(self, program: Program, facts):
        if len(program.inputs) != 1:
            raise TrapError(f"CVM models have one input, this one has {len(program.inputs)}")
        data = program.tensors[program.inputs[0]]
        self.compat = facts.compat == "cvm"
        self.input_name, self.input_shape, self.input_precision = data.name, data.shape, \
            data.precision
        self.input_type_size = 1 if data.precision <= 8 else 4
        self.bad_input_size = facts.bad_input_size if self.compat else None
        self.output_shapes = [program.tensors[i].shape for i in program.outputs]
        precs = facts.output_precisions if self.compat else \
            [program.tensors[i].precision for i in program.outputs]
        self.postprocess = facts.postprocess if facts.postprocess in POSTPROCESS else ""
        self.output_type_size = 4 if self.postprocess or max(precs) > 8 else 1

    # -- lengths ----------------------------------------------------------------------------
    @property
    def input_length(self) -> int:
        size = self.bad_input_size or int(np.prod(self.input_shape))
        return size * self.input_type_size

    @property
    def output_length(self) -> int:
        shapes = self.output_shapes
        if self.postprocess == "argmax":
            return 4 * sum(_rows(s)[0] for s in shapes)
        if self.postprocess == "detection" and self.compat:
            first = shapes[0][-2] if len(shapes[0]) > 1 else 1
            return 4 * first * sum(s[-1] for s in shapes)
        return self.output_type_size * sum(int(np.prod(s)) for s in shapes)

    # -- bytes ------------------------------------------------------------------------------
    def decode(self, data: bytes, big_endian: bool = False) -> np.ndarray:
        """The ``data`` array of an input byte string."""
        if self.bad_input_size is not None:
            raise TrapError(f"GetInputLength() == size ({self.input_length} vs. {len(data)}): "
                            "an operator node precedes data, CVM sizes the input from the "
                            "wrong entry and can never run this model")
        if len(data) != self.input_length:
            raise TrapError(f"GetInputLength() == size ({self.input_length} vs. {len(data)})")
        x = np.frombuffer(data, dtype=self._dtype(self.input_type_size, big_endian))
        x = x.astype(np.int64).reshape(self.input_shape)
        if self.compat:
            r = bound(self.input_precision)
            x = np.clip(x, -r, r)
        return x

    def encode(self, outputs: list[np.ndarray], big_endian: bool = False) -> bytes:
        """The output byte string of the model's outputs (in order)."""
        arrays = [np.asarray(a, dtype=np.int64) for a in outputs]
        if self.postprocess == "argmax":
            return self._argmax(arrays).astype(self._dtype(4, big_endian)).tobytes()
        if len(arrays) == 1 and self.postprocess == "detection" and self.compat:
            raise TrapError("detection model output cannot concat (it has a single output)")
        values = self._interleave(arrays) if len(arrays) > 1 else arrays[0].reshape(-1)
        raw = values.astype(self._dtype(self.output_type_size, big_endian)).tobytes()
        if self.postprocess == "detection" and self.compat:
            raw = raw[:self.output_length].ljust(self.output_length, b"\0")
        return raw

    @staticmethod
    def _dtype(size: int, big_endian: bool) -> np.dtype:
        return np.dtype("i1" if size == 1 else (">i4" if big_endian else "<i4"))

    @staticmethod
    def _interleave(arrays: list[np.ndarray]) -> np.ndarray:
        rows = {_rows(a.shape)[0] for a in arrays}
        if len(rows) != 1:
            raise TrapError(f"outputs have different row counts {sorted(rows)}: "
                            "model output cannot concat")
        n = rows.pop()
        return np.concatenate([a.reshape(n, -1) for a in arrays], axis=1).reshape(-1)

    def _argmax(self, arrays: list[np.ndarray]) -> np.ndarray:
        out = []
        for a in arrays:
            rows = a.reshape(_rows(a.shape))
            if not self.compat:
                out.append(np.argmax(rows, axis=1))
                continue
            done = -(-rows.shape[0] // rows.shape[1])        # CVM's loop: ceil(rows / last)
            index = np.zeros(rows.shape[0], dtype=np.int64)
            index[:done] = np.argmax(rows[:done].astype(np.int8), axis=1)
            out.append(index)
        return np.concatenate(out)
