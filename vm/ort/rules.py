"""How each op becomes exact integer ONNX nodes (the onnxruntime backend's lowering rules).

A rule is a pair: ``check(facts, k)`` says whether instruction k can be lowered (without
building anything), ``emit(region, k)`` adds its nodes to a :class:`Region` graph. Every value
inside a region is held in its tensor's storage dtype (int8 for p <= 8, else int32) and in one
of two layouts, ``nchw`` (the program's order) or ``nhwc`` (channels last, 4-D only); rules ask
for the layout they need and the region transposes. Rules only use integer ops on values the
validated bounds prove fit their type, and pick int32 or int64 intermediates from those
bounds; tables (GatherElements) hold values computed by detvm's own kernels. Ops without a
rule run as detvm kernels between regions.
"""
from __future__ import annotations

import numpy as np

from ops.base import bound
from ops.reduce import reduce_axes

from . import proto, requant
from .graph import DIRECT_CHANNELS, DIRECT_IMAGES, DIRECT_POSITIONS, Graph, LinearSpec, \
    accumulator_fits

INT8, INT32, INT64 = np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.int64)
LIMIT32 = (1 << 31) - 1
FLIP_MIN = 1 << 14
"""Elements from which a convolution's byte input is flipped to int8 by numpy before its
session (Region.flipped); below, the session's own BitwiseXor or Add and Cast cost less than
numpy's call (the digits CNN at batch 1, its 64-value input: 27.3 us a call flipped, 22.3 not)."""
NHWC, NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def work_dtype(top: int) -> np.dtype:
    """int32 when every intermediate magnitude is <= ``top`` < 2^31, else int64."""
    return INT32 if top <= LIMIT32 else INT64


