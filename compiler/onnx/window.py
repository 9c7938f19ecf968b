"""Spatial attributes of ONNX Conv / pool nodes: kernel, strides, pads (auto_pad resolved),
dilations; only 2-D (NCHW) windows."""
from __future__ import annotations

from dataclasses import dataclass

from vm.errors import InvalidError

from .graph import Node


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    begin: tuple[int, int]            # pads before (top, left)
    end: tuple[int, int]              # pads after (bottom, right)
    dilations: tuple[int, int]

    @property
    def symmetric(self) -> bool:
        return self.begin == self.end


def window(node: Node, shape: tuple, kernel=None) -> Window:
    """The resolved window of ``node`` applied to the NCHW ``shape``."""
    if len(shape) != 4:
        raise InvalidError(f"{node.describe()}: only 2-D (NCHW) inputs are supported, got {shape}")
    a = node.attrs
    k = tuple(a.get("kernel_shape", kernel or ()))
    if len(k) != 2:
        raise InvalidError(f"{node.describe()}: kernel_shape {k} is not 2-D")
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    pads = tuple(a.get("pads", (0, 0, 0, 0)))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(shape[2:], k, strides, dil, auto == "SAME_UPPER")
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto != "NOTSET":
        raise InvalidError(f"{node.describe()}: auto_pad {auto!r} is not supported")
    if a.get("ceil_mode", 0) and _out(shape, k, strides, pads, dil, True) != \
            _out(shape, k, strides, pads, dil, False):
        raise InvalidError(f"{node.describe()}: ceil_mode that changes the output shape is "
                           "not supported")
    return Window(k, strides, pads[:2], pads[2:], dil)


def _same_pads(size, k, strides, dil, upper: bool) -> tuple:
    begin, end = [], []
    for n, kk, s, d in zip(size, k, strides, dil):
        out = -(-n // s)
        total = max((out - 1) * s + (kk - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if upper else big)
        end.append(big if upper else small)
    return tuple(begin) + tuple(end)


def _out(shape, k, strides, pads, dil, ceil: bool) -> tuple:
    out = []
    for ax in range(2):
        span = shape[2 + ax] + pads[ax] + pads[ax + 2] - ((k[ax] - 1) * dil[ax] + 1)
        out.append((span + (strides[ax] - 1 if ceil else 0)) // strides[ax] + 1)
    return tuple(out)
