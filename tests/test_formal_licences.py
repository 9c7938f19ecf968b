"""Certificate obligations of the CPU executor's licences (verify/licences.py): float32 chunks,
the nonnegative bound, the offset row, Winograd F(2x2, 3x3), float requantize, joined residual
adds; tampered licence claims are never proved."""
from __future__ import annotations

import numpy as np
import pytest

import vm
from compiler import Builder
from ops import gemm, winograd

pytest.importorskip("z3")
import verify  # noqa: E402
from verify.smt2 import run_z3  # noqa: E402


def conv_model(c=128, relu=False, shape=(4, 4), kernel=3, signs_seed=0, oc=2, bias=True):
    """x (p8) [-> relu] -> conv2d with weights +-127 (random signs) [+ bias] -> shift."""
    rng = np.random.default_rng(signs_seed)
    b = Builder("licences")
    x = b.input("x", (1, c, *shape), 8)
    if relu:
        x = b.op("relu", x)
    w = b.const("w", 127 * rng.choice([-1, 1], (oc, c, kernel, kernel)), precision=8)
    args = [x, w] + ([b.const("b", rng.integers(-100, 101, (oc,)), precision=8)] if bias else [])
    y = b.op("conv2d", *args, channels=oc, kernel_size=(kernel, kernel),
             padding=(kernel // 2, kernel // 2), use_bias=bias)
    b.output(b.op("cvm_right_shift", y, precision=8, shift_bit=16))
    return vm.load(b.build())


def licence_obs(cert, kind=""):
    return [ob for ob in cert.obligations if ob.name.startswith("licence[") and kind in ob.name]


def assert_proved(cert):
    assert cert.proved, [(o.name, o.status, o.detail) for o in cert.obligations
                         if o.status != "proved"]


def test_float32_chunks_are_certified():
    model = conv_model()
    lic = model.analysis.licences[0]
    assert lic.dtype == "float32" and len(lic.splits) > 2 and lic.whole >= 1 << 24
    cert = verify.certify(model)
    assert_proved(cert)
    (ob,) = licence_obs(cert, "float32 chunks")
    assert ob.name == "licence[0] conv2d %conv2d_0: float32 chunks 1035+117"
    assert ob.facts["chunk_bound"] <= lic.bound < 1 << 24 and ob.facts["whole"] == lic.whole
    (off,) = licence_obs(cert, "offset")
    assert "float64 offset on the sum of chunks" in off.name
    assert run_z3(ob.smt2(cert.model)) == "unsat"


def test_relu_fed_conv_gets_the_nonnegative_bound():
    model = conv_model(relu=True)
    lic = model.analysis.licences[1]
    assert lic.splits == (0, 128)                       # one chunk thanks to x >= 0
    cert = verify.certify(model)
    assert_proved(cert)
    (ob,) = licence_obs(cert, "float32 whole")
    assert ob.facts["chunk_bound"] == lic.bound < 1 << 24
    (relu,) = [o for o in cert.obligations if o.name.startswith("no_overflow[0] relu")]
    assert ">= 0" in relu.note and "(< y 0)" not in relu.smt2(cert.model)
    assert any(o.startswith("licence[1] conv2d") and "offset row, weights x 2^-16" in o
               for o in (x.name for x in cert.obligations))


def test_winograd_is_certified_and_exported(tmp_path):
    model = conv_model(c=8, shape=(24, 24), oc=4)
    cert = verify.certify(model)
    assert_proved(cert)
    names = [ob.name for ob in cert.obligations]
    assert "lemma:winograd" in names
    (ob,) = licence_obs(cert, "winograd")
    assert ob.name == "licence[0] conv2d %conv2d_0: winograd F(2x2,3x3) 1 chunks"
    lic = model.analysis.winograd[0]
    assert ob.facts["chunk_bound"] <= lic.chunk_bound and ob.facts["out_bound"] <= lic.out_bound
    path = tmp_path / "w.dvm"
    path.write_bytes(vm.encode(model.program))
    cert.write(tmp_path / "w.dvm.cert")
    report = verify.check_certificate(tmp_path / "w.dvm.cert", vm.load(path), solvers=["z3"])
    assert report.ok, (report.problems, [(f.file, f.problem) for f in report.files if not f.ok])
    assert vm.load(path, require_certificate=True).hash == cert.model
    pytest.importorskip("cvc5")                   # the lemma's file is standard SMT-LIB too
    lemma = next(p for p in (tmp_path / "w.dvm.cert").glob("*lemma_winograd.smt2"))
    from verify.smt2 import run_cvc5
    assert run_cvc5(lemma.read_text()) == "unsat"


def test_float_requantize_is_certified():
    b = Builder("rq")
    x = b.input("x", (2, 3), 16)
    b.output(b.op("requantize", x, multiplier=[3], shift=[4], zero_point=0, qmin=-127,
                  qmax=127, rounding="half_up"))
    cert = verify.certify(vm.load(b.build()))
    assert_proved(cert)
    (ob,) = licence_obs(cert, "float requantize (half_up)")
    assert "M <= 3" in ob.detail


def test_licences_rest_on_their_lemmas():
    cert = verify.certify(conv_model(c=8, shape=(24, 24), oc=4), rlimit=1)
    obs = licence_obs(cert)
    assert obs and all(ob.status == "unknown" for ob in obs)


# ---------------------------------------------------------------------------------------------
# Seeded bugs: tampered licence claims are never proved
# ---------------------------------------------------------------------------------------------

def test_a_false_float32_licence_is_not_proved(monkeypatch):
    """The licence computation claims one float32 GEMM where the bound exceeds 2^24."""
    def lying(weight, x_bound, nonneg=False):
        return gemm.GemmLicence("float32", (0, weight.shape[1]), 1 << 20, 1 << 20)
    monkeypatch.setattr(gemm, "licence", lying)
    model = conv_model()
    assert model.analysis.licences[0].splits == (0, 128)
    cert = verify.certify(model)
    (ob,) = licence_obs(cert, "float32 whole")
    assert ob.status == "unknown" and "not licensed" in ob.detail and not cert.proved
    assert ob.facts["chunk_bound"] >= 1 << 24
    assert run_z3(ob.smt2(cert.model)) == "sat"        # the file refutes the claim too
    assert [o.status for o in licence_obs(cert, "offset")] == ["unknown"]


def test_a_tampered_winograd_licence_is_not_proved(monkeypatch):
    real = winograd.licence

    def lying(weight, x_bound):
        lic = real(weight, x_bound)
        return winograd.WinogradLicence(lic.chunks, lic.chunk_bound, lic.out_bound, lic.u * 2)
    monkeypatch.setattr(winograd, "licence", lying)
    cert = verify.certify(conv_model(c=8, shape=(24, 24), oc=4))
    (ob,) = licence_obs(cert, "winograd")
    assert ob.status == "unknown" and "U = D G g G^T" in ob.detail
    assert run_z3(ob.smt2(cert.model)) == "sat"


def residual_model(other_precision=8):
    """x -> conv2d -> shift (p8) -> + y (p``other_precision``) -> shift -> relu, on the numpy
    executor (whose joins these licences cover)."""
    rng = np.random.default_rng(3)
    b = Builder("residual")
    x = b.input("x", (1, 4, 6, 6), 8)
    y = b.input("y", (1, 4, 6, 6), other_precision)
    w = b.const("w", rng.integers(-127, 128, (4, 4, 3, 3)), precision=8)
    z = b.op("cvm_right_shift", b.op("conv2d", x, w, channels=4, kernel_size=(3, 3),
                                     padding=(1, 1), use_bias=False), precision=8, shift_bit=8)
    s = b.op("cvm_right_shift", b.op("elemwise_add", z, y), precision=8, shift_bit=1)
    b.output(b.op("relu", s))
    return vm.load(b.build(), vm.cpu(backend="numpy"))


def test_residual_join_is_certified():
    model = residual_model()
    assert getattr(model.plan.fast[0].kernel, "residual", None) is not None
    cert = verify.certify(model)
    assert_proved(cert)
    (ob,) = licence_obs(cert, "residual add")
    assert "|q| <= 127" in ob.detail


def test_no_residual_obligation_where_the_executor_does_not_join():
    """A shortcut of precision 26: float32 could not hold the sum, the executor keeps the
    integer add, and the certificate claims nothing about a float residual."""
    model = residual_model(other_precision=26)
    assert all(getattr(s.kernel, "residual", None) is None for s in model.plan.fast)
    assert not licence_obs(verify.certify(model), "residual add")


def test_a_false_residual_licence_is_not_proved(monkeypatch):
    """The fusion pass claims a float32 residual for a p26 shortcut."""
    from ops.tails import Residual
    from vm import fusion
    monkeypatch.setattr(fusion, "residual_licence",
                        lambda program, head, group, tail, other: Residual("add", True, tail))
    cert = verify.certify(residual_model(other_precision=26))
    (ob,) = licence_obs(cert, "residual add")
    assert ob.status == "unknown" and "not licensed" in ob.detail and not cert.proved
    assert run_z3(ob.smt2(cert.model)) == "sat"
