"""The generic conv2d kernel (any weight, constant or not): im2col in tiles, so that its
scratch is a constant tile plus amounts proportional to its inputs and output.

Blocks of output pixels (and of images) are gathered with one advanced index each: the
im2col block cols[n, c, r, s, f] = x[n, c, p(f) SH + r DH - PH, q(f) SW + s DW - PW], 0 where
the position falls outside the input, then multiplied by the weight in the licensed dtype
(every partial sum of the reduction is exact in it, ops/gemm.py). A block holds at most
TILE_ELEMENTS elements, or one output pixel of one image (C KH KW elements: no more than the
weight holds), so neither large padding, strides nor kernels make the scratch grow beyond it.
"""
from __future__ import annotations

from .base import size_of

TILE_ELEMENTS = 1 << 18
"""Elements of one im2col block."""
TILE_BYTES = 3 * 8 * TILE_ELEMENTS
"""A block's scratch: the gathered values, their cast to the GEMM dtype, the validity mask."""
PROPORTIONAL_WORDS = 4
"""int64 words per element of the inputs and the output: the data and weight in the GEMM
dtype, the GEMM's result and the int64 output the executor narrows."""


def out_size(size: int, pad: int, k: int, dil: int, stride: int) -> int:
    return (size + 2 * pad - (1 + (k - 1) * dil)) // stride + 1


def conv2d_scratch(in_shapes, out_shapes, attrs) -> int:
    """conv2d's scratch rule (ops/base.py ``scratch``): proportional words plus one tile."""
    elements = sum(size_of(s) for s in (*in_shapes, *out_shapes))
    return 8 * PROPORTIONAL_WORDS * elements + TILE_BYTES


def conv2d_tiled(xp, x, w, dt, strides, padding, dilation, groups: int):
    """sum over taps of W x X, exact in ``dt``, as an int64 (N, OC, OH, OW) array."""
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = strides, padding, dilation
    oh, ow = out_size(h, ph, kh, dh, sh), out_size(wd, pw, kw, dw, sw)
    k = cg * kh * kw
    wg = w.astype(dt).reshape(groups, oc // groups, k)
    y = xp.empty((n, oc, oh * ow), dtype=xp.int64)
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        cols = x.astype(dt).reshape(n, groups, cg, oh * ow)
        y[...] = xp.matmul(wg[None], cols).reshape(n, oc, oh * ow)
        return y.reshape(n, oc, oh, ow)
    per_image = c * kh * kw
    images = max(1, min(n, TILE_ELEMENTS // per_image))
    pixels = max(1, min(oh * ow, TILE_ELEMENTS // (images * per_image)))
    taps_r = xp.arange(kh).reshape(kh, 1, 1) * dh - ph
    taps_s = xp.arange(kw).reshape(1, kw, 1) * dw - pw
    for n0 in range(0, n, images):
        for f0 in range(0, oh * ow, pixels):
            f = xp.arange(f0, min(oh * ow, f0 + pixels))
            rows = (f // ow).reshape(1, 1, -1) * sh + taps_r            # (kh, 1, F)
            cols_ = (f % ow).reshape(1, 1, -1) * sw + taps_s            # (1, kw, F)
            valid = (rows >= 0) & (rows < h) & (cols_ >= 0) & (cols_ < wd)
            block = x[n0:n0 + images][:, :, xp.clip(rows, 0, h - 1), xp.clip(cols_, 0, wd - 1)]
            block = block.astype(dt) * valid                           # (nb, c, kh, kw, F)
            part = xp.matmul(wg[None], block.reshape(block.shape[0], groups, k, -1))
            y[n0:n0 + images, :, f0:f0 + len(f)] = part.reshape(block.shape[0], oc, -1)
    return y.reshape(n, oc, oh, ow)
