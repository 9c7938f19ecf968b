"""Pack the digits CNN with pre- and post-processing into one self-checking package.

    python examples/pre_post.py [-o digits.dvmpkg]

The shipped model (vm/models/digits.dvm, a fixed batch of 8) is made batch-symbolic
(N <= 64, compiler.symbolize), chained between examples/pre_post/digits_pre.dvmt (raw pixels
0..16 to its int8 input) and examples/pre_post/argmax_post.dvmt (the class of each image), and
packed with the shipped test images: their raw pixels in, the classes of the shipped expected
logits out. Packing runs the test and refuses on any difference; loading re-runs it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import vm
from compiler.symbolize import symbolize
from vm.package import pack

HERE = Path(__file__).resolve().parent / "pre_post"
MODELS = Path(vm.__file__).resolve().parent / "models"


def digits_package() -> bytes:
    """The package's bytes (deterministic)."""
    fixed = vm.load(MODELS / "digits.dvm").program
    model = symbolize(fixed, {"N": 8}, {"N": 64})
    data, expected = np.load(MODELS / "digits_inputs.npz"), np.load(MODELS / "digits_expected.npz")
    pixels = np.rint(data["image_float"] * 16).astype(np.int8)     # scikit-learn's 0..16
    labels = expected["logits"].argmax(axis=1)
    return pack(model, pre=HERE / "digits_pre.dvmt", post=HERE / "argmax_post.dvmt",
                tests=[({"pixels": pixels}, {"label": labels})])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="digits.dvmpkg")
    args = ap.parse_args()
    Path(args.output).write_bytes(digits_package())
    chain = vm.load(args.output)                 # hashes checked, test re-run
    print(f"{args.output}: package {chain.package.hash}")
    print(" -> ".join(f"{role} {m.name!r}" for role, m in chain.stages),
          f"| gas {chain.gas_formula} | N <= {chain.symbols['N']}")
    pixels = np.rint(np.load(MODELS / "digits_inputs.npz")["image_float"] * 16).astype(np.int8)
    items = [{"pixels": pixels[k:k + 1]} for k in range(3)]
    for k, out in enumerate(chain.run_many(items)):
        print(f"image {k}: class {int(out['label'][0])}")


if __name__ == "__main__":
    main()
