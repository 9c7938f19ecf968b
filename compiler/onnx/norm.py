"""The LayerNorm pattern: ReduceMean, Sub, (Transpose,) Pow, ReduceMean, (Add eps,) Sqrt, Div,
on a quantized tensor, imported as integer row statistics (ops/norm.py).

onnxruntime's quantizer leaves these ops float; quantize_static puts a QuantizeLinear after
the variance (ReduceMean of the squares) and after the Div, and quantizes the Add of eps, so
a model holds two float islands that read whole rows (no lookup table can hold them):

* x -> ReduceMean -> Sub -> Pow 2 -> ReduceMean -> QuantizeLinear: ``qvariance``;
* (x, w) -> Sub(x, mean) / Sqrt(w) -> QuantizeLinear, w the quantized variance + eps:
  ``qnorm`` with an input u;
* or, when the Add of eps is float too, x -> ... -> Add eps -> Sqrt -> Div -> QuantizeLinear:
  ``qnorm`` alone (U = V + eps, rounded to the variance's integer scale).

Each float intermediate is a :class:`Stat` until the QuantizeLinear that ends it: its kind,
the quantized tensor x it reads, the reduced axes in x's layout and the Transposes applied
since (``perm``: axis i of the value is axis perm[i] of x). Every statistic is computed in
x's layout and transposed once at the end. onnxruntime computes them in float32; detvm in
exact integers with one named rounding each (docs/onnx.md gives the measured agreement).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from ops.base import bitlen, bound
from vm.errors import InvalidError

from .fixed import floor_log2, round_half_even
from .graph import Node
from .islands import resolve
from .lower import Lowering, constant
from .quantops import materialize, one_zero, qparams, requantize, type_range
from .values import DESCRIPTIONS, Acc, Const, Int, Island, Q, QConst

KINDS = ("mean", "centered", "squared", "variance", "root", "normalized")


@dataclass(frozen=True)
class Stat:
    """A float statistic of the rows of ``x`` (see the module doc)."""
    kind: str
    x: Q
    axes: tuple[int, ...]
    perm: tuple[int, ...] | None = None
    eps: float = 0.0
    u: Q | None = None                # root / normalized: the quantized radicand, if any
    keepdims: bool = True


DESCRIPTIONS[Stat] = "a float row statistic (the LayerNorm pattern) before its QuantizeLinear"


# ---------------------------------------------------------------------------------------------
# Layout helpers
# ---------------------------------------------------------------------------------------------

def _perm(s: Stat, ndim: int) -> tuple[int, ...]:
    return s.perm or tuple(range(ndim))


def _to_x_axes(s: Stat, axes, ndim: int) -> tuple[int, ...]:
    """Axes of the value (its current layout) as axes of x."""
    p = _perm(s, ndim)
    return tuple(sorted(p[a % ndim] for a in axes))


def _transposed(ctx: Lowering, name: str, perm, out: str) -> str:
    if perm is None or list(perm) == list(range(len(perm))):
        return name
    return ctx.op("transpose", name, out=out, axes=list(perm))


def _reduce_axes(ctx: Lowering, node: Node, args, ndim: int):
    axes = node.attrs.get("axes")
    if len(args) > 1 and args[1] is not None:
        axes = constant(args[1], node, "axes").tolist()
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            raise InvalidError(f"{node.describe()}: noop_with_empty_axes is not supported")
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


# ---------------------------------------------------------------------------------------------
# Growing the pattern
# ---------------------------------------------------------------------------------------------

def reduce_mean(ctx: Lowering, node: Node, args):
    v = args[0]
    keep = bool(node.attrs.get("keepdims", 1))
    if isinstance(v, Q) and len(v.scale) == 1:
        x = materialize(ctx, v, node)
        return Stat("mean", x, _reduce_axes(ctx, node, args, len(ctx.shape(x.name))),
                    keepdims=keep)
    if isinstance(v, Stat) and v.kind == "squared":
        if not keep:
            raise InvalidError(f"{node.describe()}: keepdims=0 is not supported in the "
                               "LayerNorm pattern")
        ndim = len(ctx.shape(v.x.name))
        if _to_x_axes(v, _reduce_axes(ctx, node, args, ndim), ndim) != v.axes:
            raise InvalidError(f"{node.describe()}: the variance is taken over other axes "
                               "than the mean")
        return replace(v, kind="variance")
    raise InvalidError(f"{node.describe()}: ReduceMean needs a quantized per-tensor input "
                       "(or the squares of one centred by its mean)")


def _same_rows(a, b: Stat) -> bool:
    return isinstance(a, Q) and a.name == b.x.name and b.kind == "mean" and b.perm is None \
        and b.keepdims


def sub(ctx, node, args):
    a, b = args
    if isinstance(b, Stat) and _same_rows(a, b):
        return replace(b, kind="centered")
    return None


def transpose(ctx, node, args):
    v = args[0]
    if not isinstance(v, Stat) or v.kind not in ("centered", "squared"):
        return None
    ndim = len(ctx.shape(v.x.name))
    perm = node.attrs.get("perm", list(range(ndim - 1, -1, -1)))
    old = _perm(v, ndim)
    return replace(v, perm=tuple(old[p] for p in perm))


def pow_(ctx, node, args):
    v, e = args
    if isinstance(v, Stat) and v.kind == "centered" and isinstance(e, Const) \
            and np.all(np.asarray(e.value) == 2):
        return replace(v, kind="squared")
    return None


def mul(ctx, node, args):
    a, b = args
    if isinstance(a, Stat) and a == b and a.kind == "centered":
        return replace(a, kind="squared")
    return None


def add(ctx, node, args):
    for v, c in (args, args[::-1]):
        if isinstance(v, Stat) and v.kind == "variance" and isinstance(c, (Const, QConst)):
            from .quantops import real_value
            eps = np.asarray(real_value(c)).reshape(-1)
            if eps.size == 1 or np.all(eps == eps[0]):
                return replace(v, eps=v.eps + float(eps[0]))
    return None


def sqrt(ctx, node, args):
    v = args[0]
    if isinstance(v, Stat) and v.kind == "variance":
        return replace(v, kind="root")
    return None


def div(ctx, node, args):
    a, b = args
    if not (isinstance(a, Stat) and a.kind == "centered"):
        return None
    if isinstance(b, Stat) and b.kind == "root" and b.x.name == a.x.name and b.axes == a.axes:
        return replace(b, kind="normalized", perm=a.perm)
    u = _sqrt_of_quantized(ctx, b)
    if u is None:
        raise InvalidError(f"{node.describe()}: the centred rows are divided by something "
                           "other than a square root of their variance")
    return replace(a, kind="normalized", u=u)


def _sqrt_of_quantized(ctx: Lowering, v) -> Q | None:
    """The quantized tensor w of an island that is exactly Sqrt(DequantizeLinear(w))."""
    if not isinstance(v, Island) or v.moves or v.concat is not None or len(v.sources) != 1:
        return None
    name, q = v.sources[0]
    producer = next((n for n in ctx.graph.nodes if v.tensor in n.outputs), None)
    if producer is None or producer.op_type != "Sqrt" or producer.inputs[0] != name:
        return None
    return q


# ---------------------------------------------------------------------------------------------
# Ending it: the QuantizeLinear
# ---------------------------------------------------------------------------------------------

def fixed_point(ratio: Fraction, bits: int, node: Node) -> tuple[int, int]:
    """(m, s), m = round_half_even(ratio * 2^s) of ``bits`` bits, 0 <= s <= 62."""
    s = bits - 1 - floor_log2(ratio)
    if not 0 <= s <= 62:
        raise InvalidError(f"{node.describe()}: scale ratio {float(ratio):.3g} is out of range")
    return round_half_even(ratio * 2 ** s), s


def quantize(ctx: Lowering, node: Node, args):
    v = args[0]
    scale, zero, dtype = qparams(node, args, 1)
    if scale.size != 1 or len(set(zero.tolist())) != 1:
        raise InvalidError(f"{node.describe()}: a per-channel quantization of a row statistic")
    lo, hi = type_range(dtype, node)
    s_y, z_y = Fraction(float(scale[0])), int(zero[0])
    if v.kind == "mean":
        return requantize(ctx, _mean_acc(ctx, node, v), scale, z_y, (lo, hi), node)
    if v.kind == "variance":
        name = _variance(ctx, node, v, s_y, z_y, lo, hi)
    elif v.kind == "normalized":
        name = _normalized(ctx, node, v, s_y, z_y, lo, hi)
    else:
        raise InvalidError(f"{node.describe()}: quantizing a {v.kind} row statistic is not "
                           "supported")
    return Int(name, lo, hi)


def _rows(ctx: Lowering, v: Stat) -> tuple[int, int]:
    """(D, R): the row length and the largest |x|."""
    shape = ctx.shape(v.x.name)
    return math.prod(shape[a] for a in v.axes), bound(ctx.b.tensor(v.x.name).precision)


def _mean_acc(ctx: Lowering, node: Node, v: Stat) -> Acc:
    """ReduceMean of a quantized tensor, quantized: the exact sum of x - zero point, at scale
    s_x / D (one rounding, in the requantize)."""
    d, _ = _rows(ctx, v)
    total = ctx.op("sum", v.x.name, out=node.outputs[0] + "#sum", axis=list(v.axes),
                   keepdims=v.keepdims)
    zero = one_zero(v.x, node)
    if zero:
        total = ctx.op("broadcast_sub", total, ctx.const(np.array([d * zero]),
                                                        node.outputs[0] + "#dz"),
                       out=node.outputs[0] + "#centred")
    return Acc(total, (Fraction(v.x.scale[0]) / d,))


def _variance(ctx, node, v: Stat, s_y: Fraction, z_y: int, lo: int, hi: int) -> str:
    if v.eps:
        raise InvalidError(f"{node.describe()}: quantizing variance + eps (the Add before the "
                           "Sqrt) is not supported; the Sqrt of it is")
    d, r = _rows(ctx, v)
    ratio = Fraction(v.x.scale[0]) ** 2 / (d * d * s_y)
    m, s = fixed_point(ratio, min(31, 61 - bitlen(d * d * r * r)), node)
    y = ctx.op("qvariance", v.x.name, out=node.outputs[0] + "#rows", axes=list(v.axes),
               multiplier=m, shift=s, zero_point=z_y, qmin=lo, qmax=hi)
    return _transposed(ctx, y, v.perm, node.outputs[0])


def _normalized(ctx, node, v: Stat, s_y: Fraction, z_y: int, lo: int, hi: int) -> str:
    d, r = _rows(ctx, v)
    s_x = Fraction(v.x.scale[0])
    inputs, extra = [v.x.name], {}
    if v.u is not None:
        u = _transposed(ctx, v.u.name, _inverse(_perm(v, len(ctx.shape(v.x.name)))),
                        node.outputs[0] + "#u")
        inputs.append(u)
        extra["zero_point_u"] = one_zero(v.u, node)
        ratio = s_x ** 2 / (d * d * s_y ** 2 * Fraction(v.u.scale[0]))
    else:
        extra["eps"] = round_half_even(Fraction(v.eps) * d * d / s_x ** 2)
        ratio = 1 / s_y ** 2
    bits = 59 - bitlen((2 * d * r) ** 2)
    p, s = fixed_point(ratio, bits, node)
    y = ctx.op("qnorm", *inputs, out=node.outputs[0] + "#rows", axes=list(v.axes),
               numerator=p, shift=s, zero_point=z_y, qmin=lo, qmax=hi, **extra)
    return _transposed(ctx, y, v.perm, node.outputs[0])


def _inverse(perm) -> list[int]:
    out = [0] * len(perm)
    for k, p in enumerate(perm):
        out[p] = k
    return out


# ---------------------------------------------------------------------------------------------
# Handlers: the pattern first, else the handler they wrap
# ---------------------------------------------------------------------------------------------

GROW = {"Sub": sub, "Transpose": transpose, "Pow": pow_, "Mul": mul, "Add": add, "Sqrt": sqrt,
        "Div": div}


def handlers(existing: dict) -> dict:
    """Wrapped handlers of the ops the pattern uses, and ReduceMean."""
    out = {("", "ReduceMean"): _wrap(None, reduce_mean)}
    for op, grow in GROW.items():
        out[("", op)] = _wrap(existing.get(("", op)), grow)
    out[("", "QuantizeLinear")] = _wrap(existing[("", "QuantizeLinear")], None, quantize)
    return out


def _wrap(original, grow, end=None):
    def handler(ctx: Lowering, node: Node, args):
        if any(isinstance(a, Stat) for a in args):
            if end is not None:
                return end(ctx, node, args)
            result = grow(ctx, node, args)
            if result is not None:
                return result
            raise InvalidError(f"{node.describe()}: this op on a float row statistic (the "
                               "LayerNorm pattern: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, "
                               "Div) is not supported")
        if grow is reduce_mean:
            return reduce_mean(ctx, node, args)
        if original is None:
            raise InvalidError(f"{node.describe()}: not supported here")
        if not getattr(original, "islands", False):
            args = [resolve(ctx, node, a) for a in args]
        return original(ctx, node, args)
    handler.islands = True
    return handler
