"""Elementwise islands of byte inputs become lookup tables (a load-time pass of the CPU plans).

A chain of elementwise instructions whose only inputs from outside are one or two tensors of
at most 256 values each (proven ranges, vm/ranges.py), and whose intermediates nothing else
reads, is a function of at most 65,536 input pairs: a quantized model's residual addition
(two requantizes, an add, a requantize) or a requantize of bytes. Constant operands of one
value per channel ((1, C, 1, 1)) and per-channel requantizes make it a function of the
channel too: one table per channel (the PP-OCRv4 detector's batch normalization after its
transposed convolution: a requantize, a per-channel addition, a requantize; the whole model
191 to 181 ms). Islands with a requantize (several passes over the data each) become
tables; shifts and clips alone are cheaper as they are (vm/fusion.py). At load the island's
own kernels run once on every pair, and the step becomes one table lookup per element. The
table holds the kernels' results, so the bytes are those of the instructions run one by one.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ops import fastquant
from ops.scratch import scratch, spread
from ops.table import by_bits, translate

from .program import Program
from .ranges import Ranges
from .steps import Step

ELEMENTWISE = ("relu", "abs", "negative", "clip", "cvm_clip", "cvm_left_shift",
               "cvm_right_shift", "elemwise_add", "elemwise_sub", "broadcast_add",
               "broadcast_sub", "broadcast_mul", "broadcast_max", "requantize", "lut")
"""Ops an island may hold (lut with a constant table)."""
MAX_ENTRIES = 1 << 20
"""Entries of an island's table at most (channels times input pairs)."""
CHANNEL_BYTES = 1 << 23
"""Bytes of the tables of islands with one part per channel a plan makes at most: past them
the instructions run as they are (a small program of many such islands cannot make its load
take gigabytes; the islands of one value per input pair, 64 K entries, need a requantize
each)."""
MAX_VALUES = 256
"""The most values an input of an island may take."""
MAX_MEMBERS = 64
"""The most instructions of an island (its table costs each one a kernel call on up to 65,536
pairs at load; a quantized residual block has a handful): a sink's search for them stops
there, and sinks whose island would be larger are not searched from (:func:`_sinks`), so the
pass stays linear in the program with a small constant."""


def islands(program: Program, steps: list, skip=frozenset()) -> dict[int, Step]:
    """{sink instruction: Step} of the program's islands (none of them in ``skip``)."""
    if not any(ins.op == "requantize" for ins in program.code):
        return {}                       # no island is worth a table
    ranges, readers = Ranges(program), defaultdict(list)
    sinks = _sinks(program, ranges)
    if not sinks:
        return {}
    producer = ranges.producer
    for k, ins in enumerate(program.code):
        for t in ins.inputs:
            readers[t].append(k)
    taken, found, tables, spent = set(skip), {}, {}, 0
    for sink in reversed(sinks):
        if sink in taken:
            continue
        members = _grow(program, sink, readers, producer, ranges, taken)
        inputs = _inputs(program, members)
        worth = any(program.code[k].op == "requantize" for k in members)  # the costly one
        if not (worth and 1 <= len(inputs) <= 2) or \
                any(_wide(program, ranges, t) for t in inputs):
            continue
        channels = _channels(program, members)
        if channels > 1:                    # one table part per channel: within the budget
            entries = channels * _pairs(ranges, inputs)
            size = entries * program.tensors[program.code[sink].outputs[0]].dtype.itemsize
            if entries > MAX_ENTRIES or spent + size > CHANNEL_BYTES:
                continue
            spent += size
        found[sink] = _table_step(program, steps, sorted(members), inputs, ranges, tables)
        taken |= members
    return found


def _sinks(program: Program, ranges: Ranges) -> list[int]:
    """The instructions from which an island may grow, in order: the others cannot end one.
    An island holds its sink and, recursively, the producers of its members' wide inputs (more
    than MAX_VALUES values), which must be elementwise and no program output; one member must
    be a requantize; it has at most MAX_MEMBERS members, and its longest chain of wide inputs
    is a lower bound of their number. One pass over the program."""
    outputs = set(program.outputs)
    reach: dict[int, tuple[int, bool]] = {}  # tensor: (chain length, a requantize in it)
    sinks = []
    for k, ins in enumerate(program.code):
        if ins.op not in ELEMENTWISE or not _elementwise(program, k):
            continue
        length, hot = 1, ins.op == "requantize"
        for t in ins.inputs:
            if t not in program.consts and _wide(program, ranges, t):
                if t not in reach or t in outputs:
                    break                   # a wide input no island can absorb
                length, hot = max(length, reach[t][0] + 1), hot or reach[t][1]
        else:
            reach[ins.outputs[0]] = (length, hot)
            if hot and length <= MAX_MEMBERS:
                sinks.append(k)
    return sinks


