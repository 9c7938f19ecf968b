"""The CPU executor's load-time fusion pass: the program's bound steps, regrouped and bound to
kernels prepared once (weights converted, licences applied, tails composed).

A *head* instruction followed by a chain of *tail* instructions (cvm_right_shift, relu, clip,
cvm_clip), each the only reader of the previous result and none of them a program output,
becomes one step computing the chain's last tensor. The tail is the exact composition
``q = clip(floor((z + add) / 2^shift), lo, hi)`` (ops/tails.py Requant); the intermediates, which
validation proved fit their storage, are never stored, so the bytes are those of running the
instructions one by one. Heads, in order of preference:

* conv2d / qconv2d with constant weight (and bias), one group: shifted-view GEMMs without im2col
  (ops/blas.py) for stride 1 with a one-chunk float32 licence and enough pixels; Winograd
  F(2x2, 3x3) on one lane where its licence holds and the shape pays (ops/winograd.py); else
  im2col + the licensed chunked GEMM (ops/gemm.py);
* dense / qdense with constant weight: the licensed GEMM;
* elemwise_add / elemwise_sub (broadcast_add / broadcast_sub of equal shapes): in the
  narrowest integer type their proven bound allows;
* requantize: in float32 / float64 where that is exact (ops/fastquant.py), tail clips composed;
  a lut of its result alone (its only reader) joins it, one pass over cache-sized blocks
  (:func:`lut_tails`, ops/fastquant.py RequantizeLut);
* max_pool2d on several lanes: its own kernel on blocks of images or channels;
* lut with a constant table: the table cast to the result's dtype once, bytes gathered by
  their bits, two at a time where the result is a byte (ops/table.py PreparedLut); a lut of
  one input reading its result alone composed into its table (one gather for both);
* any other op: its kernel, then the tail in int64.

A conv chain whose result only feeds the next group's head is also *joined* to that group
(:func:`joins`), the fused step running at the later group's place: a residual elemwise_add /
elemwise_sub and its tail run in the conv's epilogue on the exact float accumulator
(ops/tails.py Residual), and so does a requantize of the raw conv result (ops/fastquant.py).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ops import blas, fastquant, gemm, winograd
from ops.base import bound
from ops.scratch import scratch, spread
from ops.table import PreparedLut
from ops.tails import Requant, Residual

from .islands import islands
from .program import Program
from .steps import Step
from .validate import peak_bytes, tensor_bytes

TAIL_OPS = ("cvm_right_shift", "relu", "clip", "cvm_clip")
IDENTITY = Requant()
PREPARED = frozenset((*gemm.LINEAR_OPS, *TAIL_OPS, "elemwise_add", "elemwise_sub", "broadcast_add",
                      "broadcast_sub", "requantize", "max_pool2d", "lut"))
"""The heads :func:`_prepare` may give a prepared kernel."""
SMALL = 1 << 12
"""Elements up to which a pointwise step computes in one block without scratch buffers (its
numpy calls cost more than its arithmetic)."""
INT64_REACH = 1 << 62
"""A tail is composed only while |z + add| < 2^62 and shift < 63 (int64 arithmetic)."""
MIN_SHIFTED_WORK, MIN_SHIFTED_PIXELS = 1 << 20, 512
"""Multiply-adds and output pixels per image from which kh*kw shifted-view GEMMs (ops/blas.py)
beat one im2col GEMM (measured: 56x56 and 28x28 win, 14x14 and 7x7 lose)."""
WINOGRAD_LANES, MIN_TILES = 1, 128
"""Winograd is tried for plans on at most this many lanes and convs with at least this many
2x2 output tiles (batch included): its numpy transforms are single-threaded and memory-bound,
and measured no faster than the alternatives elsewhere (docs/performance.md)."""


def compose_tail(tail: Requant, ins) -> Requant:
    """``tail`` followed by the tail instruction ``ins`` (exact composition)."""
    a = ins.attrs
    if ins.op == "cvm_right_shift":
        r = bound(a["precision"])
        return tail.then_shift(a["shift_bit"]).then_clip(-r, r)
    if ins.op == "relu":
        return tail.then_clip(0, None)
    if ins.op == "clip":
        return tail.then_clip(a["a_min"], a["a_max"])
    r = bound(a["precision"])                          # cvm_clip
    return tail.then_clip(-r, r)


def readers_of(program: Program) -> dict[int, list[int]]:
    """tensor -> the instructions reading it, in order (a tensor nobody reads: no entry)."""
    readers = defaultdict(list)
    for k, ins in enumerate(program.code):
        for i in ins.inputs:
            readers[i].append(k)
    return readers


def chains(program: Program, skip=frozenset(),
           readers: dict | None = None) -> list[tuple[list[int], Requant]]:
    """The program's instructions grouped as (head + tail indices, composed tail), in order;
    the instructions in ``skip`` belong to no group (``readers``: :func:`readers_of`)."""
    readers = readers_of(program) if readers is None else readers
    code, tensors = program.code, program.tensors
    outputs, taken, groups = set(program.outputs), set(skip), []
    composed = {}        # (id of a tail, op, attributes): the longer tail; each tail: itself
    for k, ins in enumerate(code):
        if k in taken:
            continue
        group, tail = [k], IDENTITY
        t = ins.outputs[0] if len(ins.outputs) == 1 else None
        top = bound(tensors[t].precision) if t is not None else 0
        while t is not None and t not in outputs:
            after = readers.get(t)
            if after is None or len(after) != 1:
                break
            r = after[0]
            nxt = code[r]
            if nxt.op not in TAIL_OPS or r in taken:
                break
            key = (id(tail), nxt.op, tuple(nxt.attrs.items()))  # a chain repeats a few
            longer = composed.get(key)                           # tails
            if longer is None:              # one object per distinct tail: ids repeat
                longer = compose_tail(tail, nxt)
                longer = composed[key] = composed.setdefault(longer, longer)
            if longer is not tail and (longer.shift >= 63 or longer.reach(top) >= INT64_REACH):
                break
            tail = longer
            group.append(r)
            t = nxt.outputs[0]
        taken.update(group)
        groups.append((group, tail))
    return groups


def fuse(program: Program, analysis, steps: list, lanes: int = 1,
         external: dict | None = None, tables: bool = True) -> list:
    """The fused, prepared steps of ``program`` (``steps``: its per-instruction bound steps)
    for a plan running on ``lanes`` lanes. ``external``: {instruction: Step} of steps prepared
    elsewhere (the onnxruntime backend's regions), each covering the instructions in its
    ``covers``, which no group takes; each runs at its instruction's place. ``tables``:
    elementwise islands of byte inputs become table lookups (vm/islands.py), except where a
    convolution's epilogue absorbs the instructions (:func:`joins`)."""
    external = external or {}
    readers = readers_of(program)
    covered = {k for step in external.values() for k in step.covers}
    plain = chains(program, covered, readers)           # the groups without tables
    found = {}
    if tables:
        joined = {k for n, (m, _) in joins(program, plain, readers).items()
                  for k in plain[n][0] + plain[m][0]}
        found = islands(program, steps, covered | joined)
    attempts = ({**found, **external}, external) if found else (external,)
    nbytes = None
    for attempt in attempts:                             # tables move uses later: never
        groups = chains(program, {k for step in attempt.values() for k in step.covers},
                        readers) if attempt is not external else plain   # beyond the peak
        for links in (joins(program, groups, readers), {}):
            # a joined step runs later than its conv, so the conv's input lives longer
            fast = _fused(program, analysis, steps, lanes, groups, links, attempt)
            nbytes = tensor_bytes(program) if nbytes is None else nbytes
            if peak_bytes(program, [(s.outputs, s.frees) for s in fast], nbytes) <= \
                    analysis.live_peak:
                return fast
    return fast


def _fused(program: Program, analysis, steps, lanes: int, groups, links, external) -> list:
    """The steps of ``groups``, conv groups joined as ``links`` says (:func:`joins`), a
    requantize chain and the lut that reads it as one step (:func:`lut_tails`), and the
    ``external`` steps in program order."""
    fast, waiting, pending, memo = [], {}, sorted(external.items()), {}
    closing = {m for m, _ in links.values()}
    luts, merged = lut_tails(program, groups, set(links) | closing), set()
    for n, (group, tail) in enumerate(groups):
        while pending and pending[0][0] < group[0]:
            fast.append(pending.pop(0)[1])
        if n in merged:
            continue
        if n in luts:
            k = groups[luts[n]][0][0]
            step = _composed_lut(program, group[0], k) if program.code[group[0]].op == "lut" \
                else _requantize_lut(program, group, tail, k)
            if step is not None:
                fast.append(step)
                merged.add(luts[n])
                continue
        if n in links:                       # a conv group joined by a later group: wait
            waiting[links[n][0]] = (n, group, tail)
            continue
        if n in waiting:                     # the group that closes a join
            m, head, head_tail = waiting.pop(n)
            step = _joined_step(program, analysis, head, head_tail, group, tail,
                                links[m][1], lanes, memo)
            if step is not None:
                fast.append(step)
                continue
            fast.extend(_plain(program, analysis, steps, head, head_tail, lanes, memo))
        fast.extend(_plain(program, analysis, steps, group, tail, lanes, memo))
    fast.extend(step for _, step in pending)
    return _with_frees(program, fast)


def _plain(program: Program, analysis, steps, group, tail, lanes: int, memo: dict) -> list:
    """The step of one head + tail chain (``memo``: prepared kernels, see :func:`_linear`)."""
    last = program.code[group[-1]]
    kernel, inputs = _prepare(program, analysis, steps, group[0], tail, last.outputs[0], lanes,
                              memo)
    if kernel is None:
        if len(group) == 1:
            return [steps[group[0]]]
        kernel, inputs = _generic(steps[group[0]], tail, program.tensors[last.outputs[0]])
    out = last.outputs
    return [Step(group[0], kernel, inputs, out, tuple(program.tensors[i].dtype for i in out),
                 {}, (), tuple(group))]


def joins(program: Program, groups,
          readers: dict | None = None) -> dict[int, tuple[int, int | None]]:
    """{conv group n: (group m, other)} where the conv chain's result is read only by the head
    of group m, which its epilogue can absorb: an elemwise_add / elemwise_sub with another
    tensor ``other`` (a residual block: one conv per add), or a requantize of the raw conv
    result (``other`` None). The fused step runs at group m's place (SSA: every input is
    defined by then; ``readers``: :func:`readers_of`)."""
    readers = readers_of(program) if readers is None else readers
    head_of = {group[0]: m for m, (group, _) in enumerate(groups)}
    outputs, links = set(program.outputs), {}
    for n, (group, _) in enumerate(groups):
        if program.code[group[0]].op not in ("conv2d", "qconv2d"):
            continue
        t = program.code[group[-1]].outputs[0]
        if t in outputs or len(readers.get(t, ())) != 1 or readers[t][0] not in head_of:
            continue
        nxt, m = program.code[readers[t][0]], head_of[readers[t][0]]
        if nxt.op in ("elemwise_add", "elemwise_sub") and nxt.inputs.count(t) == 1 and \
                all(j[0] != m for j in links.values()):
            links[n] = (m, nxt.inputs[1] if nxt.inputs[0] == t else nxt.inputs[0])
        elif nxt.op == "requantize" and len(group) == 1:
            links[n] = (m, None)
    return links


def _joined_step(program: Program, analysis, head, head_tail, group, tail, other,
                 lanes: int, memo: dict):
    """One step for the conv chain ``head`` and the chain ``group`` that reads it (see
    :func:`joins`), or None when the conv has no float-path prepared kernel or the epilogue's
    arithmetic is not licensed."""
    nxt = program.code[group[0]]
    t = program.code[head[-1]].outputs[0]
    out = program.code[group[-1]].outputs
    dtype = program.tensors[out[0]].dtype
    if nxt.op == "requantize":                  # the raw conv result, requantized
        x = program.tensors[t]
        post = fastquant.prepare(nxt.attrs, x.precision, len(x.shape), dtype, tail)
        if post is None or post.axis not in (None, 1):       # conv: channels on axis 1
            return None
        kernel = _linear(program, analysis, head[0], head_tail, dtype, lanes, memo, post=post)
        inputs = (program.code[head[0]].inputs[0],)
    else:                                       # a residual add / sub
        residual = residual_licence(program, head, group, tail, other)
        if residual is None:
            return None
        kernel = _linear(program, analysis, head[0], head_tail, dtype, lanes, memo, residual)
        inputs = (program.code[head[0]].inputs[0], other)
    if kernel is None:
        return None
    return Step(head[0], kernel, inputs, out, tuple(program.tensors[i].dtype for i in out), {},
                (), tuple(head + group))


def lut_tails(program: Program, groups, skip=frozenset()) -> dict[int, int]:
    """{group n: lut group m} where group n is a requantize chain, or a lut alone with a
    constant table and its own data, whose result (not a program output) is read only by
    group m, a lut alone of that one data input and a constant table (groups in ``skip``:
    none)."""
    readers = readers_of(program)
    head_of = {group[0]: m for m, (group, _) in enumerate(groups)}
    outputs, found, consts = set(program.outputs), {}, program.consts
    for n, (group, tail) in enumerate(groups):
        ins = program.code[group[0]]
        if n in skip or not (
                ins.op == "requantize" and ins.inputs[0] not in consts or
                ins.op == "lut" and len(group) == 1 and tail == IDENTITY and
                ins.inputs[0] in consts and not any(i in consts for i in ins.inputs[1:])):
            continue
        t = program.code[group[-1]].outputs[0]
        after = readers.get(t, ())
        if t in outputs or len(after) != 1 or after[0] not in head_of:
            continue
        m = head_of[after[0]]
        lut = program.code[after[0]]
        if lut.op == "lut" and len(groups[m][0]) == 1 and m not in skip and \
                len(lut.inputs) == 2 and lut.inputs[1] == t and lut.inputs[0] in program.consts:
            found[n] = m
    return found


def _composed_lut(program: Program, first: int, k: int) -> Step:
    """One step for lut ``first`` and the lut ``k`` of one input reading its result alone: a
    lut of the first's arguments whose table is the second's composed with the first's,
    T2[clamp(T1 - low2, 0, n2 - 1)] (lut's own index rule), exact."""
    a, b = program.code[first], program.code[k]
    inner, outer = program.consts[a.inputs[0]], program.consts[b.inputs[0]]
    index = np.clip(inner.astype(np.int64) - b.attrs["low"][0], 0, outer.shape[0] - 1)
    out = program.tensors[b.outputs[0]]
    return Step(first, PreparedLut(outer[index], a.attrs["low"], out.dtype),
                tuple(a.inputs[1:]), tuple(b.outputs), (out.dtype,), {}, (), (first, k))


def _requantize_lut(program: Program, group, tail, k: int):
    """One step for the requantize chain ``group`` and the lut instruction ``k`` reading it
    (ops/fastquant.py RequantizeLut), or None where that is not licensed."""
    ins, lut = program.code[group[0]], program.code[k]
    x = program.tensors[ins.inputs[0]]
    out = program.tensors[lut.outputs[0]]
    kernel = fastquant.prepare_lut(ins.attrs, x.precision, len(x.shape), tail,
                                   np.asarray(program.consts[lut.inputs[0]]),
                                   lut.attrs["low"][0], out.dtype)
    if kernel is None:
        return None
    return Step(group[0], kernel, (ins.inputs[0],), tuple(lut.outputs), (out.dtype,), {}, (),
                tuple(group) + (k,))


def residual_licence(program: Program, head, group, tail, other: int):
    """The Residual epilogue of a joined residual block (conv chain ``head``, add chain
    ``group`` with ``tail``, shortcut ``other``), or None when float32 does not hold
    q (+|-) other + add and the clip bounds exactly (validated precisions)."""
    add, t = program.code[group[0]], program.code[head[-1]].outputs[0]
    reach = max(tail.reach(bound(program.tensors[t].precision) +
                           bound(program.tensors[other].precision)), tail.span())
    if reach >= gemm.F32_LIMIT or tail.shift >= 63:
        return None
    return Residual("add" if add.op == "elemwise_add" else "sub", add.inputs[0] == t, tail)


def _with_frees(program: Program, fast: list) -> list:
    """Each step frees the non-constant tensors it is the last fast step to touch."""
    last = {}
    for n, step in enumerate(fast):
        for i in (*step.inputs, *step.outputs):
            last[i] = n
    keep, tensors, dies = set(program.outputs), program.tensors, [[] for _ in fast]
    for i, n in last.items():
        if i not in keep and tensors[i].kind != "const":
            dies[n].append(i)
    return [step.with_frees(tuple(sorted(dead))) for step, dead in zip(fast, dies)]


def _prepare(program: Program, analysis, steps, index: int, tail, out_id: int, lanes: int,
             memo: dict):
    """A prepared kernel and its (non-constant) inputs for the head ``index``, or (None, ())."""
    ins = program.code[index]
    if ins.op not in PREPARED:
        return None, ()
    consts = [program.consts.get(i) for i in ins.inputs]
    dtype = program.tensors[out_id].dtype
    if ins.op in gemm.LINEAR_OPS:
        kernel = _linear(program, analysis, index, tail, dtype, lanes, memo)
        return (kernel, (ins.inputs[0],)) if kernel is not None else (None, ())
    same_shapes = len({program.tensors[i].shape for i in ins.inputs}) == 1
    precs = [program.tensors[i].precision for i in ins.inputs]
    if (ins.op in ("elemwise_add", "elemwise_sub") or
            ins.op in ("broadcast_add", "broadcast_sub") and same_shapes) and \
            not any(c is not None for c in consts):
        return _pointwise(memo, ins.op, precs, tail, dtype), tuple(ins.inputs)
    if ins.op in TAIL_OPS and consts[0] is None:          # a chain of tail ops alone
        whole = compose_tail(Requant(), ins).then(tail)
        return _pointwise(memo, None, precs, whole, dtype), tuple(ins.inputs)
    if ins.op == "requantize" and consts[0] is None:
        x = program.tensors[ins.inputs[0]]
        kernel = fastquant.prepare(ins.attrs, x.precision, len(x.shape), dtype, tail)
        return kernel, ((ins.inputs[0],) if kernel is not None else ())
    if ins.op == "lut" and consts[0] is not None and tail == IDENTITY and \
            all(c is None for c in consts[1:]):
        return PreparedLut(consts[0], ins.attrs["low"], dtype), tuple(ins.inputs[1:])
    if ins.op == "max_pool2d" and consts[0] is None and tail == Requant() and lanes > 1:
        out = program.tensors[ins.outputs[0]]
        return _PerImage(steps[index], out.shape, out.dtype), tuple(ins.inputs)
    return None, ()


def _linear(program: Program, analysis, index: int, tail, dtype, lanes: int, memo: dict,
            residual=None, post=None):
    """The prepared kernel of conv2d / dense (or qconv2d / qdense) ``index`` with constant
    weight and bias, or None. With a ``residual`` or a ``post`` epilogue (a requantize of the
    exact result, ``tail`` then the identity): only a float-path conv2d. Instructions that
    share their weight, bias, attributes, shapes, licence and epilogue share one kernel
    (``memo``): a prepared weight is a float copy, and a weight many instructions use would
    otherwise be copied for each (memory not linear in the model's bytes)."""
    ins = program.code[index]
    consts = [program.consts.get(i) for i in ins.inputs]
    if consts[1] is None or consts[0] is not None or index not in analysis.licences \
            or any(c is None for c in consts[2:]):
        return None
    key = (ins.op, tuple(map(id, consts[1:])), tuple(ins.attrs.items()),
           program.tensors[ins.inputs[0]].shape, id(analysis.licences[index]), tail,
           np.dtype(dtype), lanes, residual, id(post))
    if post is None and key in memo:
        return memo[key]
    kernel = _linear_kernel(program, analysis, index, tail, dtype, lanes, residual, post)
    if post is None:
        memo[key] = kernel
    return kernel


def _linear_kernel(program: Program, analysis, index: int, tail, dtype, lanes: int,
                   residual=None, post=None):
    """:func:`_linear`'s kernel, prepared."""
    ins = program.code[index]
    consts = [program.consts.get(i) for i in ins.inputs]
    lic, bias = analysis.licences[index], (consts[2] if len(consts) > 2 else None)
    fused = residual is not None or post is not None
    if not ins.op.endswith("conv2d"):
        return None if fused else \
            gemm.LinearKernel(ins.op, consts[1], bias, ins.attrs, lic, tail, dtype)
    if ins.attrs["groups"] != 1:
        return None
    reach = max(lic.whole + abs(tail.add) + (
        int(np.abs(bias.astype(np.int64)).max(initial=0)) if bias is not None else 0),
        tail.span())
    out = program.tensors[ins.outputs[0]]
    if blas.shifted_eligible(ins.attrs, lic, reach) and \
            out.size * consts[1][0].size >= MIN_SHIFTED_WORK and \
            out.shape[2] * out.shape[3] >= MIN_SHIFTED_PIXELS:
        return blas.ShiftedConv(consts[1], bias, ins.attrs, tail, dtype, residual, post)
    if not fused:
        wino = _winograd(program, analysis, index) if lanes <= WINOGRAD_LANES else None
        if wino is not None:
            return winograd.WinogradKernel(wino, bias, ins.attrs, tail, dtype)
    elif gemm.kernel_mode(lic, gemm.offsets(bias, tail, out.shape[1]), tail.span()) == "int64":
        return None
    return gemm.LinearKernel(ins.op, consts[1], bias, ins.attrs, lic, tail, dtype, residual,
                             post)


def _winograd(program: Program, analysis, index: int):
    """The Winograd licence of conv ``index`` when eligible and worth it (recorded in
    ``analysis.winograd``), else None."""
    if index in analysis.winograd:
        return analysis.winograd[index]
    ins = program.code[index]
    weight = program.consts[ins.inputs[1]]
    out = program.tensors[ins.outputs[0]].shape
    lic = None
    if winograd.eligible(ins.attrs, weight.shape) and \
            out[0] * np.prod(winograd.tiles(*out[2:])) >= MIN_TILES:
        x_bound = gemm.data_bound(ins.op, program.tensors[ins.inputs[0]].precision, ins.attrs)
        lic = winograd.licence(weight, x_bound)
    analysis.winograd[index] = lic
    return lic


def _pointwise(memo: dict, op: str | None, precs, tail, out_dtype) -> "_Pointwise":
    """The :class:`_Pointwise` kernel of these facts, one per distinct facts (``memo``: the
    kernels hold no state between calls)."""
    key = ("pointwise", op, tuple(precs), tail, np.dtype(out_dtype))
    kernel = memo.get(key)
    if kernel is None:
        kernel = memo[key] = _Pointwise(op, precs, tail, out_dtype)
    return kernel


class _Pointwise:
    """elemwise_add / elemwise_sub (or broadcast_add / broadcast_sub of equal shapes), or
    (``op`` None) nothing, then the tail, in int16 / int32 / int64 as the proven bound
    |a| (+ |b|) + |add| allows; blocks of images or channels on the lanes."""

    def __init__(self, op: str | None, precs, tail, out_dtype):
        self.fn = None if op is None else np.add if op.endswith("add") else np.subtract
        reach = max(tail.reach(sum(bound(p) for p in precs)), tail.span())
        self.dtype = next(np.dtype(t) for t in ("int16", "int32", "int64")
                          if reach <= np.iinfo(t).max)
        self.tail, self.out_dtype = tail, out_dtype

    def __call__(self, xp, a, b=None):
        if a.size <= SMALL:                  # one block, no scratch: fewer numpy calls
            z = a.astype(self.dtype) if self.fn is None else self.fn(a, b, dtype=self.dtype)
            if self.tail.add:
                np.add(z, self.tail.add, out=z, dtype=self.dtype)
            self.tail.finish_int(z, z)
            return z.astype(self.out_dtype, copy=False)
        out = np.empty(a.shape, self.out_dtype)

        def block(index):
            z = scratch("z", a[index].shape, self.dtype)
            if self.fn is None:
                np.copyto(z, a[index], casting="unsafe")         # exact: |a| fits
            else:
                self.fn(a[index], b[index], out=z, dtype=self.dtype)
            if self.tail.add:
                np.add(z, self.tail.add, out=z, dtype=self.dtype)
            self.tail.finish_int(z, out[index])
        spread(block, a.shape, 32)
        return out


class _PerImage:
    """An NCHW op independent across images and channels (max_pool2d): its own kernel on
    blocks of images or channels, spread over the lanes."""

    def __init__(self, step, out_shape, out_dtype):
        self.step, self.out_shape, self.out_dtype = step, out_shape, out_dtype

    def __call__(self, xp, x):
        out = np.empty(self.out_shape, self.out_dtype)

        def block(index):
            out[index] = self.step.kernel(xp, x[index], **self.step.kwargs)
        spread(block, x.shape, 32)
        return out


def _generic(step, tail, out_tensor):
    """The head's own kernel, then the tail on its int64 result (in place)."""
    head, kwargs, dtype = step.kernel, step.kwargs, out_tensor.dtype

    def kernel(xp, *args):
        z = np.array(head(xp, *args, **kwargs), dtype=np.int64)     # a copy: a view of an
        if tail.add:                                                # input may come back
            z += tail.add
        tail.finish_int(z, z)
        return z.astype(dtype, copy=False)
    return kernel, step.inputs
