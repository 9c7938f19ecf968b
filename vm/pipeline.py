"""Pre- and post-processing models chained around a model: ``vm.load(m, pre=p, post=q)``.

Each stage is a validated :class:`vm.Model`; a stage's inputs are the previous stage's outputs
of the same names (or, when the names differ, taken in order, as MemryX chains its ports).
Connected tensors must have the same shape, the symbols of the two stages standing for the same
axis being one symbol of the pipeline (its maximum the smaller one), and a precision the next
stage accepts, so no value can trap between stages. Gas is the sum of the stages' gas; every
stage is bit-exact like any model, so the pipeline is too.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np

from .errors import InvalidError, TrapError
from .floatio import dequantize_outputs, quantize_inputs
from .model import Model
from .symbolic import Affine

ROLES = ("pre", "main", "post")


class Pipeline:
    """Stages run one after the other as one model: ``run``, ``run_many``, ``gas_for``..."""

    package = None
    """A :class:`vm.package.PackageInfo` when loaded from a package."""

    def __init__(self, stages: list[tuple[str, Model]]):
        if [r for r, _ in stages] != [r for r in ROLES if r in dict(stages)] or \
                "main" not in dict(stages):
            raise InvalidError("a pipeline is [pre,] main [, post]")
        self.stages = stages
        self.links = [_link(a, b, ra, rb) for (ra, a), (rb, b) in zip(stages, stages[1:])]
        self.rename = _symbols(stages, self.links)
        first, last = stages[0][1], stages[-1][1]
        self.inputs, self.outputs = first.inputs, last.outputs
        self.float_io = first.float_io
        self.symbols = {}
        for k, (_, m) in enumerate(stages):
            for s, n in m.symbols.items():
                name = self.rename[k][s]
                self.symbols[name] = min(n, self.symbols.get(name, n))
        digest = hashlib.sha256(b"detvm-pipeline/1")
        for role, m in stages:
            digest.update(role.encode() + b"\0" + bytes.fromhex(m.hash))
        self.hash = digest.hexdigest()

    # -- facts ------------------------------------------------------------------------------
    @property
    def model(self) -> Model:
        return dict(self.stages)["main"]

    @property
    def pre(self) -> Model | None:
        return dict(self.stages).get("pre")

    @property
    def post(self) -> Model | None:
        return dict(self.stages).get("post")

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def metadata(self) -> dict[str, str]:
        return self.model.metadata

    @property
    def gas_formula(self) -> Affine:
        """The sum of the stages' gas, affine in the pipeline's symbols."""
        total = Affine.of(0)
        for k, (_, m) in enumerate(self.stages):
            f = m.gas_formula
            total += Affine.of(f.const, {self.rename[k][s]: c for s, c in f.coeffs})
        return total

    @property
    def gas(self) -> int:
        """Gas at the symbols' maxima (an upper bound of every call)."""
        return self.gas_formula.at(self.symbols)

    def gas_for(self, **dims: int) -> int:
        return sum(m.gas_for(**self._stage_dims(k, dims)) for k, (_, m) in
                   enumerate(self.stages))

    @property
    def peak_memory(self) -> int:
        """The largest stage's peak memory at the maxima (stages run one after the other)."""
        return max(m.memory_for(**self._stage_dims(k, self.symbols))
                   for k, (_, m) in enumerate(self.stages))

    def dims(self, inputs: Any) -> dict[str, int]:
        return {self.rename[0][s]: n for s, n in self.stages[0][1].dims(inputs).items()}

    def _stage_dims(self, k: int, dims: Mapping[str, int]) -> dict[str, int]:
        unknown = sorted(set(dims) - set(self.symbols))
        if unknown:
            raise TrapError(f"unknown symbol {unknown[0]!r}")
        for s, n in dims.items():
            if not isinstance(n, (int, np.integer)) or not 1 <= n <= self.symbols[s]:
                raise TrapError(f"{s} = {n!r} outside [1, {self.symbols[s]}]")
        return {s: dims[p] for s, p in self.rename[k].items() if p in dims}

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: Any, float_io: bool = False,
            out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run every stage; ``float_io`` quantizes for the first stage and dequantizes the
        last stage's outputs; ``out`` are caller-owned buffers of the last stage's outputs."""
        if float_io and out:
            raise TrapError("out= holds integer outputs: it cannot be used with float_io")
        values = quantize_inputs(self.stages[0][1], inputs) if float_io else inputs
        for k, (_, m) in enumerate(self.stages):
            last = k == len(self.stages) - 1
            values = m.run(values if k == 0 else self.links[k - 1].feed(values),
                           out=out if last else None)
        return dequantize_outputs(self.stages[-1][1], values) if float_io else values

    def run_many(self, items, float_io: bool = False) -> list[dict[str, np.ndarray]]:
        """One output dict per item, each identical to ``run(item)`` (batched per stage)."""
        items = list(items)
        if float_io:
            items = [quantize_inputs(self.stages[0][1], i) for i in items]
        for k, (_, m) in enumerate(self.stages):
            items = m.run_many(items if k == 0 else [self.links[k - 1].feed(i) for i in items])
        if float_io:
            items = [dequantize_outputs(self.stages[-1][1], i) for i in items]
        return items

    def close(self) -> None:
        for _, m in self.stages:
            m.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        chain = " -> ".join(f"{r} {m.name!r}" for r, m in self.stages)
        return f"<detvm.Pipeline {self.hash[:12]}: {chain}, gas {self.gas_formula}>"


class _Link:
    """How stage b takes its inputs from stage a's outputs: b input name -> a output name."""

    def __init__(self, pairs: dict[str, str]):
        self.pairs = pairs

    def feed(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {b: outputs[a] for b, a in self.pairs.items()}


def _link(a: Model, b: Model, ra: str, rb: str) -> _Link:
    outs = {t.name: t for t in a.outputs}
    if all(t.name in outs for t in b.inputs):
        pairs = {t.name: t.name for t in b.inputs}
    elif len(a.outputs) == len(b.inputs):
        pairs = {t.name: o.name for t, o in zip(b.inputs, a.outputs)}
    else:
        raise InvalidError(f"{rb} model {b.name!r} takes {', '.join(t.name for t in b.inputs)}"
                           f"; {ra} model {a.name!r} gives {', '.join(outs)}: the names or "
                           "the counts must match")
    for t in b.inputs:
        o = outs[pairs[t.name]]
        if len(o.shape) != len(t.shape) or o.shape[1:] != t.shape[1:] or \
                isinstance(o.shape[0], str) != isinstance(t.shape[0], str) or \
                (not isinstance(t.shape[0], str) and o.shape[0] != t.shape[0]):
            raise InvalidError(f"{ra} output {o.name!r} {_dims(o.shape)} does not fit {rb} "
                               f"input {t.name!r} {_dims(t.shape)}")
        if o.precision > t.precision:
            raise InvalidError(f"{ra} output {o.name!r} p{o.precision} does not fit {rb} input "
                               f"{t.name!r} p{t.precision}: its values could trap")
    return _Link(pairs)


def _dims(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _symbols(stages, links) -> list[dict[str, str]]:
    """Per stage, its symbol -> the pipeline's symbol (connected symbols are one, named as in
    the earliest stage)."""
    rename = [dict() for _ in stages]
    for k, (_, m) in enumerate(stages):
        if k:
            a, b = stages[k - 1][1], m
            outs = {t.name: t for t in a.outputs}
            for t in b.inputs:
                o = outs[links[k - 1].pairs[t.name]]
                if t.symbol:
                    mapped = rename[k - 1][o.symbol]
                    if rename[k].setdefault(t.symbol, mapped) != mapped:
                        raise InvalidError(f"symbol {t.symbol} of stage {k} stands for two "
                                           "batches of the previous stage")
        for s in m.symbols:
            rename[k].setdefault(s, s if k == 0 else f"{s}#{k}")
    return rename
