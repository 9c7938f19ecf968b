"""Detection post-processing: get_valid_counts, non_max_suppression (CVM formal semantics).

Rows are boxes: for NMS a row is (id, score, x1, y1, x2, y2), corner format. Both ops fill the
unused tail rows with -1, so their box output has precision max(P0, 2) (detvm fix: with P0 = 1,
R(1) = 0 and CVM's -1 fill did not fit the declared precision).
"""
from __future__ import annotations

import numpy as np

from .base import Attr, OpDef, Ref, number_precision, require, wide
from .registry import register

INT32_MAX = (1 << 31) - 1
INT32 = dict(lo=-(1 << 31), hi=INT32_MAX)


def _to_host(a):
    """A host numpy view of ``a`` (cupy arrays have ``.get()``; numpy arrays pass through)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _rows(t: Ref, b: int) -> list[list[int]]:
    """The rows of batch ``b`` of a (B, N, K) reference tensor."""
    _, n, k = t.shape
    base = b * n * k
    return [t.data[base + r * k: base + (r + 1) * k] for r in range(n)]


def _fill(rows: list[list[int]], n: int, k: int) -> list[int]:
    """``rows`` flattened, then -1 up to ``n`` rows of ``k`` values."""
    return [v for r in rows for v in r] + [-1] * ((n - len(rows)) * k)


# ---------------------------------------------------------------------------------------------
# get_valid_counts
# ---------------------------------------------------------------------------------------------

def _gvc_shape(shapes, a):
    x = shapes[0]
    require(len(x) == 3, f"get_valid_counts data must be 3-D (B, N, K), got {x}")
    require(2 <= x[2] < 32, f"get_valid_counts needs 2 <= K < 32, got K = {x[2]}")
    return [(x[0],), tuple(x)]


def _gvc_precision(precs, shapes, a):
    _, n, k = shapes[0]
    return [number_precision(n * k), max(precs[0], 2)]


def _gvc_scalar(args, a):
    x = args[0]
    batches, n, k = x.shape
    counts, out = [], []
    for b in range(batches):
        valid = [r for r in _rows(x, b) if r[1] > a["score_threshold"]]
        counts.append(len(valid))
        out += _fill(valid, n, k)
    return [Ref((batches,), counts), Ref(x.shape, out)]


def _gvc_kernel(xp, x, *, score_threshold):
    """Scatter every valid row to its rank among the valid rows of its batch (cumsum - 1)."""
    xw = wide(xp, x)
    mask = xw[:, :, 1] > score_threshold
    rank = xp.cumsum(mask.astype(xp.int64), axis=1)
    y = xp.full(xw.shape, -1, dtype=xp.int64)
    b_idx, n_idx = xp.nonzero(mask)
    y[b_idx, rank[b_idx, n_idx] - 1] = xw[b_idx, n_idx]
    return xp.sum(mask.astype(xp.int64), axis=1), y


def _landing(zx, hits, payload, slots: int):
    """Compaction: entry r with ``hits[r]`` lands at slot #hits before it; per slot, the
    fields of the entry landing there, else -1 (shared by get_valid_counts and NMS)."""
    before = [zx.sum([zx.flag(h) for h in hits[:r]]) for r in range(len(hits))]
    out = []
    for slot in range(slots):
        for e in range(len(payload[0]) if payload else 0):
            term = zx.num(-1)
            for r in range(len(hits) - 1, slot - 1, -1):     # entry r lands at a slot <= r
                term = zx.ite(zx.And(hits[r], before[r] == slot), payload[r][e], term)
            out.append(term)
    return out, before


def _gvc_z3(zx, x, *, score_threshold):
    batches, n, k = x.shape
    counts, out = [], []
    for b in range(batches):
        rows = _rows(x, b)
        valid = [row[1] > score_threshold for row in rows]
        counts.append(zx.sum([zx.flag(v) for v in valid]))
        out += _landing(zx, valid, rows, n)[0]
    return Ref((batches,), counts), Ref(x.shape, out)


register(OpDef(
    name="get_valid_counts", opcode=60,
    doc="""Per batch b of x (B, N, K), 2 <= K < 32: the rows with x[b,n,1] > score_threshold,
    in their original order, then -1 rows up to N. Outputs valid_count (B,) = the number of such
    rows, and y (B, N, K). Precisions [GetNumberPrecision(N*K), max(P0, 2)] (detvm fix: the -1
    fill needs p >= 2). Gas weight 1 (CVM's "get_valid_count" gas typo never matched).""",
    inputs=("x",), outputs=("valid_count", "y"),
    attrs=(Attr("score_threshold", "int", default=0, lo=-INT32_MAX, hi=INT32_MAX),),
    shape=_gvc_shape, precision=_gvc_precision, cost=lambda shapes, a: 1,
    scalar=_gvc_scalar, kernel=_gvc_kernel, z3=_gvc_z3,
    batch="rows",
))


