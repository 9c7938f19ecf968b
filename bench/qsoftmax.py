"""detvm's qsoftmax against onnxruntime's QLinearSoftmax on many rows: the agreement table of
docs/onnx.md (uniform random rows, and rows built to make the float32 sum tie).

    python bench/qsoftmax.py [--rows 20000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.onnx_qdq import compare  # noqa: E402
from tests.test_onnx_softmax import rows, softmax_model  # noqa: E402

LENGTHS = {"D < 16": (2, 3, 5, 8, 13, 15), "D >= 16": (16, 17, 32, 33, 80, 257)}
SCALES = (0.004, 0.0911, 0.5, 1.7)


def measure(dtype: str, lengths, ties: bool, n_rows: int, rng) -> tuple[int, int, int]:
    """(differing elements, elements, max |difference|)."""
    bad = total = worst = 0
    for d in lengths:
        for scale in SCALES:
            n = max(n_rows // d, 8)
            ours, theirs = compare(softmax_model((n, d), dtype, scale),
                                   {"x_q": rows(rng, (n, d), dtype, ties)})
            diff = np.abs(ours - theirs)
            bad, total, worst = bad + int((diff > 0).sum()), total + diff.size, \
                max(worst, int(diff.max()))
    return bad, total, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="elements per (D, scale)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| input | rows | data | elements | identical | max diff |")
    print("|---|---|---|---|---|---|")
    for dtype in ("uint8", "int8"):
        for label, lengths in LENGTHS.items():
            for ties in (False, True):
                bad, total, worst = measure(dtype, lengths, ties, args.rows, rng)
                print(f"| {dtype} | {label} | {'near-ties' if ties else 'uniform'} | {total:,} "
                      f"| {100 * (total - bad) / total:.4f} % ({bad} differ) | {worst} LSB |")


if __name__ == "__main__":
    main()
