"""``certify(model, input_domain)``: prove a model's obligations, cheapest first.

1. ``shapes``, ``io_lengths``: every tensor's shape and byte length; CVM input/output lengths
   and type sizes.  2. ``gas``, ``peak_memory``.  3. ``no_overflow[i]``: every intermediate
   stays within its declared precision and storage type, for every input of the domain
   (verify/bounds.py).  4. ``gemm_licence[i]``: the proven accumulator bound of each
   conv2d/dense and the exact path it allows.  5. ``licence[i]``: every exact path the CPU
   executor may take (float32 chunks, offset rows, Winograd, float requantize;
   verify/licences.py).

Each obligation ends ``proved``, ``counterexample`` (a witness input, replayed on the CPU
executor, really overflows) or ``unknown``; a failed lemma whose witness cannot be found or
confirmed is ``unknown``, never ``proved``. The library never prints: ``progress(done, total,
obligation)`` is called after each obligation.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ops.base import bound
from vm.encoding import encode, model_hash
from vm.errors import InvalidError
from vm.program import Program
from vm.memory import peak_memory
from vm.validate import _gas, _liveness, check_semantics

from . import batched
from . import obligations as static
from .bounds import Bounds
from .licences import Licences
from .smt2 import RLIMIT, run_z3, write_certificate
from .witness import replay, search


@dataclass
class Certificate:
    """The outcome of :func:`certify`: ``proved`` only when every obligation is proved."""

    model: str
    input_domain: dict
    obligations: list

    @property
    def proved(self) -> bool:
        return all(ob.status == "proved" for ob in self.obligations)

    def to_dict(self) -> dict:
        return {"model": self.model, "obligations": [ob.summary() for ob in self.obligations]}

    def write(self, directory):
        """Write the certificate directory (manifest + one SMT-LIB2 file per obligation)."""
        return write_certificate(self, directory)


def model_identity(model) -> str:
    """The model's hash: SHA-256 of its canonical .dvm bytes."""
    if isinstance(model, Program):
        return model_hash(encode(model))
    return model.hash


def _unpack(model):
    """(program, analysis or None, claimed io lengths) of a vm.Model or a bare Program."""
    if isinstance(model, Program):
        return model, None
    return model.program, model.analysis


def _check_structure(program: Program) -> None:
    """What any certificate presupposes (even of a program the validator would refuse):
    known ops, tensor ids in range, every input defined before its use."""
    check_semantics(program.semantics)
    defined = {i for i, t in enumerate(program.tensors) if t.kind != "value"}
    for index, ins in enumerate(program.code):
        if program.op(ins) is None:
            raise InvalidError(f"instruction {index}: unknown op {ins.op!r}")
        ids = (*ins.inputs, *ins.outputs)
        if not all(0 <= i < len(program.tensors) for i in ids) \
                or not set(ins.inputs) <= defined:
            raise InvalidError(f"instruction {index}: bad or undefined tensor ids")
        defined |= set(ins.outputs)
    if not set(program.outputs) <= defined:
        raise InvalidError("an output is never computed")


def _input_ranges(program: Program, input_domain) -> tuple[dict, dict]:
    """Tensor id -> (lo, hi) for every input; the domain must lie within the precision."""
    domain = dict(input_domain or {})
    names = {program.tensors[i].name: i for i in program.inputs}
    unknown = sorted(set(domain) - set(names))
    if unknown:
        raise InvalidError(f"input domain names unknown input {unknown[0]!r}")
    ranges, shown = {}, {}
    for name, i in names.items():
        r = bound(program.tensors[i].precision)
        lo, hi = (int(v) for v in domain.get(name, (-r, r)))
        if not -r <= lo <= hi <= r:
            raise InvalidError(f"input domain of {name!r} [{lo}, {hi}] is not inside its "
                               f"precision p{program.tensors[i].precision} ([{-r}, {r}]): "
                               "such inputs are refused at run time")
        ranges[i] = (lo, hi)
        if name in domain:
            shown[name] = [lo, hi]
    return ranges, shown


def _claims(program: Program, analysis) -> tuple[dict, int, int]:
    """The io lengths, gas and peak memory the VM reports (validator's figures)."""
    from vm.model import _type_size
    io = {}
    for kind, ids in (("input", program.inputs), ("output", program.outputs)):
        ts = [program.tensors[i] for i in ids]
        size = _type_size(t.precision for t in ts) if ts else 1
        io[f"{kind}_type_size"] = size
        io[f"{kind}_length"] = sum(t.size for t in ts) * size
    if analysis is not None:
        return io, analysis.gas, analysis.peak_memory
    return io, _gas(program), peak_memory(program, _liveness(program))


