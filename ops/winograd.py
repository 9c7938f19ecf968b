"""Exact integer Winograd F(2x2, 3x3) for 3x3, stride-1 conv2d.

Integer transforms (Lavin's F(2,3); the halves of G moved out, rows 0 and 3 of U doubled):

    G = [[1,0,0],[1,1,1],[1,-1,1],[0,0,1]]         U = D G g G^T,  D = diag(2, 1, 1, 2)
    B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]       V = B^T d B  (each 4x4 input tile)
    A0^T = [[1,1,1,0],[0,1,-1,-1]], A^T = [[2,1,1,0],[0,1,-1,-2]]   4Y = A0^T M A,  M = sum_c U V

(A0^T D = A^T, and A^T (G g G^T (.) V) A = 4Y is Lavin's identity with G's halves moved into A),
so 4Y is an exact integer identity and Y = 4Y / 4 exactly. Every intermediate is bounded:

* |V| <= 4 R(d): each row of B^T has |entries| summing to 2 (``V_GAIN``);
* the transformed-domain sum at position (i, j) over a channel chunk is bounded by
  4 R(d) * max_oc sum_{c in chunk} |U[oc, c, i, j]| (a sum of products, in any order); a chunk
  is licensed for float32 BLAS when that bound is below 2^24 (:func:`licence`);
* the output transform runs in int32, licensed when 12 x (the largest whole-sum bound) plus the
  bias/rounding offset is below 2^31 (rows of A0^T sum to 3 in magnitude, of A^T to 4).
A0^T[a, 1] = A^T[b, 1] = 1: adding 4b to M[1, 1] adds 4b to every output of a tile.

Layout: tiles are laid out with one extra (junk) tile column per tile row, so every transform
is one long contiguous numpy operation; junk tiles combine real input values like any tile (so
they obey the same bounds) and are cropped from the output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .scratch import lane_count, parallel, scratch

G = np.array([[1, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 1]], dtype=np.int64)
D = np.array([2, 1, 1, 2], dtype=np.int64)
V_GAIN = 4           # max |V| / R(d): (sum of |row of B^T|)^2
OUT_GAIN = 12        # (sum of |row of A0^T|) * (sum of |row of A^T|)
SCALE_SHIFT = 2      # the output transform computes 4Y
BIAS_POS = 5         # flat position (1, 1)
F32_LIMIT, I32_LIMIT = 1 << 24, 1 << 31
MAX_CHUNKS = 8


def eligible(attrs, weight_shape) -> bool:
    """A conv2d that F(2x2, 3x3) computes: 3x3 kernel, stride 1, dilation 1, one group."""
    return (tuple(weight_shape[2:]) == (3, 3) and tuple(attrs["strides"]) == (1, 1)
            and tuple(attrs["dilation"]) == (1, 1) and attrs["groups"] == 1)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """U[4 i + j, oc, c] = D[i] (G g G^T)[i, j], shape (16, OC, C), float32 holding exact
    integers: |U| <= 18 R(w) < 2^24 for |w| < 2^19, and each is a sum of at most 9 terms."""
    oc, c = weight.shape[:2]
    kron = np.kron(D[:, None] * G, G).astype(np.float32)   # (16, 9): U = kron vec(g)
    g = weight.reshape(oc * c, 9).astype(np.float32)
    return np.ascontiguousarray((g @ kron.T).T).reshape(16, oc, c)


@dataclass(frozen=True)
class WinogradLicence:
    """Proven facts of one Winograd conv: ``chunks`` equal channel chunks, each with every
    transformed-domain partial sum below 2^24 (``chunk_bound``), and ``out_bound`` bounding the
    int32 output transform (before the bias offset). ``u`` holds the exact transformed weights."""

    chunks: int
    chunk_bound: int
    out_bound: int
    u: np.ndarray = field(repr=False, compare=False)


def licence(weight: np.ndarray, x_bound: int) -> WinogradLicence | None:
    """The F(2x2, 3x3) licence of a constant 3x3 weight (|w| < 2^19) for data |d| <= x_bound,
    or None when no split into at most MAX_CHUNKS equal channel chunks is exact in float32."""
    if weight.size and int(np.abs(weight.astype(np.int64)).max()) >= 1 << 19:
        return None
    u = transform_weight(weight)
    c = weight.shape[1]
    absu = np.abs(u)
    sums = absu.sum(axis=2, dtype=np.float64)              # exact: below 2^53
    out_bound = OUT_GAIN * V_GAIN * x_bound * int(sums.max(initial=0))
    for k in range(1, min(MAX_CHUNKS, c) + 1):
        if c % k:
            continue
        if k > 1:
            sums = absu.reshape(16, absu.shape[1], k, c // k).sum(axis=3, dtype=np.float64)
        chunk_bound = V_GAIN * x_bound * int(sums.max(initial=0))
        if chunk_bound < F32_LIMIT:
            return WinogradLicence(k, chunk_bound, out_bound, u)
    return None


def tiles(out_h: int, out_w: int) -> tuple[int, int]:
    """Number of 2x2 output tiles along each axis."""
    return (out_h + 1) // 2, (out_w + 1) // 2


# ---------------------------------------------------------------------------------------------
# Transforms on arrays
# ---------------------------------------------------------------------------------------------

def split_phases(x, pad, t0: int, bt: int, tw: int, offset: int, planes) -> None:
    """planes[pr, pc][c, n, t, u] = Xpad[n, c, 2 (t0 + t) + pr, 2u + pc] - offset, float32, for
    t <= bt and u <= tw; Xpad is x zero-padded by ``pad`` (0 outside the input)."""
    n, c, h, w = x.shape
    ph, pw = pad
    for pr in range(2):
        lo = max(0, -((2 * t0 + pr - ph) // 2))             # first t with input row >= 0
        hi = min(bt + 1, (h - 1 - (2 * t0 + pr - ph)) // 2 + 1)
        for pc in range(2):
            u0, u1 = (pw - pc + 1) // 2, min(tw + 1, (w - 1 + pw - pc) // 2 + 1)
            dst = planes[pr, pc]
            if hi <= lo or u1 <= u0:
                dst.fill(0)
                continue
            dst[:, :, :lo].fill(0)
            dst[:, :, hi:].fill(0)
            dst[:, :, lo:hi, :u0].fill(0)
            dst[:, :, lo:hi, u1:].fill(0)
            r0, c0 = 2 * (t0 + lo) + pr - ph, 2 * u0 + pc - pw
            src = x[:, :, r0:r0 + 2 * (hi - lo - 1) + 1:2, c0:c0 + 2 * (u1 - u0 - 1) + 1:2]
            np.subtract(src.transpose(1, 0, 2, 3), offset, out=dst[:, :, lo:hi, u0:u1],
                        dtype=np.float32, casting="unsafe")


def input_transform(planes, bt: int, tw: int, v) -> None:
    """v[4 i + j] = (B^T d B)[i, j] of every tile, flat over (c, n, t, u<=tw); float32, exact.

    Row pass on (c n)-rows of the phase planes (both column phases at once), then the column
    pass on the flattened rows (all i at once); the last element (a junk tile) is set to 0."""
    cn = planes.shape[2] * planes.shape[3]
    span = bt * (tw + 1)
    p = planes.reshape(2, 2, cn, -1)                    # [row phase, column phase, cn, .]
    d0, d1 = p[0, :, :, :span], p[1, :, :, :span]
    d2, d3 = p[0, :, :, tw + 1:tw + 1 + span], p[1, :, :, tw + 1:tw + 1 + span]
    r = scratch("rows", (4, 2, cn, span), np.float32)   # [i, column phase, cn, .]
    np.subtract(d0, d2, out=r[0])
    np.add(d1, d2, out=r[1])
    np.subtract(d2, d1, out=r[2])
    np.subtract(d1, d3, out=r[3])
    size = cn * span
    r = r.reshape(4, 2, size)
    e0, o0, e1, o1 = r[:, 0, :-1], r[:, 1, :-1], r[:, 0, 1:], r[:, 1, 1:]
    v = v.reshape(4, 4, size)
    np.subtract(e0, e1, out=v[:, 0, :-1])
    np.add(o0, e1, out=v[:, 1, :-1])
    np.subtract(e1, o0, out=v[:, 2, :-1])
    np.subtract(o0, o1, out=v[:, 3, :-1])
    v[:, :, -1] = 0


def output_transform(m, y) -> None:
    """y[a, b] = (A0^T M A)[a, b] = 4Y for the int32 products ``m`` (16, X): ``y`` is
    (2, 2, X). Exact: the licence bounds every partial sum below 2^31."""
    m = m.reshape(4, 4, -1)
    x = m.shape[2]
    s = scratch("s", (2, 4, x), m.dtype)               # s = A0^T M, all columns j at once
    np.add(m[0], m[1], out=s[0])
    np.add(s[0], m[2], out=s[0])
    np.subtract(m[1], m[2], out=s[1])
    np.subtract(s[1], m[3], out=s[1])
    t = scratch("tmp", (2, x), m.dtype)                 # 4Y = s A, both rows a at once
    y = y.reshape(2, 2, x)
    np.add(s[:, 1], s[:, 2], out=t)
    np.add(s[:, 0], s[:, 0], out=y[:, 0])
    np.add(y[:, 0], t, out=y[:, 0])
    np.subtract(s[:, 1], s[:, 2], out=t)
    np.add(s[:, 3], s[:, 3], out=y[:, 1])
    np.subtract(t, y[:, 1], out=y[:, 1])


# ---------------------------------------------------------------------------------------------
# conv2d bound at load time
# ---------------------------------------------------------------------------------------------

SLAB_BUDGET = 1 << 21
"""Transformed-input elements per block of work (bounds the scratch memory)."""


class WinogradKernel:
    """A licensed 3x3 stride-1 conv2d (or qconv2d) with constant weight and bias, followed by
    the fused ``tail`` (ops/tails.py Requant): 4Y by F(2x2, 3x3) with float32 GEMMs per channel
    chunk, chunks summed and transformed back in int32 (int64 when the int32 licence fails),
    then q = tail(Y + bias) = clip(floor((4Y + 4 bias + 4 add) / 2^(shift + 2)), lo, hi)."""

    def __init__(self, lic: WinogradLicence, bias, attrs, tail, out_dtype):
        oc, c = lic.u.shape[1:]
        k = lic.chunks
        self.k, self.oc, self.c, self.pad = k, oc, c, tuple(attrs["padding"])
        self.zp = attrs.get("zero_point", 0)
        u = lic.u.reshape(16, oc, k, c // k).transpose(0, 2, 1, 3)
        self.u = np.ascontiguousarray(u, dtype=np.float32).reshape(16 * k, oc, c // k)
        offset = np.full(oc, 4 * tail.add, dtype=np.int64)
        if bias is not None:
            offset += 4 * bias.astype(np.int64)
        wide = lic.out_bound + int(np.abs(offset).max(initial=0)) >= I32_LIMIT
        self.acc = np.dtype(np.int64 if wide else np.int32)
        self.offset = offset.astype(self.acc).reshape(oc, 1)
        self.tail = type(tail)(tail.shift + SCALE_SHIFT, 4 * tail.add, tail.lo, tail.hi)
        self.out_dtype = np.dtype(out_dtype)

    def __call__(self, xp, x):
        n, c, h, w = x.shape
        oh, ow = h + 2 * self.pad[0] - 2, w + 2 * self.pad[1] - 2
        th, tw = tiles(oh, ow)
        out = np.empty((n, self.oc, oh, ow), self.out_dtype)
        lanes = lane_count(n * th * tw * 16 * c * self.oc)
        per_row = 16 * c * (tw + 1)
        if n > 1:                                      # blocks of images
            step = max(1, min(SLAB_BUDGET // (per_row * th), -(-n // lanes)))
            blocks = [(n0, min(n, n0 + step), 0, th) for n0 in range(0, n, step)]
        else:                                          # blocks of tile rows
            rows = max(1, min(th, SLAB_BUDGET // per_row, -(-th // lanes)))
            blocks = [(0, 1, t0, min(th, t0 + rows)) for t0 in range(0, th, rows)]
        parallel(lambda b: self.block(x[b[0]:b[1]], b[2], b[3], tw, out[b[0]:b[1]]), blocks)
        return out

    def block(self, x, t0: int, t1: int, tw: int, out) -> None:
        """Output rows [2 t0, 2 t1) of images ``x`` into ``out`` (same images)."""
        nb, c = x.shape[:2]
        bt = t1 - t0
        planes = scratch("planes", (2, 2, c, nb, bt + 1, tw + 1), np.float32)
        split_phases(x, self.pad, t0, bt, tw, self.zp, planes)
        t = nb * bt * (tw + 1)
        v = scratch("v", (16, c, t), np.float32)
        input_transform(planes, bt, tw, v)
        m = scratch("m", (16 * self.k, self.oc, t), np.float32)
        np.matmul(self.u, v.reshape(16 * self.k, c // self.k, t), out=m)
        m = m.reshape(16, self.k, self.oc, t)
        mi = scratch("mi", (16, self.oc, t), self.acc)
        np.copyto(mi, m[:, 0], casting="unsafe")
        for j in range(1, self.k):
            np.add(mi, m[:, j], out=mi, casting="unsafe")   # float64 add of exact ints
        np.add(mi[BIAS_POS], self.offset, out=mi[BIAS_POS])
        y = scratch("y", (2, 2, self.oc, nb, bt, tw + 1), self.acc)
        output_transform(mi, y)
        self._finish(y, t0, out)

    def _finish(self, y, t0: int, out) -> None:
        """out rows 2 (t0 + t) + a, columns 2u + b <- tail(y[a, b, :, :, t, u]) for the real
        tiles (the tail runs on the junk tiles too: cheaper than gathering)."""
        tail, flat = self.tail, y.reshape(-1)
        if tail.shift:
            np.right_shift(flat, tail.shift, out=flat)
        if tail.lo is not None or tail.hi is not None:
            np.clip(flat, tail.lo, tail.hi, out=flat)
        nb, oc, oh, ow = out.shape
        bt, tw = y.shape[4], y.shape[5] - 1
        if oh % 2 == 0 and ow % 2 == 0:                 # one interleaving copy
            dst = out.reshape(nb, oc, oh // 2, 2, ow // 2, 2)[:, :, t0:t0 + bt]
            np.copyto(dst.transpose(3, 5, 1, 0, 2, 4), y[..., :tw], casting="unsafe")
            return
        for a in range(2):
            for b in range(2):
                ra = min(bt, (oh - a + 1) // 2 - t0)      # tile rows whose row 2t+a < OH
                cb = (ow - b + 1) // 2
                dst = out[:, :, 2 * t0 + a::2, b::2][:, :, :ra, :cb].transpose(1, 0, 2, 3)
                np.copyto(dst, y[a, b, :, :, :ra, :cb], casting="unsafe")
