"""The onnxruntime backend's load-time pass: which instructions run on onnxruntime, grouped in
regions (one session each), and the steps of the plan.

* **Selection.** An instruction is lowered when it has a rule (vm/ort/rules.py) whose check
  passes and it pays: a conv2d / dense of at least ``Policy.min_macs`` multiply-adds, a
  grouped (depthwise) convolution of any size, a lut of one input of any size, any op
  whose tensors have at most ``Policy.small`` elements (there, one session call replaces
  several Python steps; a requantize only up to ``Policy.small_requantize``), and the layout
  ops (reshape, flatten, ..., max_pool2d) next to a lowered instruction (so they do not split
  a region). Other elementwise work on large tensors stays in numpy, whose integer kernels
  are faster than onnxruntime's per element.
* **Regions.** Each maximal run of consecutive lowered instructions is one ONNX graph, one
  session and one step of the interpreter loop (vm/interp.py); its inputs and outputs are the
  tensors it shares with the rest of the program. A region that is one large depthwise
  convolution of one image is cut by channels instead, one session per lane run at once
  (vm/ort/kernels.py: ChannelSplitKernel).
* **Layout.** MatMulInteger convolutions run channels last, ConvInteger ones (few channels,
  depthwise) NCHW. A 4-D tensor every numpy step of which is elementwise (``TRANSPARENT``:
  the same op on a permuted array is the same function) or a selection whose axes can be
  permuted with it (``SELECTIONS``: a split, a concatenation) is held in its convolutions' layout
  between steps (channels last if any of them is a MatMulInteger one), in bytes where its
  proven range allows, so the requantizations and residual additions between two lowered
  convolutions never transpose. Any other 4-D tensor that only lowered regions and numpy
  kernels reading any integer dtype exactly (``BYTE_SAFE``: pools, upsampling, tables,
  selections) touch is held in bytes too, NCHW, where its proven range allows. The numpy
  steps run the *twin* program, the program with the channels-last tensors' shapes permuted
  and per-channel axes moved and the held tensors' dtypes, fused as on the numpy executor
  (vm/fusion.py).

Every step computes exactly the bytes of the program's own ops: regions by integer ONNX ops
(rules.py, graph.py), the rest by detvm's kernels.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from ..fusion import fuse, readers_of
from ..program import Instr, Program, Tensor
from ..steps import Step
from ..ranges import Ranges
from . import requant, selftest, session as sessions
from .kernels import ChannelSplitKernel, RegionKernel
from .rules import LINEAR, NHWC, RULES, Region, byte_type, linear_parts, requantize_kind, \
    requantize_table_bytes

ARENA_SIZE = 1 << 22
"""Where no arena is shared by the process's sessions (vm/ort/session.py), sessions making
arrays of this many elements (:func:`_footprint`) keep a memory arena of their own (a
batch's im2col of tens of MB, allocated afresh at every run, page-faults: ResNet-18 batch 32
took 1.8x as long without); below, freed memory goes back (ResNet-18 batch 1: 21 sessions,
40 MB less peak RSS)."""
THREADED_MACS, THREADED_SIZE = 1 << 22, 1 << 20
"""Multiply-adds, or elements of its largest array, from which a session runs on the plan's
intra-op threads; below, one thread: waking another for each node costs more than it saves
(the PP-OCR classifier's six-conv slice on 2 threads, 0.5 M multiply-adds per session at most:
0.40 ms with threaded sessions, 0.31 ms with one thread each)."""
LAYOUT_OPS = ("reshape", "flatten", "expand_dims", "squeeze", "max_pool2d")
TRANSPARENT = ("relu", "abs", "negative", "clip", "cvm_clip", "cvm_left_shift",
               "cvm_right_shift", "elemwise_add", "elemwise_sub", "broadcast_add",
               "broadcast_sub", "broadcast_mul", "broadcast_max", "requantize")
"""Elementwise ops: on tensors of one shape, the op applied to permuted arrays is the permuted
result (requantize's per-channel axis is moved with the layout); also lut, with its constant
table, on 4-D data (broadcasting as before when every argument is permuted alike: a
squeeze-and-excitation scale of shape (1, C, 1, 1))."""
SELECTIONS = ("strided_slice", "concatenate")
"""Selections of 4-D tensors, which run on permuted arrays with their axes permuted
(strided_slice with begin, end (and stride) given for every axis)."""


@dataclass(frozen=True)
class Policy:
    """When lowering pays: conv2d / dense from ``min_macs`` multiply-adds, grouped
    convolutions of any size (``grouped``: numpy's grouped kernel is slow at any size,
    ConvInteger with its group attribute fast), and any op whose tensors have at most
    ``small`` elements, a requantize at most ``small_requantize`` (its integer rounding costs
    onnxruntime tens of nodes, numpy's float-licensed kernel about 3 ns per element) or at most
    ``small`` where it is a lookup in a table of at most ``small_table`` bytes (the digits CNN
    at batch 32: 263 to 170 us a call, its per-tensor requantizes' tables of 42-120 KB; the
    per-channel tables of the PP-OCR classifier, 400-800 KB, ran slower than numpy), a lut of
    one input of any size where ``tables``, in a session with other work (a GatherElements,
    about 0.7 ns per element
    against about 3 for numpy's take; a lut of two inputs costs four more passes to make its
    index, one in numpy: ResNet-18's residual additions, 0.5 ms more in sessions), as long as
    there is a conv2d / dense to lower or
    the whole program of at least ``whole`` and at most ``whole_max`` instructions becomes one
    session (docs/performance.md has the measurements; a long chain of small ops costs more to
    lower than it saves, and its sessions run slower than numpy)."""

    min_macs: int = 1 << 17
    small: int = 1 << 14
    whole: int = 3
    whole_max: int = 512
    small_requantize: int = 1 << 12
    grouped: bool = True
    tables: bool = True
    small_table: int = 1 << 18
    small_max: int = 1 << 12
    """A program of more instructions lowers only its GEMMs worth it (``min_macs``,
    ``grouped``) and the layout ops next to them: a lowered instruction costs about 70 us of
    load (its ONNX node and its share of a session's setup; several times that in short
    regions), so a long program of small ops would load in minutes (10^6 instructions)."""


NOTHING = Policy(1 << 62, -1, 1 << 62, small_requantize=-1, grouped=False, tables=False,
                 small_table=-1, small_max=-1)
"""Lower nothing: the numpy executor."""
AUTO = Policy()
"""The ``auto`` backend's policy."""
EVERYTHING = Policy(0, 1 << 62, 1, 1 << 62, small_requantize=1 << 62, small_max=1 << 62)
"""The ``onnxruntime`` backend's: every instruction that has a rule."""


class Facts:
    """What the rules read: the program, its analysis, the MatMulInteger form and whether
    ConvInteger is exact (``direct``; on int8 data too: ``signed``), proven value ranges, and
    the layout each tensor is held in between steps."""

    def __init__(self, program: Program, analysis, form: str, direct: bool = False,
                 signed: bool = False):
        self.program, self.analysis, self.form, self.direct = program, analysis, form, direct
        self.signed = signed
        self.cache: dict = {}
        self.tables = {"left": requant.TABLE_BUDGET + const_bytes(program)}
        """Bytes of tables the plan may still make (shared with the guarded variants)."""
        self.ranges = Ranges(program)
        self.assumed: dict[int, tuple[int, int]] = {}
        self.layout: dict[int, str] = {}

    def dtype(self, t: int) -> np.dtype:
        """The dtype tensor t is held in between steps: a held tensor (``layout``) whose
        proven range fits a byte is held in that byte type (it is private to this plan),
        every other tensor in its storage dtype."""
        if t in self.layout:
            return self.byte(t) or self.program.tensors[t].dtype
        return self.program.tensors[t].dtype

    def byte(self, t: int) -> np.dtype | None:
        """uint8 or int8 where tensor t's proven range fits one, else None."""
        return byte_type(*self.range(t))

    def range(self, t: int) -> tuple[int, int]:
        """Proven [lo, hi] of tensor t's values (or, for a region built for inputs checked
        at run time, the range ``assumed`` for it)."""
        return self.assumed.get(t) or self.ranges.of(t)

    def assuming(self, ranges: dict[int, tuple[int, int]]) -> "Facts":
        """These facts, with ``ranges`` assumed for some inputs (a guarded region)."""
        other = copy.copy(self)
        other.assumed, other.cache = dict(ranges), {}
        return other


def plan(program: Program, analysis, steps: list, threads: int | None,
         policy: Policy = Policy()) -> list | None:
    """The steps of ``program`` with its lowered regions on onnxruntime, or None when nothing
    is worth lowering or onnxruntime is not licensed here (the self-test runs the first time
    something is worth it)."""
    if len(program.code) > policy.small_max:       # only GEMMs pay for their lowering here
        policy = replace(policy, small=-1, small_requantize=-1, whole_max=-1)
    wanted = [_wanted(program, ins, policy) for ins in program.code]
    gemm = any(w and ins.op in LINEAR for w, ins in zip(wanted, program.code))
    whole = all(wanted) and policy.whole <= len(wanted) <= policy.whole_max
    if not (gemm or whole):
        return None
    verdict = selftest.verdict()
    if verdict.form is None:
        return None
    facts = Facts(program, analysis, verdict.form, verdict.direct, verdict.signed)
    lowered = select(facts, policy)
    if not lowered:
        return None
    regions = runs(lowered)
    inside = _internal(program, regions)
    facts.layout = {t: how for t, how in held_layouts(facts, lowered).items()
                    if t not in inside}
    live = {k for run in regions if _exports(facts, run) for k in run}
    facts.layout.update(dict.fromkeys(byte_held(facts, live, inside), "nchw"))
    twin = twin_program(program, facts)
    twin_steps = [_rebind(step, twin, k, analysis, twin.code[k] is not program.code[k])
                  for k, step in enumerate(steps)]
    external = {}
    for run in regions:
        step = region_step(facts, twin, run, threads)
        if step is not None:
            external[run[0]] = step
    return fuse(twin, analysis, twin_steps, threads or 1, external)


def describe(program: Program, fast: list) -> str:
    """The backend of a plan in words: how many instructions run in how many onnxruntime
    sessions (those of a region cut over the lanes counted once), or that the numpy executor
    runs (and why, when the self-test refused)."""
    regions = [s for s in fast if isinstance(s.kernel, RegionKernel)]
    verdict = selftest.known()
    if regions:
        covered = sum(len(s.covers) for s in regions)
        cut = [s.kernel for s in regions if isinstance(s.kernel, ChannelSplitKernel)]
        cut = f" ({len(cut)} cut by channels over {max(len(k.parts) for k in cut)} lanes)" \
            if cut else ""
        rest = ", the rest numpy" if covered < len(program.code) else ""
        return (f"onnxruntime ({verdict}): {covered} of {len(program.code)} instructions in "
                f"{len(regions)} session{'s' * (len(regions) > 1)}{cut}{rest}")
    return "numpy" if verdict is None or verdict.form is not None else f"numpy ({verdict})"


# ---------------------------------------------------------------------------------------------
# Selection and regions
# ---------------------------------------------------------------------------------------------

def _size(program: Program, ins) -> int:
    return max(program.tensors[i].size for i in (*ins.inputs, *ins.outputs)
               if i not in program.consts)


def _macs(program: Program, ins) -> int:
    weight = program.tensors[ins.inputs[1]]
    out = program.tensors[ins.outputs[0]]
    return out.size * weight.size // weight.shape[0]


def select(facts: Facts, policy: Policy) -> set[int]:
    """The instructions to lower (see the module doc)."""
    program, chosen, layout = facts.program, set(), []
    for k, ins in enumerate(program.code):
        rule = RULES.get(ins.op)
        if rule is None:
            continue
        if _wanted(program, ins, policy) and rule[0](facts, k) or \
                ins.op == "requantize" and _small_table(facts, k, policy):
            chosen.add(k)
        elif ins.op in LAYOUT_OPS and rule[0](facts, k):
            layout.append(k)
    chosen -= _over_weight_budget(program, chosen)
    chosen -= _requantized_luts(program, chosen)
    if not any(program.code[k].op in LINEAR for k in chosen) and \
            not policy.whole <= len(chosen) == len(program.code) <= policy.whole_max:
        return set()              # no GEMM to speed up, nor many steps to save: numpy
    neighbours, layout, todo = _neighbours(program), set(layout), list(chosen)
    while todo:                   # layout ops join the regions they touch
        for j in neighbours[todo.pop()]:
            if j in layout and j not in chosen:
                chosen.add(j)
                todo.append(j)
    return chosen - _lone_tables(program, chosen, policy)


def _lone_tables(program: Program, chosen: set[int], policy: Policy) -> set[int]:
    """The runs of chosen instructions that are luts (and layout ops) alone, on more than
    ``small`` elements: a session of luts only costs more than numpy's prepared lookups (its
    results leave it as copies: YOLOv8n's three 16x80x80 activations, 0.35-0.41 ms in a
    session, 0.08-0.10 ms each in numpy)."""
    lone = set()
    for run in runs(chosen):
        ops_ = {program.code[k].op for k in run}
        if "lut" in ops_ and ops_ <= {"lut", *LAYOUT_OPS} and \
                max(_size(program, program.code[k]) for k in run) > policy.small:
            lone.update(run)
    return lone


def const_bytes(program: Program) -> int:
    """The bytes of the program's constants: what the weights a plan lowers and the tables it
    makes at load are measured against (a load stays linear in the model's size)."""
    return sum(a.nbytes for a in program.consts.values())


def _over_weight_budget(program: Program, chosen: set[int]) -> set[int]:
    """The chosen GEMMs past the weight budget: a session holds its own copy of each weight
    its nodes read (converted, and prepacked by onnxruntime), so the weights of lowered GEMMs
    may add up to the program's constant bytes at most, in program order; a weight that many
    instructions share would otherwise multiply a load's memory by their number. Those past
    it run on numpy, which prepares a shared weight once."""
    consts, budget, over = program.consts, const_bytes(program), set()
    for k in sorted(chosen):
        ins = program.code[k]
        if ins.op in LINEAR and ins.inputs[1] in consts:
            cost = consts[ins.inputs[1]].nbytes
            if cost > budget:
                over.add(k)
            else:
                budget -= cost
    return over


def _requantized_luts(program: Program, chosen: set[int]) -> set[int]:
    """The chosen luts that read the result of a requantize left to numpy, and nothing else
    does: the fusion pass runs the two as one pass over the tensor (vm/fusion.lut_tails),
    faster than the lut in the next session (the PP-OCRv4 detector's slice: 25 against 29
    ms)."""
    readers, producer = readers_of(program), {}
    for k, ins in enumerate(program.code):
        for t in ins.outputs:
            producer[t] = k
    found = set()
    for k in chosen:
        ins = program.code[k]
        if ins.op != "lut" or len(ins.inputs) != 2:
            continue
        t = ins.inputs[1]
        p = producer.get(t)
        if p is not None and p not in chosen and program.code[p].op == "requantize" and \
                readers[t] == [k] and t not in program.outputs:
            found.add(k)
    return found


def _small_table(facts: Facts, k: int, policy: Policy) -> bool:
    """Whether requantize k, beyond ``small_requantize`` elements but within ``small``, lowers
    to a lookup in a table of at most ``small_table`` bytes (or to an exact multiply)."""
    program = facts.program
    if not policy.small_requantize < _size(program, program.code[k]) <= policy.small:
        return False
    kind = requantize_kind(facts, k)
    return kind == "multiply" or \
        kind == "table" and requantize_table_bytes(facts, k) <= policy.small_table


def _wanted(program: Program, ins, policy: Policy) -> bool:
    """Whether lowering ``ins`` pays, if its rule takes it."""
    if ins.op not in RULES or (policy.small < 0 and ins.op not in LINEAR) or \
            any(program.tensors[i].size == 0 for i in ins.inputs):
        return False
    size = _size(program, ins)
    if ins.op == "lut" and policy.tables and len(ins.inputs) == 2:
        return True
    if ins.op == "requantize":
        return size <= policy.small_requantize
    if ins.op in LINEAR:
        grouped = policy.grouped and ins.op.endswith("conv2d") and ins.attrs["groups"] != 1
        return size <= policy.small or grouped or _macs(program, ins) >= policy.min_macs
    return size <= policy.small


def _neighbours(program: Program) -> dict[int, set[int]]:
    producer = {t: k for k, ins in enumerate(program.code) for t in ins.outputs}
    out = defaultdict(set)
    for k, ins in enumerate(program.code):
        for t in ins.inputs:
            if t in producer:
                out[k].add(producer[t])
                out[producer[t]].add(k)
    return out


def _internal(program: Program, regions: list[list[int]]) -> set[int]:
    """Tensors written and read only inside one region: their layout is the region's choice
    (rules.Region keeps each value in the layout it was made in), never forced."""
    region_of = {k: n for n, run in enumerate(regions) for k in run}
    touches = defaultdict(set)
    for k, ins in enumerate(program.code):
        for t in (*ins.inputs, *ins.outputs):
            touches[t].add(region_of.get(k, -1))
    outputs = set(program.outputs)
    return {t for t, where in touches.items()
            if len(where) == 1 and -1 not in where and t not in outputs}


REGION_MAX = 512
"""Instructions in one onnxruntime session at most: a session's setup grows faster than its
node count (1.0 s at 30,000 nodes), so longer runs are cut and load stays linear."""


def runs(lowered: set[int], longest: int = REGION_MAX) -> list[list[int]]:
    """Maximal runs of consecutive instruction indices, cut every ``longest``."""
    out = []
    for k in sorted(lowered):
        if out and out[-1][-1] == k - 1 and len(out[-1]) < longest:
            out[-1].append(k)
        else:
            out.append([k])
    return out


# ---------------------------------------------------------------------------------------------
# Layout: which tensors are held channels last
# ---------------------------------------------------------------------------------------------

def _transparent(program: Program, ins) -> bool:
    if ins.op == "lut":                  # elementwise in its data, the table is no array axis
        data = [i for i in ins.inputs[1:] if i not in program.consts]
        return ins.inputs[0] in program.consts and len(data) == len(ins.inputs) - 1 and \
            all(len(program.tensors[i].shape) == 4 for i in (*data, *ins.outputs))
    if ins.op in SELECTIONS:
        a = ins.attrs
        return all(len(program.tensors[i].shape) == 4 for i in (*ins.inputs, *ins.outputs)) \
            and not any(i in program.consts for i in ins.inputs) and (
                ins.op == "concatenate" or len(a["begin"]) == len(a["end"]) == 4 and
                len(a["stride"]) in (0, 4))
    return ins.op in TRANSPARENT and _one_4d_shape(program, (*ins.inputs, *ins.outputs)) and \
        not any(i in program.consts for i in ins.inputs)


def _one_4d_shape(program: Program, tensors) -> bool:
    shapes = {program.tensors[i].shape for i in tensors}
    return len(shapes) == 1 and len(next(iter(shapes))) == 4


def held_layouts(facts: Facts, lowered: set[int]) -> dict[int, str]:
    """{tensor: layout} of the 4-D tensors held in a plan layout and dtype (Facts.dtype): every
    numpy step touching them is transparent (with all its tensors held too), and their group
    touches a lowered convolution. ``nhwc`` (channels last) when a MatMulInteger convolution,
    which reads and writes channels last, writes into the group, or reads it and no
    ConvInteger one (``direct``, NCHW) writes into it; else ``nchw``: the transpose is then
    left to a consumer that needs it, on bytes rather than on an int32 accumulator (the
    YOLOv8n and PP-OCR stems' 3-channel ConvIntegers feed MatMulInteger convolutions)."""
    program = facts.program
    held = _held(program, lowered)
    convs = {k for k in lowered if program.code[k].op in ("conv2d", "qconv2d")}
    matmul = {k for k in convs if not linear_parts(facts, k)[5]}
    touch, layouts = _touches(program), {}
    for t in held:
        if t in layouts:
            continue
        group, touching = _group(t, held, touch, program, lowered)
        if not touching & convs:
            continue
        writers = {k for k in touching & convs if group.intersection(program.code[k].outputs)}
        how = "nhwc" if writers & matmul or not writers and touching & matmul else "nchw"
        layouts.update(dict.fromkeys(group, how))
    return layouts


BYTE_SAFE = (*TRANSPARENT, *SELECTIONS, "lut", "upsampling", "max_pool2d", "sum_pool2d",
             "qavg_pool2d", "qsoftmax", "qmatmul", "qconv2d", "qconv2d_transpose", "reshape",
             "flatten", "expand_dims", "squeeze", "transpose")
"""Ops whose numpy kernels read integer data of any dtype exactly (they widen it before any
arithmetic, or only select and compare it; max_pool2d pads with the dtype's minimum, which
no window's maximum is below) and whose results the executor narrows to any dtype their range
fits: a tensor that only these read and write on the numpy side may be held in bytes, in its
own layout."""


def byte_held(facts: Facts, lowered: set[int], inside: set[int]) -> list[int]:
    """The 4-D value tensors, beyond those held in a layout group, held in bytes between
    steps (NCHW, as made): their proven range fits a byte and every numpy step touching
    them is in :data:`BYTE_SAFE` (a lut's constant table not among them); ``lowered``: the
    instructions that run in sessions (a region none of whose results is read runs none).
    The PP-OCRv4 detector's neck (pooled and upsampled maps, their sums with the lateral
    maps, the squeeze-and-excitation inputs), held in int32, made its tables gather from
    int32 and its sessions take four bytes a value: the whole model 236 to 206 ms."""
    program = facts.program
    touch, outputs = _touches(program), set(program.outputs)

    def safe(k: int, t: int) -> bool:
        ins = program.code[k]
        return k in lowered or ins.op in BYTE_SAFE and (
            ins.op != "lut" or ins.inputs[0] in program.consts and t != ins.inputs[0])
    return [t for t, tensor in enumerate(program.tensors)
            if tensor.kind == "value" and len(tensor.shape) == 4 and t not in outputs and
            t not in facts.layout and t not in inside and
            facts.byte(t) is not None and all(safe(k, t) for k in touch[t])]


def _touches(program: Program) -> dict[int, list[int]]:
    touch = defaultdict(list)
    for k, ins in enumerate(program.code):
        for t in (*ins.inputs, *ins.outputs):
            touch[t].append(k)
    return touch


def _held(program: Program, lowered: set[int]) -> set[int]:
    """4-D value tensors every numpy step of which is transparent, with all its tensors in
    the set too."""
    touch = _touches(program)
    outputs = set(program.outputs)
    held = {t for t, tensor in enumerate(program.tensors)
            if tensor.kind == "value" and len(tensor.shape) == 4 and t not in outputs and
            all(k in lowered or _transparent(program, program.code[k]) for k in touch[t])}
    changed = True
    while changed:
        changed = False
        for k, ins in enumerate(program.code):
            tensors = {i for i in ins.inputs if i not in program.consts} | set(ins.outputs)
            if k not in lowered and tensors & held and not tensors <= held:
                held -= tensors
                changed = True
    return held


def _group(t, held, touch, program, lowered) -> tuple[set[int], set[int]]:
    """(the group of ``t``: held tensors linked through numpy steps, the lowered instructions
    touching it)."""
    seen, todo, lowered_touching = {t}, [t], set()
    while todo:
        u = todo.pop()
        for k in touch[u]:
            if k in lowered:
                lowered_touching.add(k)
                continue
            for v in (*program.code[k].inputs, *program.code[k].outputs):
                if v in held and v not in seen:
                    seen.add(v)
                    todo.append(v)
    return seen, lowered_touching


@dataclass(frozen=True)
class Held(Tensor):
    """A tensor of the twin program: in the layout and the dtype the plan holds it in."""

    held: np.dtype = np.dtype(np.int32)

    @property
    def dtype(self) -> np.dtype:
        return self.held


def twin_program(program: Program, facts: Facts) -> Program:
    """``program`` with the channels-last tensors' shapes permuted, the held tensors in their
    plan dtype (Facts.dtype), and the per-channel axis of the numpy steps reading them moved: the
    same function on permuted arrays."""
    layout = facts.layout
    if not layout:
        return program
    order = lambda k, shape: tuple(shape[i] for i in NHWC) if layout[k] == "nhwc" else shape
    tensors = [Held(t.name, order(k, t.shape), t.precision, t.kind, facts.dtype(k))
               if k in layout else t for k, t in enumerate(program.tensors)]
    code = []
    for ins in program.code:
        if ins.op == "requantize" and layout.get(ins.inputs[0]) == "nhwc":
            ins = Instr(ins.op, ins.inputs, ins.outputs,
                        dict(ins.attrs, axis=NHWC.index(ins.attrs["axis"])))
        elif ins.op in SELECTIONS and layout.get(ins.outputs[0]) == "nhwc":
            ins = Instr(ins.op, ins.inputs, ins.outputs, _permuted(ins.op, ins.attrs))
        code.append(ins)
    return replace(program, tensors=tensors, code=code)


def _permuted(op: str, a: dict) -> dict:
    """A selection's attributes for channels-last arrays (:data:`SELECTIONS`)."""
    if op == "concatenate":
        return dict(a, axis=NHWC.index(a["axis"] % 4))
    return {**a, **{k: tuple(a[k][i] for i in NHWC) for k in ("begin", "end", "stride")
                    if a[k]}}


def _rebind(step, twin: Program, k: int, analysis, changed: bool):
    """Instruction k's step for the twin program: the dtypes its outputs are held in and, where
    the instruction ``changed`` (a moved axis), its attributes."""
    ins = twin.code[k]
    dtypes = tuple(twin.tensors[i].dtype for i in ins.outputs)
    if dtypes != step.dtypes:
        step = replace(step, dtypes=dtypes)
    if not changed:
        return step
    kwargs = dict(ins.attrs)
    if step.index in analysis.gemm:
        kwargs["gemm"] = analysis.gemm[step.index]
    return replace(step, kwargs=kwargs)


# ---------------------------------------------------------------------------------------------
# Region steps
# ---------------------------------------------------------------------------------------------

def _footprint(program: Program, ins) -> int:
    """Elements of the largest array a lowered instruction makes: its tensors, a linear op's
    im2col (output pixels x taps x channels)."""
    size = max(program.tensors[t].size for t in (*ins.inputs, *ins.outputs))
    if ins.op in LINEAR:
        weight, out = program.tensors[ins.inputs[1]], program.tensors[ins.outputs[0]]
        size = max(size, out.size // weight.shape[0] * (weight.size // weight.shape[0]))
    return size


def _session_threads(program: Program, run: list[int], footprint: int,
                     threads: int | None) -> int | None:
    """The intra-op threads of the session of ``run``: the plan's, or one where its work is
    small (:data:`THREADED_MACS`, :data:`THREADED_SIZE`) or a grouped convolution's.
    onnxruntime's grouped ConvInteger multiplies group by group, each product too small to
    share: a second thread only costs (the PP-OCRv4 detector's depthwise 16x320x320 session
    2.56 ms on two threads, 1.86 on one; 48x160x160 1.67 and 1.41)."""
    linear = [program.code[k] for k in run if program.code[k].op in LINEAR]
    if any(ins.attrs.get("groups", 1) != 1 for ins in linear):
        macs = sum(_macs(program, ins) for ins in linear if ins.attrs.get("groups", 1) == 1)
        return threads if macs >= THREADED_MACS else 1
    macs = sum(_macs(program, ins) for ins in linear)
    return threads if macs >= THREADED_MACS or footprint >= THREADED_SIZE else 1


def _exports(facts: Facts, run: list[int]) -> list[int]:
    """The results of instructions ``run`` read after it (the program's outputs included)."""
    last_use = facts.analysis.last_use         # len(code) for the program's outputs
    return [t for k in run for t in facts.program.code[k].outputs if last_use[t] > run[-1]]


def region_step(facts: Facts, twin: Program, run: list[int], threads: int | None):
    """The Step running instructions ``run`` as one onnxruntime session (None when none of
    their results is used); with a guarded variant when a program input the region reads
    would be split into two bytes by a convolution but may well hold bytes."""
    program = facts.program
    exports = _exports(facts, run)
    if not exports:
        return None
    wide = {program.code[k].inputs[0] for k in run if program.code[k].op in LINEAR and
            (parts := linear_parts(facts, k)) is not None and parts[4]}
    wide = {t: (0, 255) for t in wide if program.tensors[t].kind == "input"
            if facts.range(t)[0] < 0 <= 255 <= facts.range(t)[1]}
    footprint = max(_footprint(program, program.code[k]) for k in run)
    arena = footprint >= ARENA_SIZE
    cuts = None if wide else _channel_cuts(facts, run, exports, threads)
    if cuts:
        step = _split_step(facts, twin, run, cuts, arena)
        if step is not None:
            return step
    region, model = _region_model(facts, run, exports)
    threads = _session_threads(program, run, footprint, threads)
    kernel = RegionKernel(sessions.session(model, threads, region.g.externals, arena,
                                           bool(region.g.derived)),
                          [n for _, _, n in region.inputs], [region.g.externals], region.flips)
    assumed = facts.assuming(wide)
    if wide and all(RULES[program.code[k].op][0](assumed, k) for k in run):
        narrow, model2 = _region_model(assumed, run, exports)
        if [t for t, _, _ in narrow.inputs] == [t for t, _, _ in region.inputs]:
            position = {t: n for n, (t, _, _) in enumerate(region.inputs)}
            kernel.guard([position[t] for t in wide],
                         sessions.session(model2, threads, narrow.g.externals, arena,
                                          bool(narrow.g.derived)),
                         narrow.g.externals, narrow.flips)
    inputs = tuple(t for t, _, _ in region.inputs)
    return Step(run[0], kernel, inputs, tuple(exports),
                tuple(twin.tensors[t].dtype for t in exports), {}, (), tuple(run))


def _channel_cuts(facts: Facts, run: list[int], exports: list[int],
                  threads: int | None) -> list[tuple[int, int]] | None:
    """The channel ranges, one per lane, of a region that is one depthwise convolution (one
    input channel per group, multiplier 1) of one image, of at least THREADED_MACS
    multiply-adds, whose result is held NCHW (each lane's channels a contiguous block of
    it); else None. See ChannelSplitKernel."""
    program = facts.program
    ins = program.code[run[0]]
    if threads is None or threads < 2 or len(run) != 1 or ins.op not in LINEAR:
        return None
    x, weight = program.tensors[ins.inputs[0]], program.consts.get(ins.inputs[1])
    if weight is None or weight.ndim != 4 or x.shape[0] != 1 or \
            ins.attrs.get("groups", 1) != x.shape[1] or weight.shape[:2] != (x.shape[1], 1) or \
            exports != [ins.outputs[0]] or facts.layout.get(ins.outputs[0]) == "nhwc" or \
            _macs(program, ins) < THREADED_MACS:
        return None
    channels, parts = x.shape[1], min(threads, x.shape[1])
    bounds = [channels * j // parts for j in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def _channels(facts: Facts, k: int, start: int, stop: int) -> Facts:
    """The facts of a program whose depthwise convolution k computes channels [start, stop)
    alone: its input, output, weight and bias cut; every proven range as before (a range of
    the whole tensor bounds its part)."""
    program = facts.program
    ins = program.code[k]
    tensors, consts, count = list(program.tensors), dict(program.consts), stop - start
    for t in ins.inputs:                                  # data, weight, bias
        axis = 1 if t == ins.inputs[0] else 0
        if t in consts:
            consts[t] = consts[t][(slice(None),) * axis + (slice(start, stop),)]
        shape = list(tensors[t].shape)
        shape[axis] = count
        tensors[t] = replace(tensors[t], shape=tuple(shape))
    out = ins.outputs[0]
    tensors[out] = replace(tensors[out], shape=(1, count, *tensors[out].shape[2:]))
    code = list(program.code)
    code[k] = replace(ins, attrs={**ins.attrs, "channels": count, "groups": count})
    part = copy.copy(facts)
    part.program, part.cache = replace(program, tensors=tensors, consts=consts, code=code), {}
    return part


def _split_step(facts: Facts, twin: Program, run: list[int], cuts, arena: bool):
    """The Step of a ChannelSplitKernel for the depthwise convolution ``run`` (None when a
    part does not lower)."""
    k, parts, constants = run[0], [], []
    ins = facts.program.code[k]
    for start, stop in cuts:
        part = _channels(facts, k, start, stop)
        if not RULES[ins.op][0](part, k):
            return None
        region, model = _region_model(part, run, list(ins.outputs))
        if len(region.inputs) != 1:
            return None
        constants.append(region.g.externals)
        parts.append((sessions.session(model, 1, region.g.externals, arena,
                                       bool(region.g.derived)), start, stop))
    out = ins.outputs[0]
    axis = 3 if facts.layout.get(ins.inputs[0]) == "nhwc" else 1
    kernel = ChannelSplitKernel(parts, axis, facts.program.tensors[out].shape,
                                facts.dtype(out), constants)
    return Step(k, kernel, (ins.inputs[0],), (out,), (twin.tensors[out].dtype,), {}, (),
                tuple(run))


def _region_model(facts: Facts, run: list[int], exports: list[int]):
    """(Region, ModelProto bytes) of instructions ``run``."""
    region = Region(facts, facts.form)
    for k in run:
        RULES[facts.program.code[k].op][1](region, k)
    return region, region.model([(t, facts.layout.get(t, "nchw")) for t in exports])
