"""Formal mode (Z3): op encodings, the formal executor, proof obligations, certificates.

* ``vm.load(model, vm.formal()).run(x)``: the formal executor (verify/executor.py) derives the
  output from the program's constraints and returns it only when proved unique.
* :func:`formal_run` returns the outputs and the :class:`~verify.executor.Proof`.
* :func:`certify` proves shapes, lengths, gas, memory, no overflow, the float-BLAS licences
  and the CPU executor's licences (verify/licences.py) for every input of the input domain
  (verify/certificate.py); certificates are SMT-LIB2 files
  (verify/smt2.py) re-checked (verify/recheck.py) by :func:`check_certificate`.

z3 is imported by the submodules only, never by ``import vm`` or ``import ops``.
"""
from __future__ import annotations

from vm import plugins


def formal_run(model, inputs, domain: str = "bv", timeout_s: float | None = None,
               mode: str = "steps"):
    """Run ``model`` (a vm.Model) formally on ``inputs``: ``({name: array}, Proof)``.

    ``mode="steps"`` proves one instruction at a time on its known inputs (verify/steps.py);
    ``"joint"`` derives the outputs from the constraints of the whole program and proves them
    unique jointly. When the proof is not ``proved`` the outputs are an empty dict.
    """
    from vm.errors import DetvmError
    from vm.executors import Context
    from vm.interp import Plan

    from .executor import FormalExecutor, solve
    executor = FormalExecutor(Context("formal"), domain, timeout_s, mode)
    feeds, dims = model._check_inputs(inputs)
    inst = model.instance(**dims)                     # the fixed-shape program of this call
    with executor.exclusive():                        # z3: one formal run at a time
        plan = Plan(inst.program, inst.analysis, executor)
        device = {inst.program.inputs[k]: executor.from_host(a) for k, a in enumerate(feeds)}
        try:
            values = plan.run(device)
        except DetvmError as e:                       # an instruction not proved unique
            if getattr(e, "proof", None) is None:
                raise
            return {}, e.proof
        arrays, proof = solve(values, timeout_s)
    if not proof.proved:
        return {}, proof
    return {t.name: a.astype(t.dtype) for t, a in zip(model.outputs, arrays)}, proof


def certify(model, input_domain=None, **options):
    """Prove the model's obligations; see :func:`verify.certify.certify`."""
    from .certificate import certify as run
    from .domains import Z3_LOCK
    with Z3_LOCK:
        return run(model, input_domain, **options)


def check_certificate(directory, model=None, **options):
    """Re-check a certificate directory; see :func:`verify.recheck.check_certificate`."""
    from .domains import Z3_LOCK
    from .recheck import check_certificate as run
    with Z3_LOCK:
        return run(directory, model, **options)


def require_certificate(model, directory) -> None:
    """Raise InvalidError unless ``directory`` holds a certificate of ``model`` (regenerated
    obligations equal its files) whose every obligation was proved and re-checks with z3."""
    import os

    from vm.errors import InvalidError

    from .recheck import check_certificate
    if directory is None or not os.path.isdir(directory):
        raise InvalidError(f"model {model.hash[:16]}...: no certificate"
                           + (f" at {directory}" if directory is not None else ""))
    from .domains import Z3_LOCK
    with Z3_LOCK:
        report = check_certificate(directory, model, solvers=["z3"])
    if not report.ok:
        first = report.problems[0] if report.problems else next(
            f"{f.file}: {f.problem}" for f in report.files if not f.ok)
        raise InvalidError(f"certificate {directory} fails: {first}")


def formal_executor(ctx):
    """The formal executor for ``ctx`` (``vm.formal()``): registered with vm (vm/plugins.py)."""
    from .executor import FormalExecutor
    return FormalExecutor(ctx)


plugins.register("executors", "formal", formal_executor)
plugins.register("certificates", "check", require_certificate)
