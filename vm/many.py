"""``Model.run_many``: several input sets per call, as batches along the model's symbols.

Every item is checked as ``Model.run`` checks it, before anything runs. Consecutive items whose
unbatched inputs are equal are concatenated along their batch axes into runs of at most the
symbols' maxima; the outputs are split back, row ranges per item. Since every instruction of a
model with symbols is batch-parallel (vm/symbolic.py), each item's outputs are the bytes a
``run`` of that item alone gives.
"""
from __future__ import annotations

import numpy as np

from .errors import TrapError


def run_many(model, items: list, float_io: bool = False) -> list[dict]:
    if not model.symbols or len(items) <= 1:
        return [model.run(item, float_io=float_io) for item in items]
    if float_io:
        from .floatio import dequantize_outputs, quantize_inputs
        items = [quantize_inputs(model, item) for item in items]
    checked = []
    for k, item in enumerate(items):
        try:
            checked.append(model._check_inputs(item))
        except TrapError as e:
            raise TrapError(f"item {k}: {e.message}") from None
    results: list[dict] = []
    for group in _groups(model, checked):
        results += _run_group(model, group)
    if float_io:
        return [dequantize_outputs(model, r) for r in results]
    return results


def _groups(model, checked: list) -> list[list]:
    """Consecutive items sharing their unbatched inputs, cut where a symbol would exceed its
    maximum."""
    shared = [k for k, t in enumerate(model.inputs) if not t.symbol]
    groups: list[list] = []
    total: dict[str, int] = {}
    for feeds, dims in checked:
        current = groups[-1] if groups else None
        fits = current is not None and all(total[s] + n <= model.symbols[s]
                                           for s, n in dims.items())
        same = current is not None and all(
            np.array_equal(feeds[k], current[0][0][k]) for k in shared)
        if not (fits and same):
            groups.append([])
            total = {s: 0 for s in model.symbols}
        groups[-1].append((feeds, dims))
        for s, n in dims.items():
            total[s] += n
    return groups


def _run_group(model, group: list) -> list[dict]:
    if len(group) == 1:
        return [model._run_checked(*group[0])]
    feeds = [np.concatenate([f[k] for f, _ in group]) if t.symbol else group[0][0][k]
             for k, t in enumerate(model.inputs)]
    dims = {s: sum(d[s] for _, d in group) for s in group[0][1]}
    joined = model._run_checked(feeds, dims)
    outs = []
    start = {s: 0 for s in model.symbols}
    for _, dims in group:
        item = {}
        for t in model.outputs:
            value = joined[t.name]
            if t.symbol:
                lo = start[t.symbol]
                item[t.name] = value[lo:lo + dims[t.symbol]].copy()
            else:
                item[t.name] = value.copy()
        for s, n in dims.items():
            start[s] += n
        outs.append(item)
    return outs