def _elementwise(program: Program, k: int) -> bool:
    """Whether instruction k may be an island's member: one output, every non-constant
    operand of its shape (a lut's table constant), constant operands of one value per
    channel or one value, a requantize per tensor or per channel of a 4-D tensor."""
    ins, consts = program.code[k], program.consts
    if ins.op not in ELEMENTWISE or len(ins.outputs) != 1:
        return False
    shape = program.tensors[ins.outputs[0]].shape
    data = ins.inputs[1:] if ins.op == "lut" else ins.inputs
    if ins.op == "lut" and ins.inputs[0] not in consts or all(t in consts for t in data):
        return False
    if ins.op == "requantize" and len(ins.attrs["multiplier"]) > 1 and \
            not (len(shape) == 4 and ins.attrs["axis"] % 4 == 1):
        return False
    return all(program.tensors[t].shape == shape if t not in consts else
               _channel_shape(program.tensors[t].shape, shape) for t in data)


def _channel_shape(const: tuple, shape: tuple) -> bool:
    """Whether a constant of shape ``const`` holds one value, or one per channel of a 4-D
    ``shape`` ((1, C, 1, 1)), broadcasting against it."""
    if all(d == 1 for d in const):
        return len(const) <= len(shape)
    return len(shape) == 4 and len(const) == 4 and const[1] == shape[1] and \
        const[0] == const[2] == const[3] == 1


def _channels(program: Program, members) -> int:
    """C where a member reads a constant per channel or requantizes per channel (its table
    then depends on the channel), else 1."""
    for k in members:
        ins = program.code[k]
        if ins.op == "requantize" and len(ins.attrs["multiplier"]) > 1 or any(
                t in program.consts and program.tensors[t].size > 1
                for t in (ins.inputs[1:] if ins.op == "lut" else ins.inputs)):
            return program.tensors[ins.outputs[0]].shape[1]
    return 1


def _span(r: tuple[int, int]) -> int:
    return r[1] - r[0] + 1


def _pairs(ranges: Ranges, inputs) -> int:
    """The input values (pairs) an island's table covers."""
    n = 1
    for t in inputs:
        n *= _span(ranges.of(t))
    return n


def _wide(program: Program, ranges: Ranges, t: int) -> bool:
    """Whether tensor t may take more than MAX_VALUES values (a precision of at most 8 bounds
    it by 255 values without computing its range)."""
    return program.tensors[t].precision > 8 and _span(ranges.of(t)) > MAX_VALUES


def _grow(program: Program, sink: int, readers, producer, ranges, taken) -> set[int]:
    """The sink and, recursively, the producers of its inputs that take more than
    MAX_VALUES values, while they are elementwise and only the island reads their result
    (``producer``: tensor -> the instruction writing it)."""
    outputs, members = set(program.outputs), {sink}
    while len(members) < min(len(program.code), MAX_MEMBERS):
        wide = [t for t in _inputs(program, members) if _wide(program, ranges, t)]
        if not wide:
            break
        k = producer.get(wide[0])
        if k is None or k in taken or wide[0] in outputs or not _elementwise(program, k) or \
                any(r not in members for r in readers[wide[0]]):
            break
        members.add(k)
    return members


def _inputs(program: Program, members) -> list[int]:
    """Tensors the members read that none of them writes, in order of first use."""
    written = {t for k in members for t in program.code[k].outputs}
    out = []
    for k in sorted(members):
        for t in program.code[k].inputs:
            if t not in written and t not in out and t not in program.consts:
                out.append(t)
    return out


def _table_step(program: Program, steps, members: list[int], inputs: list[int],
                ranges, memo: dict) -> Step:
    """The Step looking the island up in the table of its results on every input pair (one
    table per distinct island: ``memo``, by :func:`_table_key`)."""
    spans = [ranges.of(t) for t in inputs]
    out = program.code[members[-1]].outputs[0]
    key = _table_key(program, members, inputs, spans)
    kernel = memo.get(key) if key is not None else None
    if kernel is None:
        kernel = _table(program, steps, members, inputs, spans)
        if key is not None:
            memo[key] = kernel
    return Step(members[-1], kernel, tuple(inputs), (out,), (program.tensors[out].dtype,), {},
                (), tuple(members))


def _table_key(program: Program, members: list[int], inputs: list[int], spans) -> tuple | None:
    """What an island's table depends on: each member's op, attributes, operand precisions
    and storage dtypes and where its operands come from (an input of the island or an earlier
    member), the inputs' ranges and dtypes (None if an attribute is not hashable)."""
    tensors, local, parts = program.tensors, {t: j for j, t in enumerate(inputs)}, []
    try:
        for n, k in enumerate(members):
            ins = program.code[k]
            parts.append((ins.op, tuple(ins.attrs.items()),
                          tuple(local[t] for t in ins.inputs),
                          tuple((tensors[t].precision, tensors[t].dtype)
                                for t in (*ins.inputs, *ins.outputs))))
            local[ins.outputs[0]] = len(inputs) + n
        key = (tuple(parts), tuple(spans), tuple(tensors[t].dtype for t in inputs))
        hash(key)
    except (KeyError, TypeError):
        return None
    return key