# ---------------------------------------------------------------------------------------------
# non_max_suppression
# ---------------------------------------------------------------------------------------------

def iou_percent(a, b) -> int:
    """CVM's integer IoU of corner boxes a, b = (x1, y1, x2, y2), in percent, exact integers.

    S = area_a + area_b with area = (x2 - x1) * (y2 - y1) (possibly negative); S <= 0 -> 0.
    I = max(0, ow) * max(0, oh), ow = min(x2) - max(x1), oh likewise; U = S - I; U <= 0 -> 0;
    else floor(100 * I / U). CVM computes it in int64 and divides U by 100 instead when 100 * I
    would overflow; for every input where CVM's int64 arithmetic does not overflow (coordinates
    of precision <= 30, CVM's unregistered check) that is the same value.
    """
    s = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    if s <= 0:
        return 0
    ow = min(a[2], b[2]) - max(a[0], b[0])
    oh = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, ow) * max(0, oh)
    union = s - inter
    if union <= 0:
        return 0
    return 100 * inter // union


def _nms_limits(t: int, a) -> tuple[int, int]:
    """(p_max, n_max): how many ranked rows are scanned, how many may be kept."""
    p_max = t if a["top_k"] < 0 else min(t, a["top_k"])
    n_max = t if a["max_output_size"] < 0 else min(t, a["max_output_size"])
    return p_max, n_max


def _nms_shape(shapes, a):
    data, count = shapes
    require(len(data) == 3 and data[2] == 6,
            f"non_max_suppression data must be (B, N, 6), got {data}")
    require(tuple(count) == (data[0],),
            f"non_max_suppression valid_count shape {tuple(count)} != ({data[0]},)")
    require(not a["return_indices"], "non_max_suppression supports only return_indices=False")
    require(a["invalid_to_bottom"], "non_max_suppression supports only invalid_to_bottom=True")
    return tuple(data)


def _nms_scalar(args, a):
    data, count = args
    batches, n, k = data.shape
    out = []
    for b in range(batches):
        t = min(max(count.data[b], 0), n)
        ranked = sorted(_rows(data, b)[:t], key=lambda r: -r[1])  # Python's sort is stable
        p_max, n_max = _nms_limits(t, a)
        kept: list[list[int]] = []
        for row in ranked[:p_max]:
            if len(kept) >= n_max:
                break
            if row[0] < 0:
                continue
            if not any((a["force_suppress"] or q[0] == row[0])
                       and iou_percent(q[2:6], row[2:6]) >= a["iou_threshold"] for q in kept):
                kept.append(row)
        out += _fill(kept, n, k)
    return Ref(data.shape, out)


# Coordinates below 2**26 keep every int64 intermediate of _pair_hits below 2**63:
# |area| < 2**54, |S|, |U| < 1.5 * 2**55, 100 * I < 2**61, 101 * U < 2**63.
_INT64_SAFE = 1 << 26
NMS_BLOCK = 256
"""Ranked rows resolved together: their pairwise overlaps are one (B, B) array."""
PAIR_BUDGET = 1 << 14
"""Box pairs per overlap array: the kernel's scratch is O(PAIR_BUDGET), whatever N is."""


def _pair_hits(a, b, threshold: int):
    """(len(a), len(b)) booleans: iou_percent(a[i], b[j]) >= threshold, for boxes (m, 5) =
    (x1, y1, x2, y2, area) as int64 (every coordinate below 2^26) or Python ints (object
    arrays): exact either way.

    Division-free: for U > 0, floor(100 I / U) >= t <=> 100 I >= t U. The IoU never exceeds 100
    (I > 0 needs both boxes proper, so I <= min(area) <= U), hence t is capped at 101 without
    changing the answer, which keeps t U inside int64. I = 0 never reaches t >= 1."""
    ow = np.minimum(a[:, None, 2], b[None, :, 2])
    ow -= np.maximum(a[:, None, 0], b[None, :, 0])
    oh = np.minimum(a[:, None, 3], b[None, :, 3])
    oh -= np.maximum(a[:, None, 1], b[None, :, 1])
    hit = (ow > 0) & (oh > 0)
    if not hit.any():
        return hit
    s = a[:, None, 4] + b[None, :, 4]
    inter = np.maximum(ow, 0, out=ow)
    inter *= np.maximum(oh, 0, out=oh)
    union = s - inter
    hit &= (s > 0) & (union > 0)
    inter *= 100
    union *= min(threshold, 101)
    hit &= inter >= union
    return hit