def certify(model, input_domain=None, *, progress: Callable | None = None,
            timeout_s: float | None = None, rlimit: int = RLIMIT,
            solve: bool = True) -> Certificate:
    """Prove the obligations of ``model`` (a vm.Model, or a Program, validated or not) for every
    input in ``input_domain`` ({input name: (lo, hi)}, default: each input's precision).

    ``solve=False`` only builds the obligations (their SMT-LIB2 text), as re-checking does.
    """
    program, analysis = _unpack(model)
    _check_structure(program)
    every_n = []
    if program.symbols:             # the instance for N = 1, and what holds for every N
        program, analysis, every_n = batched.at_one(model)
        for ob in every_n:
            ob.facts["symbolic"] = True
    ranges, shown = _input_ranges(program, input_domain)
    try:
        io, gas, peak = _claims(program, analysis)
    except Exception as e:            # a cost rule refusing an unvalidated program's shapes
        raise InvalidError(f"cannot state the model's gas: {type(e).__name__}: {e}") from None
    bounds = Bounds(program, ranges, analysis.gemm if analysis is not None else None)
    obs = [static.shapes(program), static.io_lengths(program, io), static.gas(program, gas),
           static.peak_memory(program, peak)] + bounds.obligations()
    if analysis is not None:                    # the executor's licences (validated models)
        obs += Licences(program, analysis, bounds.ranges).obligations()
    for ob in obs if every_n else ():
        ob.facts["rests_on"] = (*ob.facts.get("rests_on", ()), batched.RESTS_ON)
    obs = every_n + obs
    cert = Certificate(model_identity(model), shown, obs)
    if not solve:
        return cert
    cache: dict[str, tuple[str, str]] = {}
    lemmas: dict[str, bool] = {}
    for k, ob in enumerate(obs):
        start = time.perf_counter()
        status, detail = _decide(ob, cert.model, cache, rlimit, timeout_s)
        if status.startswith("counterexample"):
            status, detail = _confirm(ob, program, ranges, detail, rlimit, timeout_s)
        rests = ob.facts.get("rests_on", ())
        if ob.name.startswith("lemma:") or ob.name == batched.RESTS_ON:
            lemmas[ob.name] = status == "proved"
        elif ob.method == "exact" and ob.name.startswith(("no_overflow", "gemm_licence")):
            rests = (*rests, "lemma:linear_step")
        unproved = [name for name in rests if not lemmas.get(name, True)]
        if unproved and status == "proved":
            status, detail = "unknown", f"rests on {unproved[0]}, which is not proved"
        ob.status, ob.detail = status, detail
        ob.seconds = time.perf_counter() - start
        if progress:
            progress(k + 1, len(obs), ob)
    return cert


def _decide(ob, model: str, cache: dict, rlimit: int, timeout_s) -> tuple[str, str]:
    if ob.method == "exact":
        return ob.decide()
    if ob.decide is not None:                     # e.g. an instance too large to attempt
        return ob.decide()
    text = ob.smt2(model)
    key = hashlib.sha256(text.split("(set-logic", 1)[1].encode()).hexdigest()
    if key not in cache:
        answer = run_z3(text, rlimit, timeout_s)
        cache[key] = {"unsat": ("proved", "z3: unsat"),
                      "sat": ("counterexample?", "z3: sat on the lemma instance")}.get(
            answer, ("unknown", f"z3: {answer}"))
    return cache[key]


def _confirm(ob, program, ranges, detail, rlimit, timeout_s) -> tuple[str, str]:
    """Turn a failed lemma into a confirmed counterexample, or report unknown."""
    if detail.startswith("input-independent") or ob.facts.get("symbolic"):
        return "counterexample", detail
    index = int(ob.name.split("[", 1)[1].split("]", 1)[0])
    witness = search(program, index, ranges, rlimit, timeout_s)
    if witness is None:
        return "unknown", f"{detail}; no witness input found"
    confirmed, what = replay(program, witness, index)
    if not confirmed:
        return "unknown", f"{detail}; the witness did not replay: {what}"
    ob.witness = {k: v.tolist() for k, v in witness.items()}
    ob.replay = what
    return "counterexample", f"{detail}; witness replayed on cpu: {what}"


def summary_line(cert: Certificate) -> str:
    counts = {s: sum(ob.status == s for ob in cert.obligations) for s in static.STATUSES}
    return (f"model {cert.model}: {counts['proved']} proved, {counts['counterexample']} "
            f"counterexample, {counts['unknown']} unknown")


def as_arrays(witness: dict, program: Program) -> dict:
    """A counterexample's witness as storage-dtype arrays, by input name."""
    out = {}
    for i in program.inputs:
        t = program.tensors[i]
        out[t.name] = np.array(witness[t.name], dtype=t.dtype).reshape(t.shape)
    return out
