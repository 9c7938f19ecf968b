"""ONNX graphs of exact integer operations for conv2d / dense heads (qconv2d / qdense).

A :class:`LinearSpec` describes one head as onnxruntime computes it: the data operand enters
as unsigned bytes ``u = x + offset`` (``offset`` chosen from the proven range of x so that u
is in [0, 255], or, ``split``, in [0, 65535] as a low and a high byte), and the padding is the
byte ``pad = zero_point + offset`` (a padded tap then contributes w * (x - zp) = 0, as
conv2d's rule says). Two forms:

* MatMulInteger on an im2col made of Pad, one Slice per kernel tap (strides and dilation as
  slice steps) and one Concat, channels last; the weight matrix is int8 (``u8s8``) or the
  weight + 128 as uint8 with the zero point 128 (``u8u8``). Its output is the exact int32
  acc = sum_k W[oc, k] * u_k = z - bias + (zero_point + offset) * sum_k W[oc, k];
* ``direct`` (convolutions of few channels, whose im2col would copy runs of a few bytes):
  ConvInteger on the NCHW bytes with the zero point ``pad`` and the weight + 128 with zero
  point 128: acc = sum_k W[oc, k] * (u_k - pad) = z - bias. ``signed``: the data enters as
  int8, s = u - 128 with the zero point pad - 128 (the same differences): onnxruntime then
  multiplies the weight bytes by the data's int8 im2col with its uint8 x int8 kernel, where
  bytes against bytes take its uint8 x uint8 one, about half as fast (16 to 32 channels with
  stride 2 from 160x160: 0.29 against 0.50 ms; ResNet-18's 3-channel 7x7 stem 0.93 against
  1.74 ms); the self-test licenses it apart (vm/ort/selftest.py).

The output ``acc`` is in channels-last order ([n, oh, ow, OC]) or, ``nchw_out``, [n, OC, oh,
ow]; the caller adds the per-channel offset back (:meth:`LinearSpec.offset_row`). Every node
is an integer op on values the bounds prove fit (the accumulators below 2^31 are checked by
:func:`accumulator_fits`); no float op appears.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ops.gemm import row_abs_sums

from . import proto

OPSET = 18
"""BitwiseXor needs opset 18 (onnxruntime >= 1.14)."""
INT31 = (1 << 31) - 1
EXTERNAL_BYTES = 1 << 16
"""Constants from this size on are handed to the session as arrays, not copied into the
ModelProto."""


class Graph:
    """Nodes and constants of one graph; every value gets a fresh name."""

    def __init__(self):
        self.nodes: list[bytes] = []
        self.inits: list[bytes] = []
        self.externals: dict[str, np.ndarray] = {}
        self.small: dict[tuple, str] = {}
        self.constants: set[str] = set()
        self.derived: set[str] = set()
        """Values computed from constants only (onnxruntime's basic optimizations fold them)."""
        self.count = 0
        self.opsets = {"": OPSET}

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def const(self, array) -> str:
        """A constant's name; equal small constants are one initializer."""
        array = np.ascontiguousarray(array)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.nbytes <= 64 else None
        if key in self.small:
            return self.small[key]
        name = self._name("c")
        self.constants.add(name)
        if key is not None:
            self.small[key] = name
        external = array.nbytes >= EXTERNAL_BYTES
        if external:
            self.externals[name] = array
        self.inits.append(proto.tensor(name, array, external))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(proto.node(op_type, inputs, [out], domain=domain, **attrs))
        if inputs and all(i in self.constants or i in self.derived for i in inputs if i):
            self.derived.add(out)
        if domain:
            self.opsets[domain] = 1
        return out

    def model(self, inputs, outputs) -> bytes:
        """The ModelProto; ``inputs`` / ``outputs``: (name, dtype, shape)."""
        g = proto.graph("detvm", self.nodes, [proto.value_info(*i) for i in inputs],
                        [proto.value_info(*o) for o in outputs], self.inits)
        return proto.model(g, self.opsets)


@dataclass(frozen=True)
class LinearSpec:
    """One conv2d / dense head lowered to MatMulInteger (see the module doc).

    ``x_shape``: the data as fed, per call (NCHW, or NHWC when ``nhwc_in``; dense: (n, K));
    ``weight``: the constant weight (OC, C, KH, KW) or (OC, K); ``attrs``: conv2d's
    (kernel_size, strides, padding, dilation); ``offset``, ``zero_point``: u = x + offset,
    padding byte zero_point + offset; ``form``: "u8s8" or "u8u8"; ``groups``: a grouped
    (depthwise) convolution, ``direct`` only (weight (OC, C / groups, KH, KW)); ``signed``:
    ``direct`` on the int8 data s = u - 128 (not ``split``); ``flipped``: x is fed as that
    int8 already (the bytes XOR 0x80 of uint8 data with offset 0, made before the session)."""

    x_shape: tuple[int, ...]
    x_dtype: np.dtype
    weight: np.ndarray
    attrs: dict
    offset: int
    zero_point: int
    form: str
    split: bool = False
    nhwc_in: bool = False
    nchw_out: bool = False
    direct: bool = False
    groups: int = 1
    signed: bool = False
    flipped: bool = False

    @property
    def conv(self) -> bool:
        return self.weight.ndim == 4

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw) = self.attrs["kernel_size"], self.attrs["strides"]
        (ph, pw), (dh, dw) = self.attrs["padding"], self.attrs["dilation"]
        h, w = self.x_shape[1:3] if self.nhwc_in else self.x_shape[2:4]
        return (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1, (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1

    @property
    def out_shape(self) -> tuple[int, ...]:
        n, oc = self.x_shape[0], self.weight.shape[0]
        if not self.conv:
            return (n, oc)
        oh, ow = self.out_hw
        return (n, oc, oh, ow) if self.nchw_out else (n, oh, ow, oc)

    def matrix(self) -> np.ndarray:
        """W as the (K, OC) int8 matrix, K in (tap row, tap column, channel) order."""
        w = self.weight
        if self.conv:
            w = w.transpose(2, 3, 1, 0)
        else:
            w = w.T
        return np.ascontiguousarray(w.reshape(-1, self.weight.shape[0])).astype(np.int8,
                                                                                copy=False)

    def offset_row(self, bias) -> np.ndarray:
        """off[oc] = bias[oc] - (zero_point + offset) * sum_k W[oc, k] (``direct``: bias[oc])
        exact int64: the head's result is acc + off."""
        rows = self.weight.reshape(self.weight.shape[0], -1)
        narrow = rows.dtype.itemsize == 1 and rows.shape[1] < 1 << 23    # |sum| < 2^30
        sums = rows.sum(axis=1, dtype=np.int32 if narrow else np.int64).astype(np.int64)
        off = np.zeros_like(sums) if self.direct else -(self.zero_point + self.offset) * sums
        return off if bias is None else off + np.asarray(bias, np.int64)

    def graph(self) -> bytes:
        """The ModelProto: input ``x`` (x_shape, x_dtype), output ``acc`` (int32)."""
        g = Graph()
        g.nodes.append(proto.node("Identity", [self.emit(g, "x")], ["acc"]))
        return g.model([("x", self.x_dtype, self.x_shape)], [("acc", np.int32, self.out_shape)])

    def emit(self, g: Graph, x: str) -> str:
        """Add the nodes computing ``acc`` from the value ``x`` to ``g``; return acc's name."""
        if self.direct:
            return self._direct(g, x)
        parts = self._bytes(g, x)
        if self.conv and not self.nhwc_in:
            parts = [(g.op("Transpose", p, perm=[0, 2, 3, 1]), v) for p, v in parts]
        matrix = g.const(self.matrix() if self.form == "u8s8" else _shifted(self.matrix()))
        zero = [] if self.form == "u8s8" else [g.const(np.uint8(0)), g.const(np.uint8(128))]
        accs = []
        for part, pad in parts:
            cols = self._im2col(g, part, pad) if self.conv else part
            accs.append(g.op("MatMulInteger", cols, matrix, *zero))
        acc = _combine(g, accs)               # [n, oh, ow, OC]: MatMul broadcasts over n, oh, ow
        if self.conv and self.nchw_out:
            acc = g.op("Transpose", acc, perm=[0, 3, 1, 2])
        return acc

    def _direct(self, g: Graph, x: str) -> str:
        """ConvInteger on the NCHW bytes (``signed``: their int8 s = u - 128), the padding
        byte (pad - 128) as their zero point."""
        parts = self._signed(g, x) if self.signed else self._bytes(g, x)
        if self.nhwc_in:
            parts = [(g.op("Transpose", p, perm=[0, 3, 1, 2]), v) for p, v in parts]
        weight = g.const(_shifted(self.weight))
        (ph, pw) = self.attrs["padding"]
        attrs = dict(kernel_shape=list(self.attrs["kernel_size"]),
                     strides=list(self.attrs["strides"]), pads=[ph, pw, ph, pw],
                     dilations=list(self.attrs["dilation"]))
        if self.groups != 1:
            attrs["group"] = self.groups
        zero = (lambda pad: np.int8(pad - 128)) if self.signed else np.uint8
        acc = _combine(g, [g.op("ConvInteger", p, weight, g.const(zero(pad)),
                                g.const(np.uint8(128)), **attrs) for p, pad in parts])
        return acc if self.nchw_out else g.op("Transpose", acc, perm=[0, 2, 3, 1])

    def _bytes(self, g: Graph, x: str) -> list[tuple[str, int]]:
        """The unsigned operand(s) of x, in x's layout, each with its padding byte."""
        pad = self.zero_point + self.offset
        dtype = np.dtype(self.x_dtype)
        if self.split:
            wide = x if dtype == np.int32 else g.op("Cast", x, to=6)
            u = g.op("Add", wide, g.const(np.int32(self.offset)))
            parts = [(g.op("Cast", u, to=2), pad & 255),               # modular: the low byte
                     (g.op("Cast", g.op("Div", u, g.const(np.int32(256))), to=2), pad >> 8)]
        elif self.offset == 0:
            parts = [(x if dtype == np.uint8 else g.op("Cast", x, to=2), pad)]
        elif self.offset == 128 and dtype == np.int8:          # x + 128 = x XOR 0x80 as a byte
            parts = [(g.op("Cast", g.op("BitwiseXor", x, g.const(np.int8(-128))), to=2), pad)]
        else:
            wide = x if dtype == np.int32 else g.op("Cast", x, to=6)
            parts = [(g.op("Cast", g.op("Add", wide, g.const(np.int32(self.offset))), to=2),
                      pad)]
        return parts

    def _signed(self, g: Graph, x: str) -> list[tuple[str, int]]:
        """The int8 operand s = x + offset - 128 of x, in x's layout, with the padding byte:
        int8 data with offset 128 as it is (and ``flipped`` data); uint8 bytes XOR 0x80;
        else x + offset - 128 in int32, cast (it fits)."""
        pad = self.zero_point + self.offset
        dtype, int8 = np.dtype(self.x_dtype), proto.ELEM_TYPES[np.dtype(np.int8)]
        if self.flipped or (dtype == np.int8 and self.offset == 128):
            return [(x, pad)]
        if dtype == np.uint8 and self.offset == 0:
            return [(g.op("Cast", g.op("BitwiseXor", x, g.const(np.uint8(128))), to=int8),
                     pad)]
        wide = x if dtype == np.int32 else g.op("Cast", x, to=6)
        return [(g.op("Cast", g.op("Add", wide, g.const(np.int32(self.offset - 128))),
                      to=int8), pad)]

    def _im2col(self, g: Graph, u: str, pad: int) -> str:
        """cols (n, oh, ow, KH * KW * C) uint8 from channels-last u."""
        (kh, kw), (sh, sw) = self.attrs["kernel_size"], self.attrs["strides"]
        (ph, pw), (dh, dw) = self.attrs["padding"], self.attrs["dilation"]
        oh, ow = self.out_hw
        if ph or pw:
            u = g.op("Pad", u, g.const(np.array([0, ph, pw, 0, 0, ph, pw, 0], np.int64)),
                     g.const(np.uint8(pad)))
        taps = []
        for r in range(kh):
            for s in range(kw):
                start = [r * dh, s * dw]
                if (kh, kw, sh, sw) == (1, 1, 1, 1):
                    taps.append(u)
                    continue
                end = [start[0] + (oh - 1) * sh + 1, start[1] + (ow - 1) * sw + 1]
                taps.append(g.op("Slice", u, g.const(np.array(start, np.int64)),
                                 g.const(np.array(end, np.int64)),
                                 g.const(np.array([1, 2], np.int64)),
                                 g.const(np.array([sh, sw], np.int64))))
        return taps[0] if len(taps) == 1 else g.op("Concat", *taps, axis=3)


def _shifted(w: np.ndarray) -> np.ndarray:
    """w + 128 as uint8 (the operand of the u8u8 forms, with zero point 128)."""
    return (w.astype(np.int16) + 128).astype(np.uint8)


def _combine(g: Graph, accs: list[str]) -> str:
    """The accumulator; with split bytes, low + 256 * high."""
    if len(accs) == 1:
        return accs[0]
    return g.op("Add", accs[0], g.op("Mul", accs[1], g.const(np.int32(256))))


DIRECT_CHANNELS = 16
"""Convolutions of at most this many input channels (pointwise ones: twice as many) run as
ConvInteger (``direct``), NCHW: below, onnxruntime's own im2col beats ours (channels last,
a Concat copying C bytes per tap and output position: a 16-channel 3x3 at 80x80 0.17 ms on
int8 data against 0.27, 16 to 32 channels with stride 2 from 160x160 0.29 against 0.63),
and the numpy steps between run on NCHW tensors (a per-channel requantize on whole planes,
a channel split or concatenation on contiguous blocks: the YOLOv8n slice on 1 thread took
4.0-4.3 ms with 8 here, 3.6 with 32). A 3x3 of 32 channels at 40x40 takes ConvInteger 0.25
ms on bytes (0.15 on int8 data) and MatMulInteger 0.13-0.14 (YOLOv8n whole at 2 threads:
17.8 -> 17.3 ms with 16 here, ConvInteger on bytes), while a pointwise one of 32 needs no
im2col (the slice's at 80x80 stays NCHW). From 64 channels MatMulInteger's GEMM wins
(ResNet-18: 16.5 ms, 21.1 with 64 here)..."""
DIRECT_IMAGES, DIRECT_POSITIONS = 8, 64
"""...unless more than DIRECT_IMAGES images of fewer than DIRECT_POSITIONS output positions
each: ConvInteger multiplies image by image (about 1.9 us per image for the digits CNN's
8-channel 4x4 convolution), the im2col form's one MatMulInteger takes the whole batch (the
digits CNN at batch 32: 167 to 141 us a call; at batch 4 the loop is faster, 54 against 60)."""


def accumulator_fits(weight: np.ndarray, split: bool, form: str) -> bool:
    """Every partial sum of MatMulInteger stays in int32: 255 (65535 with ``split``) times the
    largest row sum of |W|; for ``u8u8`` also the sums of the shifted weights W + 128."""
    top = int(row_abs_sums(weight).max(initial=0)) * (65535 if split else 255)
    if form == "u8u8":
        top = max(top, 255 * 255 * (weight.size // max(weight.shape[0], 1)))
    return top <= INT31
