"""The shipped digits CNN (vm/models/digits.*, built by examples/train_digits.py)."""
from __future__ import annotations

import numpy as np
import pytest

import vm
from detvm.cli import main
from detvm.common import DEMO_DIR


@pytest.fixture(scope="module")
def shipped():
    model = vm.load(DEMO_DIR / "digits.dvm")
    return (model, dict(np.load(DEMO_DIR / "digits_inputs.npz")),
            dict(np.load(DEMO_DIR / "digits_expected.npz")))


def test_integer_only_program_with_float_boundary_metadata(shipped):
    model, _, _ = shipped
    meta = model.metadata
    assert meta["source"] == "onnx" and meta["requantize.rounding"] == "fp32"
    assert meta["input.image.dtype"] == "int8" and "output.logits.scale" in meta
    assert {i.op for i in model.program.code} >= {"qconv2d", "requantize", "qdense"}
    assert all(c.dtype.kind == "i" for c in model.program.consts.values())


def test_expected_bytes_on_cpu_and_reference(shipped):
    model, data, expected = shipped
    ref = vm.load(DEMO_DIR / "digits.dvm", vm.reference())
    for m in (model, ref):
        out = m.run({"image": data["image"]})
        assert out["logits"].tobytes() == expected["logits"].tobytes()


def test_float_io_quantizes_and_dequantizes(shipped):
    model, data, expected = shipped
    logits = model.run({"image": data["image_float"]}, float_io=True)["logits"]
    scale = np.float32(float(model.metadata["output.logits.scale"]))
    zero = np.float32(int(model.metadata["output.logits.zero_point"]))
    assert logits.dtype == np.float32
    assert np.array_equal(logits, (expected["logits"].astype(np.float32) - zero) * scale)
    assert (logits.argmax(1) == data["label"]).all()


def test_certificate_proves_every_obligation(shipped):
    import verify
    cert = verify.certify(shipped[0])
    assert cert.proved


def test_demo_prints_labels_and_matches(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "digits-cnn" in out and "(label " in out and "matches the expected bytes" in out


def test_cli_run_float_io(tmp_path, capsys, shipped):
    model, data, expected = shipped
    np.save(tmp_path / "x.npy", data["image_float"])
    assert main(["run", str(DEMO_DIR / "digits.dvm"), "--input", str(tmp_path / "x.npy"),
                 "--float-io", "-o", str(tmp_path / "y.npz")]) == 0
    logits = np.load(tmp_path / "y.npz")["logits"]
    assert logits.dtype == np.float32 and (logits.argmax(1) == data["label"]).all()
