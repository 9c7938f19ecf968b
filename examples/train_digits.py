"""Train, export, quantize and import the shipped digits CNN; print the accuracy table.

    pip install ".[train]"                      # scikit-learn, onnx, onnxruntime
    python examples/train_digits.py [--ship] [--out DIR]

1. train the numpy CNN of examples/digits_cnn.py on the 80 % training split of scikit-learn's
   8x8 digits (1437 images; 360 held out, stratified, random_state 0);
2. export it as a float ONNX model (opset 17, IR 8: onnxruntime 1.31 reads at most 26 / 13);
3. quantize it with onnxruntime (detvm's wrapper, compiler/onnx/quantize.py: QDQ, int8
   activations, per-channel int8 weights, MinMax calibration on 256 training images);
4. import it (compiler.onnx.import_onnx, batch 8, requantize rounding ``fp32``);
5. measure the test split: float (ORT), int8 (ORT), detvm, and detvm's agreement with ORT;
6. with ``--ship``: write vm/models/digits.dvm, digits_inputs.npz (8 test images: quantized,
   float, and their labels) and digits_expected.npz (their output bytes): ``detvm demo``.
Runs offline in well under two minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import vm  # noqa: E402
from compiler.onnx import import_onnx  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402
from digits_cnn import DigitsCNN  # noqa: E402

BATCH, ROUNDING = 8, "fp32"


def split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


def ort_run(path, x):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def detvm_run(model, x):
    """Float logits of every image, in batches of BATCH (float_io: quantize, run, dequantize)."""
    return np.concatenate([model.run({"image": x[k:k + BATCH]}, float_io=True)["logits"]
                           for k in range(0, len(x), BATCH)])


def agreement(model, ort_logits, vm_logits) -> dict:
    """Top-1 agreement, largest LSB difference and exact-match rate of the int8 logits."""
    scale = np.float64(float(model.metadata["output.logits.scale"]))
    q = lambda y: np.rint(y.astype(np.float64) / scale).astype(np.int64)
    diff = np.abs(q(ort_logits) - q(vm_logits))
    return {"top1_agreement": float((ort_logits.argmax(1) == vm_logits.argmax(1)).mean()),
            "max_lsb_diff": int(diff.max()), "exact_match": float((diff == 0).mean())}


def ship(model, x_test, y_test) -> None:
    out = ROOT / "vm" / "models"
    from vm.floatio import quantize_inputs
    inputs = quantize_inputs(model, {"image": x_test[:BATCH]})
    inputs["image"] = inputs["image"].astype(model.inputs[0].dtype)
    outputs = model.run(inputs)
    reference = vm.load(model.program, vm.reference()).run(inputs)
    assert all(outputs[k].tobytes() == reference[k].tobytes() for k in outputs)
    (out / "digits.dvm").write_bytes(model.to_bytes())
    np.savez(out / "digits_inputs.npz", image=inputs["image"], image_float=x_test[:BATCH],
             label=y_test[:BATCH])
    np.savez(out / "digits_expected.npz", **outputs)
    print(f"shipped {out / 'digits.dvm'} ({model.hash[:16]}...)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="directory for the .onnx files (default: a temporary one)")
    ap.add_argument("--ship", action="store_true", help="write vm/models/digits.*")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    logging.disable(logging.WARNING)          # onnxruntime.quantization's advice
    out = Path(args.out or tempfile.mkdtemp(prefix="digits-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    x_train, x_test, y_train, y_test = split()
    net = DigitsCNN(seed=0)
    net.train(x_train, y_train, epochs=args.epochs)
    print(f"trained in {time.time() - t0:.1f} s")
    import onnx
    onnx.save(net.onnx_model(), out / "digits.onnx")
    quantize_onnx(out / "digits.onnx", {"image": x_train[:256]}, out / "digits.int8.onnx",
                  fmt="qdq", activation="int8", per_channel=True)
    program = import_onnx(out / "digits.int8.onnx", batch=BATCH, rounding=ROUNDING,
                          name="digits-cnn")
    program.metadata["labels"] = ",".join(str(k) for k in range(10))
    model = vm.load(program)
    float_logits = ort_run(out / "digits.onnx", x_test)
    ort_logits = ort_run(out / "digits.int8.onnx", x_test)
    vm_logits = detvm_run(model, x_test)
    acc = lambda logits: float((logits.argmax(1) == y_test).mean())
    results = {"test_images": len(y_test), "float": acc(float_logits),
               "ort_int8": acc(ort_logits), "detvm": acc(vm_logits),
               **agreement(model, ort_logits, vm_logits), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(results, indent=2))
    print("| model | test accuracy |\n|---|---|\n"
          f"| float (onnxruntime) | {results['float']:.2%} |\n"
          f"| int8 (onnxruntime) | {results['ort_int8']:.2%} |\n"
          f"| detvm | {results['detvm']:.2%} |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.ship:
        ship(model, x_test, y_test)


if __name__ == "__main__":
    main()