def _with_areas(boxes):
    """(N, 5): the corner boxes (N, 4) and their areas (x2 - x1) * (y2 - y1), maybe <= 0."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.concatenate([boxes, area[:, None]], axis=1)


def _suppressed(boxes, ids, kept, block, a):
    """For each row of ``block``: whether some row of ``kept`` (same id unless
    force_suppress) overlaps it at the threshold; in chunks of PAIR_BUDGET pairs."""
    out = np.zeros(len(block), dtype=bool)
    step = max(1, PAIR_BUDGET // max(1, len(block)))
    for k0 in range(0, len(kept), step):
        rivals = kept[k0:k0 + step]
        hits = _pair_hits(boxes[rivals], boxes[block], a["iou_threshold"])
        if not a["force_suppress"]:
            hits &= ids[rivals][:, None] == ids[block][None, :]
        out |= hits.any(axis=0)
    return out


def _nms_batch(rows, count: int, a) -> np.ndarray:
    """Indices (into ``rows``, host int64 (N, 6)) of the kept rows, in output order.

    The greedy scan, NMS_BLOCK ranked rows at a time: a block's rows suppressed by an already
    kept row are found in one vectorized pass, then the block is resolved in rank order on its
    own (B, B) overlap array. At most N (N + B) / 2 pair tests per batch (the ``work`` gas)."""
    t = min(max(count, 0), rows.shape[0])
    p_max, n_max = _nms_limits(t, a)
    ranked = np.argsort(-rows[:t, 1], kind="stable")[:p_max]
    ranked = ranked[rows[ranked, 0] >= 0]      # negative ids are skipped, still count for top_k
    boxes, ids = rows[:, 2:6], rows[:, 0]
    if int(np.abs(boxes[:t]).max(initial=0)) >= _INT64_SAFE:
        boxes = boxes.astype(object)            # huge coordinates: Python's unbounded ints
    boxes = _with_areas(boxes)
    kept = np.empty(0, dtype=np.int64)
    for b0 in range(0, len(ranked), NMS_BLOCK):
        if len(kept) >= n_max:
            break
        block = ranked[b0:b0 + NMS_BLOCK]
        alive = ~_suppressed(boxes, ids, kept, block, a)
        inner = _pair_hits(boxes[block], boxes[block], a["iou_threshold"])
        if not a["force_suppress"]:
            inner &= ids[block][:, None] == ids[block][None, :]
        keep = np.zeros(len(block), dtype=bool)
        room = n_max - len(kept)
        for j in range(len(block)):
            if alive[j] and room:
                keep[j], room = True, room - 1
                alive[j + 1:] &= ~inner[j, j + 1:]
        kept = np.concatenate([kept, block[keep]])
    return kept


def _nms_kernel(xp, data, valid_count, **a):
    """Per batch on host int64 copies: vectorized blocks of the sequential greedy scan."""
    rows = _to_host(data).astype(np.int64)
    counts = _to_host(valid_count).astype(np.int64).tolist()
    out = np.full(rows.shape, -1, dtype=np.int64)
    for b, count in enumerate(counts):
        kept = _nms_batch(rows[b], count, a)
        out[b, :len(kept)] = rows[b, kept]
    return xp.asarray(out)


def _nms_work(shapes, precs, a) -> int:
    """Gas of the pairwise overlaps: per batch N (N + B) / 2 pair tests of PAIR_GAS each
    (PAIR_GAS_EXACT when coordinates may reach 2^26: Python integers), plus N log N for the
    sort. Gas grows with the real cost, which CVM's B * 20 per output element does not."""
    batches, n = shapes[0][0], shapes[0][1]
    per_pair = PAIR_GAS if precs[0] <= 27 else PAIR_GAS_EXACT
    return batches * (n * (n + NMS_BLOCK) // 2 * per_pair + n * max(1, n.bit_length()))


PAIR_GAS, PAIR_GAS_EXACT = 1, 32
"""Gas per pair test: int64 (coordinates below 2^26, precision <= 27), else Python ints.
Measured by bench/budgets.py against the gas-per-second floor (docs/format.md)."""


def _iou_at_least_z3(zx, a, b, t: int):
    """iou_percent(a, b) >= t for t >= 1, division-free (U > 0: floor(100 I / U) >= t <=>
    100 I >= t U), in a namespace wide enough for the exact products."""
    w = zx.wide()
    a, b = [zx.to_wide(v) for v in a], [zx.to_wide(v) for v in b]
    s = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    ow = w.min(a[2], b[2]) - w.max(a[0], b[0])
    oh = w.min(a[3], b[3]) - w.max(a[1], b[1])
    inter = w.max(ow, 0) * w.max(oh, 0)
    union = s - inter
    return zx.And(s > 0, union > 0, 100 * inter >= t * union)


def _nms_z3(zx, data, valid_count, **a):
    """Stable rank by score among the first T rows, then the greedy scan as constraints:
    keep[p] = p < p_max and kept-before < n_max and id >= 0 and no kept rival overlaps."""
    batches, n, k = data.shape
    out = []
    for b in range(batches):
        rows = _rows(data, b)
        t = zx.clip(valid_count.data[b], 0, n)
        live = [t > r for r in range(n)]
        ahead = lambda j, r: rows[j][1] >= rows[r][1] if j < r else rows[j][1] > rows[r][1]
        rank = [zx.sum([zx.flag(zx.And(live[j], ahead(j, r))) for j in range(n) if j != r])
                for r in range(n)]
        ranked = [[_pick(zx, [zx.And(live[r], rank[r] == p) for r in range(n)],
                         [rows[r][e] for r in range(n)]) for e in range(k)] for p in range(n)]
        p_max = t if a["top_k"] < 0 else zx.min(t, a["top_k"])
        n_max = t if a["max_output_size"] < 0 else zx.min(t, a["max_output_size"])
        keep, count = [], zx.num(0)
        for p, row in enumerate(ranked):
            rivals = [zx.And(keep[q], _iou_at_least_z3(zx, ranked[q][2:6], row[2:6],
                                                       a["iou_threshold"]))
                      if a["force_suppress"] else zx.And(keep[q], ranked[q][0] == row[0],
                      _iou_at_least_z3(zx, ranked[q][2:6], row[2:6], a["iou_threshold"]))
                      for q in range(p)]
            ok = [p_max > p, count < n_max, row[0] >= 0] + ([zx.Not(zx.Or(rivals))] if rivals
                                                            else [])
            keep.append(zx.And(ok))
            count = count + zx.flag(keep[-1])
        out += _landing(zx, keep, ranked, n)[0]
    return Ref(data.shape, out)


def _pick(zx, conds, values):
    """The value whose condition holds (at most one does), else -1."""
    term = zx.num(-1)
    for c, v in zip(reversed(conds), reversed(values)):
        term = zx.ite(c, v, term)
    return term


register(OpDef(
    name="non_max_suppression", opcode=61,
    doc="""Per batch b of data (B, N, 6) rows (id, score, x1, y1, x2, y2) and valid_count (B,):
    T = clamp(valid_count[b], 0, N); the first T rows stable-sorted by score descending;
    p_max = min(T, top_k) if top_k >= 0 else T; n_max = min(T, max_output_size) if
    max_output_size >= 0 else T. Scan ranked rows p < p_max while kept < n_max: skip id < 0;
    drop the row if some kept row with (force_suppress or the same id) has
    iou_percent >= iou_threshold (see iou_percent); else keep it. Output: the kept rows, then -1
    rows. Precision max(P0, 2) (detvm fix for the -1 fill). Gas weight B * 20 (CVM's), plus the
    pairwise work: B (N (N + 256) / 2 pair tests + N log N).
    This is CVM's formal definition; detvm does not reproduce the cpu/gpu kernels' bugs
    (early return across batches, input mutation, max_output_size 0 = unlimited).""",
    inputs=("data", "valid_count"), outputs=("out",),
    attrs=(Attr("iou_threshold", "int", default=50, lo=1, hi=INT32_MAX),
           Attr("max_output_size", "int", default=-1, **INT32),
           Attr("top_k", "int", default=-1, **INT32),
           Attr("force_suppress", "bool", default=False),
           Attr("coord_start", "int", default=2, lo=2, hi=2),
           Attr("score_index", "int", default=1, lo=1, hi=1),
           Attr("id_index", "int", default=0, lo=0, hi=0),
           Attr("return_indices", "bool", default=False),
           Attr("invalid_to_bottom", "bool", default=True)),
    shape=_nms_shape,
    precision=lambda precs, shapes, a: max(precs[0], 2),
    cost=lambda shapes, a: shapes[0][0] * 20, work=_nms_work,
    scalar=_nms_scalar, kernel=_nms_kernel, z3=_nms_z3,
    batch="map",
))
