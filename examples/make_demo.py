"""Build the shipped lines model (used by bench/formal.py and the formal tests): compile
examples/lines.dvmt, draw six noisy line images, record the expected output bytes.
Writes vm/models/{demo.dvm, demo_inputs.npz, demo_expected.npz}.

    python examples/make_demo.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vm  # noqa: E402
from compiler import parse  # noqa: E402


def line_image(kind: str, offset: int, rng) -> np.ndarray:
    """An 8x8 p8 image: a bright line of the given orientation on a noisy background."""
    img = rng.integers(-8, 9, (8, 8))
    idx = np.arange(8)
    if kind == "horizontal":
        img[offset, :] += 60
    elif kind == "vertical":
        img[:, offset] += 60
    elif kind == "diagonal":
        img[idx, (idx + offset) % 8] += 60
    else:
        img[idx, (7 - idx + offset) % 8] += 60
    return img.astype(np.int8)


def main() -> None:
    program = parse((ROOT / "examples" / "lines.dvmt").read_text())
    model = vm.load(program)
    rng = np.random.default_rng(2026)
    kinds = ["horizontal", "vertical", "diagonal", "antidiagonal", "vertical", "horizontal"]
    images = np.stack([line_image(k, o, rng)[None] for k, o in zip(kinds, [3, 5, 0, 0, 1, 6])])
    inputs = {"image": images}
    outputs = model.run(inputs)
    reference = vm.load(program, vm.reference()).run(inputs)
    assert all(outputs[k].tobytes() == reference[k].tobytes() for k in outputs)
    out = ROOT / "vm" / "models"
    out.mkdir(exist_ok=True)
    (out / "demo.dvm").write_bytes(model.to_bytes())
    np.savez(out / "demo_inputs.npz", **inputs)
    np.savez(out / "demo_expected.npz", **outputs)
    labels = program.metadata["labels"].split(",")
    for k, row in enumerate(outputs["scores"]):
        print(f"image {k} ({kinds[k]}): predicted {labels[int(np.argmax(row))]}, scores {row}")
    print(f"model {model.hash}")


if __name__ == "__main__":
    main()