def _table(program: Program, steps, members: list[int], inputs: list[int], spans):
    """The TableKernel of an island: its members' kernels run once on every input pair (of
    every channel: on (1, C, pairs, 1) arrays where a member reads constants)."""
    grids = np.meshgrid(*[np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in spans],
                        indexing="ij")
    channels = _channels(program, members)
    shaped = any(t in program.consts for k in members for t in program.code[k].inputs
                 if program.code[k].op != "lut" or t != program.code[k].inputs[0])
    shape = (1, channels, grids[0].size, 1) if shaped or channels > 1 else (grids[0].size,)
    env = {t: np.broadcast_to(g.reshape((1, 1, -1, 1) if len(shape) == 4 else -1), shape)
           .astype(program.tensors[t].dtype) for t, g in zip(inputs, grids)}
    env.update({t: program.consts[t] for k in members for t in program.code[k].inputs
                if t in program.consts})
    for k in members:
        ins = program.code[k]
        value = _kernel(program, steps, k, len(shape))(np, *[env[t] for t in ins.inputs])
        env[ins.outputs[0]] = np.broadcast_to(value, shape).astype(
            program.tensors[ins.outputs[0]].dtype)
    out = program.code[members[-1]].outputs[0]
    return TableKernel(env[out].reshape(-1), [lo for lo, _ in spans],
                       [_span(s) for s in spans], program.tensors[out].dtype, channels)


def _kernel(program: Program, steps, k: int, ndim: int = 1):
    """Instruction k's CPU computation on ``ndim``-D arrays: requantize's float path where it
    is licensed (ops/fastquant.py), else the op's kernel."""
    ins = program.code[k]
    if ins.op == "requantize":
        x = program.tensors[ins.inputs[0]]
        fast = fastquant.RequantizeKernel(ins.attrs, x.precision, ndim,
                                          program.tensors[ins.outputs[0]].dtype)
        if fast.ok:
            return fast
    step = steps[k]
    return lambda xp, *args: step.kernel(xp, *args, **step.kwargs)


class TableKernel:
    """out = table[(a - lo_a) * span_b + (b - lo_b)] (one input: table[a - lo_a]), plus
    c * pairs on channel c where the table has ``channels`` parts (4-D data), on blocks
    spread over the lanes; the index is computed in int32 (at most MAX_ENTRIES entries)."""

    def __init__(self, table: np.ndarray, lows: list[int], spans: list[int], out_dtype,
                 channels: int = 1):
        self.table, self.lows, self.spans = np.ascontiguousarray(table), lows, spans
        self.out_dtype = np.dtype(out_dtype)
        self.channels = channels
        self.offsets = None
        if channels > 1:
            self.offsets = (np.arange(channels, dtype=np.int32) *
                            np.int32(self.table.size // channels)).reshape(1, -1, 1, 1)
        self._bytes: dict = {}

    def _byte_tables(self, dtype) -> list[bytes]:
        """Per channel part, its 256 entries by the bit patterns of byte data of ``dtype``
        (the lookup of one byte input with a byte result: :func:`ops.table.translate`)."""
        got = self._bytes.get(dtype)
        if got is None:
            parts = self.table.reshape(self.channels, -1)
            got = self._bytes[dtype] = [by_bits(p, self.lows[0], dtype).tobytes()
                                        for p in parts]
        return got

    def __call__(self, xp, a, b=None):
        if b is None and a.dtype.itemsize == 1 and self.out_dtype.itemsize == 1 and \
                (self.offsets is None or a.ndim == 4):
            return self._translate(np.ascontiguousarray(a))
        out = np.empty(a.shape, self.out_dtype)

        bytes_ = b is not None and a.dtype == b.dtype == np.uint8 and self.lows == [0, 0] and \
            self.spans[1] == 256 and self.offsets is None

        def block(index):
            if bytes_:                                   # (a << 8) | b, in uint16
                idx = scratch("index", a[index].shape, np.uint16)
                np.left_shift(a[index], 8, out=idx, dtype=np.uint16)
                np.bitwise_or(idx, b[index], out=idx, dtype=np.uint16)
            else:
                idx = scratch("index", a[index].shape, np.int32)
                np.subtract(a[index], self.lows[0], out=idx, dtype=np.int32)
                if b is not None:
                    np.multiply(idx, self.spans[1], out=idx)
                    np.add(idx, b[index], out=idx, dtype=np.int32)
                    if self.lows[1]:
                        np.subtract(idx, self.lows[1], out=idx)
                if self.offsets is not None:                 # the channel's table
                    np.add(idx, self.offsets[:, index[1]] if len(index) > 1 else
                           self.offsets, out=idx)
            np.take(self.table, idx, out=out[index], mode="clip")
        spread(block, a.shape, 8)
        return out

    def _translate(self, a):
        """One byte input, a byte result: the whole array (one part) or each channel's plane
        through its part's table, by bytearray.translate."""
        tables = self._byte_tables(a.dtype)
        if self.offsets is None:
            return translate(a.view(np.uint8), tables[0], self.out_dtype, a.shape)
        out = np.empty(a.shape, self.out_dtype)
        for n in range(a.shape[0]):
            for c in range(a.shape[1]):
                out[n, c] = translate(a[n, c].view(np.uint8), tables[c], self.out_dtype,
                                      a.shape[2:])
        return out
