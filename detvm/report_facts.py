"""The facts the HTML report shows (detvm/report.py renders them): per instruction, the proven
precision against its carrier, the accumulator against its exact device, gas, live memory, and
for an input the trace hashes and timings; the certificate's status."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from vm.listing import instruction_text
from vm.validate import GEMM_LIMITS, infer, op_gas

DEVICE_BITS = {name: limit.bit_length() - 1 for name, limit in GEMM_LIMITS} | {"int64": 63}
"""Magnitude bits an accumulator path holds exactly: float32 2^24, float64 2^53, int64 2^63."""


@dataclass
class Row:
    """One instruction of the report."""

    index: int
    op: str
    text: str
    outputs: list[str]
    shapes: list[tuple]
    declared: int           # the widest output's declared precision (bits, sign included)
    proven: int             # the precision its proven bound needs (the op's precision rule)
    carrier: int            # bits of its storage dtype
    gas: int
    live: int               # bytes of live tensors while it runs
    acc_bits: int | None = None     # magnitude bits of the proven accumulator bound
    acc_path: str | None = None     # the exact device licensed for it
    seconds: float | None = None
    hashes: list[str] = field(default_factory=list)

    @property
    def headroom(self) -> int:
        return self.carrier - self.proven

    @property
    def acc_limit(self) -> int | None:
        return None if self.acc_path is None else DEVICE_BITS[self.acc_path]


def rows(inst) -> list[Row]:
    """The report's rows for a model instance (``Model.instance(**dims)``)."""
    program, analysis = inst.program, inst.analysis
    t = program.tensors
    live = live_bytes(program, analysis.last_use)
    out = []
    for k, ins in enumerate(program.code):
        _, _, precs = infer(ins.op, [t[i].shape for i in ins.inputs],
                            [t[i].precision for i in ins.inputs], ins.attrs, program.semantics,
                            [program.consts.get(i) for i in ins.inputs])
        widest = max(range(len(ins.outputs)), key=lambda j: t[ins.outputs[j]].precision)
        acc = analysis.acc_bounds.get(k)
        out.append(Row(k, ins.op, instruction_text(program, ins),
                       [t[i].name for i in ins.outputs], [t[i].shape for i in ins.outputs],
                       t[ins.outputs[widest]].precision, precs[widest],
                       t[ins.outputs[widest]].dtype.itemsize * 8, op_gas(program, ins), live[k],
                       None if acc is None else int(acc).bit_length(), analysis.gemm.get(k)))
    return out


def live_bytes(program, last_use: list[int]) -> list[int]:
    """Bytes of live tensors while each instruction runs (its inputs, its outputs, everything
    still to be read; inputs and constants live from the start): the validator's live-tensor
    peak is the maximum (vm/memory.py; the peak memory adds the kernels' scratch)."""
    nbytes = [t.size * t.dtype.itemsize for t in program.tensors]
    live = sum(nbytes[i] for i, t in enumerate(program.tensors) if t.kind != "value")
    out = []
    for index, ins in enumerate(program.code):
        live += sum(nbytes[i] for i in ins.outputs)
        out.append(live)
        live -= sum(nbytes[i] for i in set(ins.inputs) | set(ins.outputs)
                    if last_use[i] == index and program.tensors[i].kind != "const")
    return out


def timings(model, feeds: dict, repeat: int) -> tuple[list[float], float]:
    """Median seconds of every instruction (the per-instruction path) and of a whole run (the
    executor's fastest path: fused steps on the CPU), over ``repeat`` runs after a warm-up."""
    model.run(feeds)
    per, whole = [], []
    for _ in range(repeat):
        stamps = [time.perf_counter()]
        model.run(feeds, trace=lambda step, values: stamps.append(time.perf_counter()))
        per.append([b - a for a, b in zip(stamps, stamps[1:])])
        start = time.perf_counter()
        model.run(feeds)
        whole.append(time.perf_counter() - start)
    return [statistics.median(s) for s in zip(*per)], statistics.median(whole)


@dataclass
class CertificateStatus:
    """What the report says about the model's certificate: ``source`` (a directory re-checked,
    proved now, or not checked), ``ok``, and one (name, status, seconds, detail) per item."""

    source: str
    ok: bool | None
    items: list[tuple[str, str, float, str]]
    seconds: float = 0.0


def certificate(model, directory: str | None, certify: bool) -> CertificateStatus:
    """Re-check ``directory`` when it holds a certificate, else prove the obligations now
    (``certify``), else report that nothing was checked."""
    start = time.perf_counter()
    if directory is not None and Path(directory).is_dir():
        from verify import check_certificate
        report = check_certificate(directory, model)
        items = [(f.name or f.file, "ok" if f.ok else "FAILS", 0.0,
                  ", ".join(f"{k} {v}" for k, v in f.answers.items()) + (
                      f" ({f.problem})" if f.problem else "")) for f in report.files]
        items += [("certificate", "FAILS", 0.0, p) for p in report.problems]
        return CertificateStatus(f"certificate {directory} re-checked", report.ok, items,
                                 time.perf_counter() - start)
    if not certify:
        return CertificateStatus("no certificate checked (--no-certify)", None, [])
    from verify import certify as prove
    cert = prove(model)
    items = [(ob.name, ob.status, ob.seconds, ob.detail) for ob in cert.obligations]
    return CertificateStatus("proved now (no certificate directory)", cert.proved, items,
                             time.perf_counter() - start)