class Region:
    """The graph of one run of lowered instructions: detvm tensor values as ONNX names."""

    def __init__(self, facts, form: str):
        self.g, self.facts, self.form = Graph(), facts, form
        self.vals: dict[tuple[int, str], str] = {}
        self.dtypes: dict[int, np.dtype] = {}
        self.offsets: dict[int, tuple[str, np.ndarray]] = {}    # t: (layout, constant)
        self.casts: dict[tuple[str, np.dtype], str] = {}
        self.inputs: list[tuple[int, str, str]] = []        # (tensor id, layout, name)
        self.flips: list[int] = []          # positions in inputs fed as int8 bytes XOR 0x80
        self.flipped_inputs: dict[int, tuple[str, str]] = {}    # t: (name, layout)

    # -- values -----------------------------------------------------------------------------
    def value(self, t: int, layout: str = "nchw", dtype=None) -> str:
        """Tensor ``t`` in ``layout``, cast to ``dtype`` (None: as it is, :meth:`dtype`)."""
        if t in self.offsets:                          # add the pending constant now
            where, offset = self.offsets.pop(t)
            base = self.vals[(t, where)]
            self.put(t, self.g.op("Add", base, self.g.const(offset)), where, self.dtypes[t])
        if (t, layout) not in self.vals:
            other = "nhwc" if layout == "nchw" else "nchw"
            if (t, other) not in self.vals:
                self._fetch(t)
            if (t, layout) not in self.vals:
                perm = NHWC if layout == "nhwc" else NCHW
                self.vals[(t, layout)] = self.g.op("Transpose", self.vals[(t, other)],
                                                   perm=list(perm))
        name = self.vals[(t, layout)]
        return name if dtype is None else self.cast(name, self.dtypes[t], dtype)

    def dtype(self, t: int) -> np.dtype:
        """The dtype tensor ``t``'s values have in this region."""
        if t not in self.dtypes:
            self._fetch(t)
        return self.dtypes[t]

    def layout_of(self, t: int) -> str:
        """The layout ``t`` is (or will be) available in without a transpose."""
        if (t, "nhwc") in self.vals:
            return "nhwc"
        if (t, "nchw") in self.vals or t in self.facts.program.consts:
            return "nchw"
        return self.facts.layout.get(t, "nchw")

    def _fetch(self, t: int) -> None:
        program = self.facts.program
        if t in program.consts:
            self.vals[(t, "nchw")] = self.g.const(program.consts[t])
            self.dtypes[t] = program.consts[t].dtype
            return
        layout = self.facts.layout.get(t, "nchw")
        name = f"in{len(self.inputs)}"
        self.inputs.append((t, layout, name))
        self.vals[(t, layout)], self.dtypes[t] = name, self.facts.dtype(t)

    def flipped(self, t: int) -> tuple[str, str] | None:
        """(name, layout) of tensor t, not made in this region, whose values are in [0, 255]
        (proven, or checked at run time for a guarded region), as an input of its own fed as
        int8, t - 128 (RegionKernel flips the low bytes before the session: a numpy pass,
        8 us for 300 KB of bytes, 50 us from int32, where onnxruntime's BitwiseXor or Add
        and Cast take 0.15 ms), in the layout it is held in; None for any other t, or one of
        fewer than FLIP_MIN elements."""
        if t in self.flipped_inputs:
            return self.flipped_inputs[t]
        lo, hi = self.facts.range(t)
        if t in self.facts.program.consts or any(key[0] == t for key in self.vals) or \
                not 0 <= lo <= hi <= 255 or self.facts.program.tensors[t].size < FLIP_MIN:
            return None
        name, layout = f"in{len(self.inputs)}", self.facts.layout.get(t, "nchw")
        self.flips.append(len(self.inputs))
        self.inputs.append((t, layout, name))
        self.flipped_inputs[t] = name, layout
        return name, layout

    def put(self, t: int, name: str, layout: str, dtype, offset=None) -> None:
        """``name`` holds tensor t's values, in ``layout`` and ``dtype``; with ``offset`` (a
        constant of that dtype broadcasting in that layout), t is name + offset, added when a
        rule needs it (:meth:`shifted` adds its own constant in the same node)."""
        for layout_ in ("nchw", "nhwc"):        # the layouts a value is held in
            self.vals.pop((t, layout_), None)
        self.vals[(t, layout)], self.dtypes[t] = name, np.dtype(dtype)
        self.offsets.pop(t, None)
        if offset is not None:
            self.offsets[t] = (layout, np.asarray(offset, dtype=dtype))

    def shifted(self, t: int, layout: str, dtype, extra: int) -> str:
        """t + ``extra`` in ``layout`` and ``dtype`` (which the caller proved holds it), in one
        Add with t's pending offset when there is one and it fits ``dtype``."""
        pending = self.offsets.get(t)
        if pending is not None and pending[0] == layout:
            total = pending[1].astype(np.int64) + extra
            info = np.iinfo(dtype)
            if info.min <= int(total.min()) and int(total.max()) <= info.max:
                base = self.cast(self.vals[(t, layout)], self.dtypes[t], dtype)
                return self.g.op("Add", base, self.g.const(total.astype(dtype)))
        v = self.value(t, layout, dtype)
        return self.g.op("Add", v, self.scalar(extra, dtype)) if extra else v

    def shape(self, t: int, layout: str) -> tuple:
        s = self.facts.program.tensors[t].shape
        return tuple(s[i] for i in NHWC) if layout == "nhwc" else s

    # -- node helpers -----------------------------------------------------------------------
    def cast(self, name: str, src, dst) -> str:
        """``name`` (of dtype ``src``) as ``dst``; the values fit (each rule's bounds)."""
        src, dst = np.dtype(src), np.dtype(dst)
        if src == dst:
            return name
        if (name, dst) not in self.casts:
            self.casts[(name, dst)] = self.g.op("Cast", name, to=proto.ELEM_TYPES[dst])
        return self.casts[(name, dst)]

    def lookup(self, table: np.ndarray, index: str, shape) -> str:
        """``table[index]`` elementwise, ``index`` of ``shape`` in the table's range: a
        GatherElements on the flattened index (onnxruntime's Gather copies element by element,
        ~8 ns each; GatherElements ~0.7, less than numpy's take)."""
        if len(shape) != 1:
            index = self.g.op("Reshape", index, self.g.const(np.array([-1], np.int64)))
        y = self.g.op("GatherElements", self.g.const(table.reshape(-1)), index, axis=0)
        if len(shape) != 1:
            y = self.g.op("Reshape", y, self.g.const(np.array(shape, np.int64)))
        return y

    def scalar(self, v: int, dtype) -> str:
        return self.g.const(np.array(v, dtype=dtype))

    def per_channel(self, values, axis: int, ndim: int, layout: str, dtype) -> str:
        """A constant broadcasting ``values`` along ``axis`` (program order) in ``layout``."""
        values = np.asarray(values, dtype=dtype)
        if values.size == 1:
            return self.g.const(values.reshape(()))
        shape = [1] * ndim
        shape[NHWC.index(axis) if layout == "nhwc" else axis] = values.size
        return self.g.const(values.reshape(shape))

    def model(self, outputs: list[tuple[int, str]]) -> bytes:
        """The ModelProto with ``outputs`` ((tensor id, layout), each in the dtype it is held
        in between steps: Facts.dtype)."""
        names, facts = [], self.facts
        given = {name for _, _, name in self.inputs} | self.g.constants
        for t, layout in outputs:
            name = self.value(t, layout, facts.dtype(t))
            if name in given or name in names:      # an output is a node's own, named once
                name = self.g.op("Identity", name)
            names.append(name)
        ins = [(name, INT8 if k in self.flips else facts.dtype(t), self.shape(t, layout))
               for k, (t, layout, name) in enumerate(self.inputs)]
        outs = [(name, facts.dtype(t), self.shape(t, layout))
                for name, (t, layout) in zip(names, outputs)]
        return self.g.model(ins, outs)


