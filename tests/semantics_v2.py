"""A test semantics version: version 1 with cvm_right_shift rounding half *down* (ties toward
-inf: floor((x + 2^(s-1) - 1) / 2^s)) instead of half up. It makes the side-by-side mechanism
of ops/semantics.py real: a v1 and a v2 model differ exactly at the ties."""
from __future__ import annotations

import contextlib
from dataclasses import replace

import ops
from ops.base import Ref, bound, clip_ints, wide
from ops.z3util import pointwise

VERSION = 2


def _scalar(args, a):
    s, r = a["shift_bit"], bound(a["precision"])
    return Ref(args[0].shape, [min(max((v + 2 ** (s - 1) - 1) // 2 ** s, -r), r)
                               for v in args[0].data])


def _kernel(xp, x, *, precision, shift_bit):
    t = xp.right_shift(wide(xp, x) + ((1 << (shift_bit - 1)) - 1), shift_bit)
    return clip_ints(xp, t, -bound(precision), bound(precision))


def _z3(zx, v, a):
    s, r = a["shift_bit"], bound(a["precision"])
    return zx.clip(zx.shr(v + ((1 << (s - 1)) - 1), s), -r, r)


def right_shift_half_down() -> ops.OpDef:
    return replace(ops.get("cvm_right_shift", 1), scalar=_scalar, kernel=_kernel,
                   z3=pointwise(_z3), overrides={},
                   doc="""y = clip(floor((x + 2^(s-1) - 1) / 2^s), -R(p), R(p)): round half down
                   (toward -inf; s=1: 3 -> 1, -3 -> -2). Test semantics version 2 only.""")


@contextlib.contextmanager
def version_2():
    """Semantics version 2 declared for the duration of the block."""
    ops.semantics.declare(VERSION, {"cvm_right_shift": right_shift_half_down()})
    try:
        yield VERSION
    finally:
        ops.semantics.forget(VERSION)
