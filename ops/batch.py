"""Batch rules (``OpDef.batch``, see ops/base.py ``BATCH_KINDS``) of the ops whose attributes
may address axis 0: each accepts a batched input only when the attributes leave axis 0 alone,
and otherwise says why (OpError)."""
from __future__ import annotations

from .base import require


def batch_axis(axis: int, rank: int) -> bool:
    """Whether ``axis`` (negative counts from the end) is axis 0 of a ``rank``-D tensor."""
    return axis == 0 or axis == -rank


def along(attr: str, kind: str = "rows", rank_shift: int = 0):
    """The rule of an op working along the axis in int attribute ``attr``: batch-parallel
    unless that axis is axis 0 (``rank_shift``: the axis counts in a rank that many larger,
    e.g. expand_dims' insertion point)."""
    def rule(attrs, ranks, limit):
        axis = attrs[attr]
        require(axis is not None, f"{attr}=none works on the flattened tensor, batch included")
        require(not batch_axis(axis, ranks[0] + rank_shift),
                f"{attr} {axis} is the batch axis (axis 0)")
        return kind
    return rule


def outside(attr: str, kind: str = "rows", empty_means_all: bool = True):
    """The rule of an op working on the axes listed in ints attribute ``attr``: batch-parallel
    unless axis 0 is among them (an empty list means every axis when ``empty_means_all``)."""
    def rule(attrs, ranks, limit):
        axes = attrs[attr]
        require(axes or not empty_means_all,
                f"{attr}=() means every axis, the batch axis (axis 0) included")
        require(not any(batch_axis(a, ranks[0]) for a in axes),
                f"{attr} {tuple(axes)} includes the batch axis (axis 0)")
        return kind
    return rule


def transpose_rule(attrs, ranks, limit):
    axes = attrs["axes"]
    if not axes:
        require(ranks[0] == 1, "axes=() reverses the axes and moves the batch axis (axis 0)")
    else:
        require(batch_axis(axes[0], ranks[0]), f"axes {tuple(axes)} move the batch axis "
                "(axis 0)")
    return "rows"


def tile_rule(attrs, ranks, limit):
    reps = attrs["reps"]
    require(len(reps) <= ranks[0] and (len(reps) < ranks[0] or reps[0] == 1),
            f"reps {tuple(reps)} repeat the batch axis (axis 0)")
    return "rows"


def pad_rule(attrs, ranks, limit):
    pads, rank = attrs["pads"], ranks[0]
    require(len(pads) != 2 * rank or (pads[0] == 0 and pads[rank] == 0),
            f"pads {tuple(pads)} pad the batch axis (axis 0)")
    return "rows"


def slice_rule(attrs, ranks, limit):
    """strided_slice: every row, in order (begin 0 or <= -max, end the symbol or >= max,
    stride 1), and the symbol only there."""
    begin, end, stride = attrs["begin"], attrs["end"], attrs["stride"]
    for values in (begin, end, stride):
        require(all(not isinstance(v, str) for v in values[1:]),
                "the batch symbol may only be axis 0's end")
    require(not begin or begin[0] == 0 or (isinstance(begin[0], int) and begin[0] <= -limit),
            f"begin {begin[0] if begin else 0} on the batch axis does not start at row 0")
    require(not end or isinstance(end[0], str) or end[0] >= limit,
            f"end {end[0] if end else 0} on the batch axis stops before the last row "
            f"(write the symbol, or a value >= its maximum {limit})")
    require(not stride or stride[0] == 1, f"stride {stride[0] if stride else 1} on the batch "
            "axis skips or reverses rows")
    return "rows"


def requantize_rule(attrs, ranks, limit):
    require(len(attrs["multiplier"]) == 1 or not batch_axis(attrs["axis"], ranks[0]),
            "per-channel multipliers along the batch axis (axis 0)")
    return "map"
