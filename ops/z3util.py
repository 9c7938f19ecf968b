"""Helpers shared by the ops' ``z3`` rules. Nothing here imports z3: a rule receives its
arithmetic namespace ``zx`` (verify/domains.py) as an argument, like a kernel receives ``xp``.

Symbolic tensors are :class:`ops.base.Ref` whose flat ``data`` are Z3 terms.
"""
from __future__ import annotations

from functools import reduce
from typing import Callable, Sequence

from .base import Ref, indices


def build(shape: Sequence[int], fn: Callable[[tuple], object]) -> Ref:
    """A symbolic tensor whose term at every multi-index ``i`` is ``fn(i)`` (C order)."""
    shape = tuple(shape)
    return Ref(shape, [fn(i) for i in indices(shape)])


def pointwise(fn: Callable) -> Callable:
    """The rule of a one-input, same-shape op: ``fn(zx, term, attrs)`` per element."""
    def rule(zx, x, gemm=None, **attrs):
        return Ref(x.shape, [fn(zx, v, attrs) for v in x.data])
    return rule


def gather(scalar: Callable) -> Callable:
    """The rule of a pure data-movement op from its scalar reference.

    The reference only moves values, so running it on *position tags* (input k's element j is
    tagged with a unique int) yields, for every output element, which input element it copies;
    the rule then copies that element's term. The encoding is thus exactly the reference's
    index map: ``out[i] = in[src(i)]``.
    """
    def rule(zx, *args, gemm=None, **attrs):
        table, tagged = [], []
        for r in args:
            tagged.append(Ref(r.shape, list(range(len(table), len(table) + len(r.data)))))
            table.extend(r.data)
        out = scalar(tagged, attrs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        moved = [Ref(o.shape, [table[t] for t in o.data]) for o in outs]
        return moved[0] if not isinstance(out, (list, tuple)) else tuple(moved)
    return rule


def fold_max(zx, terms):
    """The maximum of a non-empty list of terms."""
    return reduce(zx.max, terms)
