"""Float scales become integers here, at compile time (the only floats of the pipeline).

A requantization multiplies an exact integer accumulator by a real ratio r = s_in / s_out
and rounds. detvm's ``requantize`` op computes round((x - zin) * M / 2^s) with integers only;
this module chooses (M, s) for a ratio:

* ``half_even``: M is the 31-bit fixed-point value of the *exact* rational ratio
  (Fractions of the float32 scales), rounded half to even, and the product is rounded half to
  even: the mathematically exact result up to a relative error of 2^-31 in M.
* ``fp32`` (default): M * 2^-s is exactly the float32 ratio onnxruntime computes
  (fl32(fl32(s_x * s_w) / s_y)), and requantize reproduces ORT's float32 arithmetic
  bit for bit (float32 conversion of the accumulator, float32 product, round half to even).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from vm.errors import InvalidError

ROUNDINGS = ("fp32", "half_even")
MAX_SHIFT = 62
M31 = (1 << 31) - 1


def round_half_even(v: Fraction) -> int:
    """The integer nearest to ``v``, ties to even."""
    return round(v)          # Fraction.__round__ rounds half to even


def floor_log2(v: Fraction) -> int:
    k = v.numerator.bit_length() - v.denominator.bit_length()
    return k - 1 if Fraction(2) ** k > v else k


def fixed31(ratio: Fraction) -> tuple[int, int]:
    """(M, s) with M / 2^s the 31-bit rounding of ``ratio`` (M < 2^31, 0 <= s <= 62)."""
    if ratio < 0:
        raise InvalidError(f"negative scale ratio {float(ratio)}")
    if ratio == 0:
        return 0, 0
    s = 30 - floor_log2(ratio)
    if s < 0:                      # ratio >= 2^31: every nonzero input saturates
        return M31, 0
    s = min(s, MAX_SHIFT)
    m = round_half_even(ratio * 2 ** s)
    if m > M31:                    # rounded up to 2^31
        m, s = m // 2, s - 1
    return m, s


def fixed_fp32(ratio32: np.float32) -> tuple[int, int]:
    """(M, s) with M * 2^-s == the float32 ``ratio32`` exactly (M < 2^24)."""
    value = float(ratio32)
    if not math.isfinite(value) or value < 0:
        raise InvalidError(f"bad scale ratio {value}")
    if value == 0:
        return 0, 0
    m, e = math.frexp(value)       # value = m * 2^e, 0.5 <= m < 1
    mant, s = int(m * (1 << 24)), 24 - e
    if s > MAX_SHIFT:              # |acc * ratio| < 2^55 * 2^-63: always rounds to 0
        return 0, 0
    if s < 0:                      # ratio >= 2^24: every nonzero input saturates
        return (1 << 24) - 1, 0
    return mant, s


def fl32(v) -> np.float32:
    return np.float32(v)


def ort_ratios(ort: tuple, s_y: float) -> list:
    """onnxruntime's float32 requantize ratios, evaluated as its C++ does in float32:
    ("product", s_x, s_ws): QLinearConv / QLinearMatMul / QGemm, fl32(fl32(s_x * s_w) / s_y);
    ("mean", s_x, n): QLinearGlobalAveragePool, fl32(s_x / fl32(s_y * n))."""
    kind, s_x, rest = ort
    if kind == "mean":
        return [fl32(fl32(s_x) / fl32(fl32(s_y) * fl32(rest)))]
    return [fl32(fl32(fl32(s_x) * fl32(w)) / fl32(s_y)) for w in rest]


def ort_scales(ort: tuple) -> list:
    """The float32 scales ORT dequantizes such an accumulator with (float outputs)."""
    kind, s_x, rest = ort
    if kind == "mean":
        return [fl32(fl32(s_x) / fl32(rest))]
    return [fl32(fl32(s_x) * fl32(w)) for w in rest]


def pairs(ratios: list[Fraction], rounding: str, ort: list | None = None) -> list:
    """(M, s) per channel. ``ort``: the float32 ratios ORT computes (fp32 mode), when known."""
    if rounding == "fp32":
        r32 = ort if ort is not None else [fl32(float(r)) for r in ratios]
        return [fixed_fp32(r) for r in r32]
    return [fixed31(r) for r in ratios]


def quantize_real(value: float | Fraction, scale: float, zero: int) -> int:
    """round(value / scale) + zero, ties to even, exactly (for clamp bounds and pad values)."""
    return round_half_even(Fraction(value) / Fraction(scale)) + zero