# ---------------------------------------------------------------------------------------------
# conv2d / dense (and q forms): MatMulInteger
# ---------------------------------------------------------------------------------------------

def linear_parts(facts, k: int):
    """(weight, bias, offset, zero_point, split, direct) when instruction k lowers, else
    None; ``direct``: a convolution of few channels or a depthwise one (one input channel per
    group), as ConvInteger (graph.py). Computed once per instruction."""
    key = ("linear", k)
    if key not in facts.cache:
        facts.cache[key] = _find_linear_parts(facts, k)
    return facts.cache[key]


def _find_linear_parts(facts, k: int):
    ins, program = facts.program.code[k], facts.program
    consts = [program.consts.get(i) for i in ins.inputs]
    if consts[0] is not None or consts[1] is None or any(c is None for c in consts[2:]):
        return None
    groups = ins.attrs["groups"] if ins.op.endswith("conv2d") else 1
    weight = consts[1]
    if groups != 1 and (not facts.direct or weight.shape[1] != 1):   # depthwise: ConvInteger
        return None
    if weight.size == 0 or int(weight.min()) < -128 or int(weight.max()) > 127:
        return None
    zp = ins.attrs.get("zero_point", 0)
    lo, hi = facts.range(ins.inputs[0])
    choice = _offset(lo, hi, zp)
    pointwise = weight.ndim == 4 and weight.shape[2] * weight.shape[3] == 1
    direct = facts.direct and weight.ndim == 4 and (
        groups != 1 or weight.shape[1] <= DIRECT_CHANNELS * (2 if pointwise else 1) and
        _few_images(program.tensors[ins.outputs[0]].shape))
    if choice is None or not accumulator_fits(weight, choice[1], "u8u8" if direct else
                                              facts.form):
        return None
    return weight, (consts[2] if len(consts) > 2 else None), choice[0], zp, choice[1], direct


