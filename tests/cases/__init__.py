"""The op test table: one hypothesis strategy per registered op.

Each group module defines ``CASES = {op_name: strategy}``; a strategy draws an :class:`OpCase`.
The law suite (tests/test_op_laws.py) runs every case through the kernel (numpy) and the scalar
reference and checks the laws. Adding an op = one OpDef + one line in a CASES table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st

from ops.base import bound


@dataclass
class Input:
    """One input: shape, declared precision, and optionally fixed values (flat, C order)."""
    shape: tuple
    precision: int
    values: list | None = None


@dataclass
class OpCase:
    inputs: list
    attrs: dict = field(default_factory=dict)


@st.composite
def values_for(draw, shape, precision):
    """Flat values inside the precision, with the edge values +-R(p) and 0 over-represented."""
    r = bound(precision)
    n = 1
    for d in shape:
        n *= d
    edge = st.sampled_from([-r, r, 0, min(1, r), -min(1, r)])
    return draw(st.lists(st.one_of(st.integers(-r, r), edge), min_size=n, max_size=n))


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=4):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


precisions = st.integers(1, 16)


def all_cases() -> dict[str, Any]:
    from . import nn, elemwise, layout, quant, reduce_vision, lut, kernels, post
    table: dict[str, Any] = {}
    for module in (nn, elemwise, layout, reduce_vision, quant, lut, kernels, post):
        for name, strategy in module.CASES.items():
            assert name not in table, f"two cases for {name}"
            table[name] = strategy
    return table
