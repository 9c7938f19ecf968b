"""The formal mode on programs with symbols: certificates for every N up to the maximum (the
N = 1 instance's obligations resting on batch_parallel, gas and memory over an integer N),
re-checked and bound to the symbolic hash; the formal executor on an instance."""
from __future__ import annotations

import numpy as np
import pytest

import verify
import vm
from tests.test_symbolic_rules import X, small
from verify import batched
from vm.symbolic import Affine


@pytest.fixture(scope="module")
def model():
    return vm.load(small(limit=8))


def test_certificate_for_every_n(model, tmp_path):
    cert = verify.certify(model)
    names = [ob.name for ob in cert.obligations]
    assert names[:3] == ["batch_parallel", "gas_affine", "peak_memory_affine"]
    assert cert.proved and any(n.startswith("no_overflow") for n in names)
    assert cert.model == model.hash
    cert.write(tmp_path / "cert")
    report = verify.check_certificate(tmp_path / "cert", model)
    assert report.ok, report.problems
    other = vm.load(small(limit=9))                 # another maximum: another model
    assert not verify.check_certificate(tmp_path / "cert", other).ok


def test_a_wrong_affine_claim_is_a_counterexample(model):
    program = model.program
    good = batched.gas_affine(program, model.gas_formula)
    bad = batched.gas_affine(program, model.gas_formula + Affine.of(0, {"N": 1}))
    from verify.smt2 import run_z3
    assert run_z3(good.smt2(model.hash)) == "unsat"
    assert run_z3(bad.smt2(model.hash)) == "sat"
    env = model.memory_formula
    wrong = type(env)((env.pieces[0] + Affine.of(-1),))
    assert run_z3(batched.peak_memory_affine(program, wrong).smt2(model.hash)) == "sat"


def test_unproved_batch_rule_makes_the_rest_unknown(model, monkeypatch):
    monkeypatch.setattr(batched, "batch_parallel", lambda program: _unknown())
    cert = verify.certify(model)
    assert not cert.proved
    rest = [ob for ob in cert.obligations if ob.name.startswith("no_overflow")]
    assert rest and all(ob.status == "unknown" and "batch_parallel" in ob.detail for ob in rest)


def _unknown():
    from verify.obligations import Obligation
    return Obligation("batch_parallel", "exact", lambda: ([], ["true"]),
                      lambda: ("unknown", "not decided"))


def test_formal_executor_runs_an_instance(model):
    formal = vm.load(small(limit=8), vm.formal())
    x = X[:2, :, :, :]
    got, want = formal.run({"x": x}), model.run({"x": x})
    assert all(np.array_equal(got[k], want[k]) for k in want)
    outputs, proof = verify.formal_run(model, {"x": x})
    assert proof.proved and all(np.array_equal(outputs[k], want[k]) for k in want)