def _few_images(out_shape) -> bool:
    """A batch ConvInteger's image-by-image loop runs fast enough (DIRECT_IMAGES)."""
    n, _, h, w = out_shape
    return n <= DIRECT_IMAGES or h * w >= DIRECT_POSITIONS


def _offset(lo: int, hi: int, zp: int):
    """(offset, split): u = x + offset in [0, 255] with padding byte zp + offset in [0, 255]
    (0 and 128 preferred: no conversion or one XOR); else split bytes in [0, 65535]."""
    for c in (0, 128, -lo):
        if 0 <= lo + c and hi + c <= 255 and 0 <= zp + c <= 255:
            return c, False
    c = -lo
    if hi + c <= 65535 and 0 <= zp + c <= 65535:
        return c, True
    return None


def check_linear(facts, k: int) -> bool:
    return linear_parts(facts, k) is not None


def emit_linear(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    weight, bias, offset, zp, split, direct = linear_parts(facts, k)
    conv = ins.op.endswith("conv2d")
    attrs = {key: ins.attrs[key] for key in ("kernel_size", "strides", "padding", "dilation")
             } if conv else {}
    # MatMulInteger reads and writes channels last; ConvInteger reads either layout and
    # writes NCHW (transposed when the result is held channels last)
    layout = "nchw" if not conv or (direct and region.layout_of(ins.inputs[0]) == "nchw") \
        else "nhwc"
    out_layout = "nhwc" if conv and (not direct or facts.layout.get(ins.outputs[0]) == "nhwc") \
        else "nchw"
    signed = direct and facts.signed and not split and ins.attrs["groups"] == 1
    flipped = region.flipped(ins.inputs[0]) if signed and offset == 0 else None
    if flipped is not None:
        x, layout = flipped
    else:
        x = region.value(ins.inputs[0], layout)
    x_dtype = facts.dtype(ins.inputs[0]) if flipped else region.dtype(ins.inputs[0])
    spec = LinearSpec(region.shape(ins.inputs[0], layout), x_dtype, weight,
                      attrs, offset, zp, region.form, split, nhwc_in=layout == "nhwc",
                      nchw_out=conv and out_layout == "nchw", direct=direct,
                      groups=ins.attrs["groups"] if conv else 1, signed=signed,
                      flipped=flipped is not None)
    acc = spec.emit(region.g, x)
    off = spec.offset_row(bias)
    out = facts.program.tensors[ins.outputs[0]]
    dtype = work_dtype(bound(out.precision) + int(np.abs(off).max(initial=0)))
    acc = region.cast(acc, INT32, dtype)
    if conv and out_layout == "nhwc":      # + off tiled to (ow, OC): one long broadcast span
        off = np.tile(off, (spec.out_shape[2], 1))
    elif conv:
        off = off.reshape(-1, 1, 1)
    region.put(ins.outputs[0], acc, out_layout, dtype, offset=off.astype(dtype))


# ---------------------------------------------------------------------------------------------
# Pointwise tails: cvm_right_shift, relu, clip, cvm_clip, cvm_left_shift
# ---------------------------------------------------------------------------------------------

def _tail(region: Region, k: int, shift: int, add: int, lo: int, hi: int, scale: int = 1):
    """out = clip(floor((x * scale + add) / 2^shift), lo, hi), exactly: the sum v is clipped
    to the window of v whose floor lands in [lo, hi] (intersected with v's own range), moved
    by a multiple of 2^shift to be >= 0 (so Div's truncation is the floor), divided, moved
    back."""
    facts = region.facts
    ins = facts.program.code[k]
    x_lo, x_hi = facts.range(ins.inputs[0])
    v_lo, v_hi = x_lo * scale + add, x_hi * scale + add
    a = max(v_lo, lo << shift)                           # the window of v that matters
    b = min(v_hi, ((hi + 1) << shift) - 1)
    layout = region.layout_of(ins.inputs[0])
    if a > b:                                            # every v on one side: a constant
        const = lo if v_hi < lo << shift else hi
        v = region.g.op("Mul", region.value(ins.inputs[0], layout, INT32),
                        region.scalar(0, INT32))
        region.put(ins.outputs[0], region.g.op("Add", v, region.scalar(const, INT32)), layout,
                   INT32)
        return
    base = (a >> shift) << shift                         # a multiple of 2^shift <= a
    dtype = work_dtype(max(abs(v_lo), abs(v_hi), abs(v_lo - base), abs(v_hi - base),
                           abs(x_lo * scale), abs(x_hi * scale), 1 << shift, scale))
    if scale != 1:
        v = region.g.op("Mul", region.value(ins.inputs[0], layout, dtype),
                        region.scalar(scale, dtype))
        v = region.g.op("Add", v, region.scalar(add - base, dtype)) if add - base else v
    else:
        v = region.shifted(ins.inputs[0], layout, dtype, add - base)
    v = region.g.op("Clip", v, region.scalar(a - base, dtype), region.scalar(b - base, dtype))
    if shift:
        v = region.g.op("Div", v, region.scalar(1 << shift, dtype))
    if base >> shift:
        v = region.g.op("Add", v, region.scalar(base >> shift, dtype))
    region.put(ins.outputs[0], v, layout, dtype)


def _input_range(facts, k):
    return facts.range(facts.program.code[k].inputs[0])


def emit_pointwise(region: Region, k: int) -> None:
    ins = region.facts.program.code[k]
    a = ins.attrs
    lo, hi = _input_range(region.facts, k)
    if ins.op == "cvm_right_shift":
        r, s = bound(a["precision"]), a["shift_bit"]
        _tail(region, k, s, 1 << (s - 1), -r, r)
    elif ins.op == "cvm_left_shift":
        r = bound(a["precision"])
        _tail(region, k, 0, 0, -r, r, 1 << a["shift_bit"])
    elif ins.op == "relu":
        _tail(region, k, 0, 0, 0, max(hi, 0))
    elif ins.op == "clip":
        _tail(region, k, 0, 0, a["a_min"], a["a_max"])
    else:                                                              # cvm_clip
        r = bound(a["precision"])
        _tail(region, k, 0, 0, -r, r)


# ---------------------------------------------------------------------------------------------
# Binary elementwise: elemwise_add / _sub, broadcast_add / _sub / _mul / _max
# ---------------------------------------------------------------------------------------------

BINARY = {"elemwise_add": "Add", "elemwise_sub": "Sub", "broadcast_add": "Add",
          "broadcast_sub": "Sub", "broadcast_mul": "Mul", "broadcast_max": "Max"}


def emit_binary(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    a, b = (facts.program.tensors[i] for i in ins.inputs)
    same = a.shape == b.shape
    layout = "nhwc" if same and "nhwc" in [region.layout_of(i) for i in ins.inputs] else "nchw"
    x, y = (region.value(i, layout, INT32) for i in ins.inputs)
    region.put(ins.outputs[0], region.g.op(BINARY[ins.op], x, y), layout, INT32)


# ---------------------------------------------------------------------------------------------
# lut: a constant table indexed by one or two inputs of one rank (broadcasting)
# ---------------------------------------------------------------------------------------------

def check_lut(facts, k: int) -> bool:
    ins = facts.program.code[k]
    ranks = {len(facts.program.tensors[i].shape) for i in ins.inputs[1:]}
    return ins.inputs[0] in facts.program.consts and len(ranks) == 1


def emit_lut(region: Region, k: int) -> None:
    """y = T[clip(a - low_0, 0, n - 1)] (two inputs: the flat index of the two clipped
    indices, row-major, broadcasting as numpy does), clipped only where the proven range of
    an input exceeds the table's."""
    facts = region.facts
    ins = facts.program.code[k]
    table = facts.program.consts[ins.inputs[0]]
    data = ins.inputs[1:]
    layout = "nhwc" if len(facts.program.tensors[data[0]].shape) == 4 and \
        "nhwc" in [region.layout_of(t) for t in data] else "nchw"
    index = None
    for t, low, n in zip(data, ins.attrs["low"], table.shape):
        lo, hi = facts.range(t)
        dtype = work_dtype(max(abs(lo - low), abs(hi - low)))
        v = region.shifted(t, layout, dtype, -low)
        if lo - low < 0 or hi - low > n - 1:
            v = region.g.op("Clip", v, region.scalar(0, dtype), region.scalar(n - 1, dtype))
        v = region.cast(v, dtype, INT32)                              # now in [0, n - 1]
        index = v if index is None else \
            region.g.op("Add", region.g.op("Mul", index, region.scalar(n, INT32)), v)
    y = region.lookup(table, index, region.shape(ins.outputs[0], layout))
    region.put(ins.outputs[0], y, layout, table.dtype)


# ---------------------------------------------------------------------------------------------
# requantize (vm/ort/requant.py)
# ---------------------------------------------------------------------------------------------

def check_requantize(facts, k: int) -> bool:
    return requantize_kind(facts, k) is not None


def requantize_kind(facts, k: int) -> str | None:
    """How instruction k's requantize lowers (requant.how), decided once per facts; the
    tables it would make are charged to the plan's table budget (``facts.tables``) when it is
    checked: one checked but left unlowered still spends its share, so the budget errs on the
    side of fewer tables."""
    return _requantize_how(facts, k)[0]


def requantize_table_bytes(facts, k: int) -> int:
    """The bytes of the tables instruction k's requantize lowers with (0: none)."""
    return _requantize_how(facts, k)[1]


def _requantize_how(facts, k: int) -> tuple[str | None, int]:
    key = ("requantize", k)
    if key not in facts.cache:
        kind, size = requant.how(facts.program.code[k].attrs, *_input_range(facts, k),
                                 facts.tables["left"])
        facts.tables["left"] -= size
        facts.cache[key] = kind, size
    return facts.cache[key]


def emit_requantize(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    x_t, out = facts.program.tensors[ins.inputs[0]], facts.program.tensors[ins.outputs[0]]
    layout = region.layout_of(ins.inputs[0]) if len(x_t.shape) == 4 else "nchw"
    y, dtype = requant.emit(region, ins.inputs[0], x_t, out, ins.attrs, *_input_range(facts, k),
                            layout, requantize_kind(facts, k))
    region.put(ins.outputs[0], y, layout, dtype)


# ---------------------------------------------------------------------------------------------
# Layout and pooling: reshape, flatten, expand_dims, squeeze, max_pool2d, sum, sum_pool2d
# ---------------------------------------------------------------------------------------------

def emit_reshape(region: Region, k: int) -> None:
    ins = region.facts.program.code[k]
    out = region.facts.program.tensors[ins.outputs[0]]
    shape = region.g.const(np.array(out.shape, np.int64))
    region.put(ins.outputs[0], region.g.op("Reshape", region.value(ins.inputs[0]), shape),
               "nchw", region.dtype(ins.inputs[0]))


def byte_type(lo: int, hi: int):
    """uint8 or int8 where [lo, hi] fits one, else None."""
    if 0 <= lo and hi <= 255:
        return np.dtype(np.uint8)
    if -128 <= lo and hi <= 127:
        return np.dtype(np.int8)
    return None


NCHW_POOL_SIZE = 1 << 10
"""max_pool2d of a channels-first input of fewer elements runs as MaxPool in that layout:
onnxruntime's MaxPool of NCHW bytes costs ~3 ns per element (ResNet-18's 64x112x112: 3.5 ms),
NhwcMaxPool with the transposes around it ~0.5 ns, but its two extra nodes ~0.6 us a run."""


def check_max_pool(facts, k: int) -> bool:
    return byte_type(*_input_range(facts, k)) is not None


def emit_max_pool(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    a = ins.attrs
    byte = byte_type(*_input_range(facts, k))
    (ph, pw) = a["padding"]
    window = dict(kernel_shape=list(a["pool_size"]), strides=list(a["strides"]),
                  pads=[ph, pw, ph, pw])
    x = ins.inputs[0]
    small = facts.program.tensors[x].size < NCHW_POOL_SIZE and region.layout_of(x) == "nchw"
    if not a["ceil_mode"] and not small:
        y = region.g.op("NhwcMaxPool", region.value(x, "nhwc", byte),
                        domain="com.microsoft", **window)
        region.put(ins.outputs[0], y, "nhwc", byte)
        return
    y = region.g.op("MaxPool", region.value(x, "nchw", byte),
                    ceil_mode=int(a["ceil_mode"]), **window)
    region.put(ins.outputs[0], y, "nchw", byte)


def _axes(ins, ndim: int) -> list[int]:
    return list(reduce_axes(ndim, ins.attrs["axis"], ins.attrs["exclude"]))


def check_sum(facts, k: int) -> bool:
    ins = facts.program.code[k]
    return len(_axes(ins, len(facts.program.tensors[ins.inputs[0]].shape))) > 0


def emit_sum(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    x_t, out = (facts.program.tensors[i] for i in (ins.inputs[0], ins.outputs[0]))
    axes = _axes(ins, len(x_t.shape))
    y = region.g.op("ReduceSum", region.value(ins.inputs[0], "nchw", INT32),
                    region.g.const(np.array(axes, np.int64)), keepdims=1)
    y = region.g.op("Reshape", y, region.g.const(np.array(out.shape, np.int64)))
    region.put(ins.outputs[0], y, "nchw", INT32)


def check_sum_pool(facts, k: int) -> bool:
    """Global windows only: one window covering the whole (unpadded) image."""
    ins = facts.program.code[k]
    shape = facts.program.tensors[ins.inputs[0]].shape
    return tuple(ins.attrs["pool_size"]) == tuple(shape[2:]) and \
        tuple(ins.attrs["padding"]) == (0, 0)


def emit_sum_pool(region: Region, k: int) -> None:
    facts = region.facts
    ins = facts.program.code[k]
    x_t = facts.program.tensors[ins.inputs[0]]
    zp, cells = ins.attrs["zero_point"], x_t.shape[2] * x_t.shape[3]
    y = region.g.op("ReduceSum", region.value(ins.inputs[0], "nchw", INT32),
                    region.g.const(np.array([2, 3], np.int64)), keepdims=1)
    if zp:
        y = region.g.op("Sub", y, region.scalar(zp * cells, INT32))
    region.put(ins.outputs[0], y, "nchw", INT32)


_always = lambda facts, k: True
RULES = {
    "conv2d": (check_linear, emit_linear), "qconv2d": (check_linear, emit_linear),
    "dense": (check_linear, emit_linear), "qdense": (check_linear, emit_linear),
    **{op: (_always, emit_pointwise) for op in ("cvm_right_shift", "cvm_left_shift", "relu",
                                               "clip", "cvm_clip")},
    **{op: (_always, emit_binary) for op in BINARY},
    "requantize": (check_requantize, emit_requantize),
    "lut": (check_lut, emit_lut),
    **{op: (_always, emit_reshape) for op in ("reshape", "flatten", "expand_dims", "squeeze")},
    "max_pool2d": (check_max_pool, emit_max_pool),
    "sum": (check_sum, emit_sum),
    "sum_pool2d": (check_sum_pool, emit_sum_pool),
}
"""op name -> (check, emit). Every other op runs as a detvm kernel."""
LINEAR = ("conv2d", "qconv2d", "dense", "qdense")
