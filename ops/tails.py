"""The pointwise tails fused after a head instruction (vm/fusion.py), on exact integers.

:class:`Requant` is the exact composition of the pointwise ops that may follow a linear op
(cvm_right_shift, relu, clip, cvm_clip): ``q = clip(floor((z + add) / 2^shift), lo, hi)``;
:class:`Residual` is a residual add / sub (and its own Requant) run in a conv's epilogue.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _clamp(v: int | None, a: int | None, b: int | None, unbounded: int | None) -> int | None:
    """clip(v, a, b) for bounds that may be None (no bound); v None stands for the infinity on
    the side whose new bound is ``unbounded``."""
    if v is None:
        return unbounded
    if a is not None and v < a:
        v = a
    return b if b is not None and v > b else v


@dataclass(frozen=True)
class Requant:
    """q = clip(floor((z + add) / 2^shift), lo, hi) on exact integers (None: unbounded side).

    Built by composing ops in program order (:meth:`then_shift`, :meth:`then_clip`); a monotone
    map commutes with clipping (f(clip(z, a, b)) = clip(f(z), f(a), f(b))) and two shifts fold
    into one, so any chain of cvm_right_shift / relu / clip / cvm_clip is one Requant."""

    shift: int = 0
    add: int = 0
    lo: int | None = None
    hi: int | None = None

    def then_shift(self, s: int) -> "Requant":
        """Followed by floor((q + 2^(s-1)) / 2^s) (cvm_right_shift's rounding, s >= 1)."""
        f = lambda v: None if v is None else (v + (1 << (s - 1))) >> s
        return Requant(self.shift + s, self.add + ((1 << (s - 1)) << self.shift), f(self.lo),
                       f(self.hi))

    def then_clip(self, a: int | None, b: int | None) -> "Requant":
        """Followed by clip(q, a, b) (None: no bound on that side); a <= b."""
        return Requant(self.shift, self.add, _clamp(self.lo, a, b, a), _clamp(self.hi, a, b, b))

    def then(self, other: "Requant") -> "Requant":
        """Followed by ``other``: floor((floor((z + a) / 2^s) + a') / 2^s') is
        floor((z + a + a' 2^s) / 2^(s + s')), and the clips compose as in :meth:`then_clip`."""
        f = lambda v: None if v is None else (v + other.add) >> other.shift
        composed = Requant(self.shift + other.shift, self.add + (other.add << self.shift),
                           f(self.lo), f(self.hi))
        return composed.then_clip(other.lo, other.hi)

    def reach(self, z: int) -> int:
        """Largest |z + add| for |z| <= ``z``."""
        return z + abs(self.add)

    def span(self) -> int:
        """Largest |lo|, |hi| (0 when unbounded): a float clipping with them needs them exact,
        so every float licence of a tail covers the span too."""
        return max(abs(self.lo or 0), abs(self.hi or 0))

    def scalar(self, z: int) -> int:
        """The tail on one Python int (for tests and docs)."""
        q = (z + self.add) >> self.shift
        q = q if self.lo is None else max(q, self.lo)
        return q if self.hi is None else min(q, self.hi)

    def finish_float(self, y: np.ndarray, out: np.ndarray, view: np.ndarray | None = None,
                     residual: "Residual | None" = None, other=None, channels=None) -> None:
        """out <- clip(floor(y), lo, hi) for a float array holding (z + add) * 2^-shift
        exactly (the caller's licence keeps |z + add| below the float's exact limit; scaling
        by a power of two is exact). Clipping first is the same: lo and hi are integers.
        ``view`` (a view of ``y``): the part written to ``out``; ``y`` is rounded whole.
        ``residual``: then combined with ``other`` (the same part of the other operand).
        (``channels``: which output channels y holds, for epilogues that need it.)"""
        if self.lo is not None or self.hi is not None:
            np.clip(y, self.lo, self.hi, out=y)
        if self.shift and (self.lo is None or self.lo < 0 or residual is not None):
            np.floor(y, out=y)                       # else y is integral, or >= 0: truncation
        v = y if view is None else view
        if residual is not None:
            residual.apply(v, other, y)
        np.copyto(out, v, casting="unsafe")

    def finish_int(self, z: np.ndarray, out: np.ndarray) -> None:
        """out <- tail for an integer array holding z + add (arithmetic shifts floor)."""
        if self.shift:
            np.right_shift(z, self.shift, out=z)
        if self.lo is not None or self.hi is not None:
            np.clip(z, self.lo, self.hi, out=z)
        np.copyto(out, z, casting="unsafe")


@dataclass(frozen=True)
class Residual:
    """A residual connection fused after a linear op's tail: s = q + other (``op`` "add"),
    q - other or other - q ("sub", ``head_first`` or not), then ``tail`` on s; run in the
    accumulator's float on exact integers (vm.fusion.residual_licence checks that |s + add|
    and the tail's clip bounds stay below 2^24)."""

    op: str
    head_first: bool
    tail: Requant

    def apply(self, q: np.ndarray, other: np.ndarray, whole: np.ndarray) -> None:
        """q <- tail(q (+|-) other) in place; q holds integers, other is an integer array;
        ``whole``: a contiguous array q is a view of, on which the tail may run whole."""
        if self.op == "add":
            np.add(q, other, out=q)
        elif self.head_first:
            np.subtract(q, other, out=q)
        else:
            np.subtract(other, q, out=q)
        t = self.tail
        if t.add:
            np.add(whole, t.add, out=whole)
        if t.shift:
            np.multiply(whole, 2.0 ** -t.shift, out=whole)  # a power of two: exact
        if t.lo is not None or t.hi is not None:
            np.clip(whole, t.lo, t.hi, out=whole)
        if t.shift:
            np.floor(whole, out=whole)

    def scalar(self, q: int, other: int) -> int:
        """The same on Python ints (for tests and docs)."""
        s = q + other if self.op == "add" else (q - other if self.head_first else other - q)
        return self.tail.scalar(s)
