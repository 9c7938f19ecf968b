"""CVM operator attributes: parsing op_attrs strings (dmlc Parameter rules) and writing them.

Every value is a string (cvm.md §1.2 "op_attrs value encoding"): ints; bools ``true``/``false``/
``1``/``0`` in any case; tuples ``(1, 1)``, ``[1,1]`` or a bare int (a 1-tuple); optional ints
``None`` or an int. Unknown keys are an error (CVM code 2) except hidden ``__x__`` keys; ops
without a parameter struct take an empty dict. CVM's attribute names are detvm's, plus a few
CVM-only layout attributes that are checked against the values CVM accepts and then dropped.
"""
from __future__ import annotations

import json
import re

import ops

from ops.base import REQUIRED, shown

from .errors import invalid, malformed

CVM_OPS = frozenset((
    "conv2d dense relu max_pool2d upsampling non_max_suppression get_valid_counts broadcast_add "
    "broadcast_sub broadcast_mul broadcast_div broadcast_max broadcast_greater abs negative "
    "cvm_precision elemwise_add elemwise_sub clip cvm_clip cvm_left_shift cvm_right_shift sum max "
    "repeat tile flatten concatenate expand_dims reshape squeeze transpose strided_slice take "
    "cvm_lut slice_like where").split())
"""The 37 operators registered in CVM (cvm.md §3.1)."""

STRICTLY_EMPTY = frozenset(("relu", "abs", "negative", "cvm_precision", "elemwise_add",
                            "elemwise_sub", "flatten", "where"))
"""Ops whose attribute dict must be empty (no parameter struct, cvm.md §1.2)."""

DTYPE_NAMES = ("same", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "float16", "float32", "float64")
CVM_ONLY = {
    "conv2d": {"layout": ("NCHW",), "kernel_layout": ("OIHW",),
               "out_layout": ("__undef__", "", "NCHW"), "out_dtype": DTYPE_NAMES},
    "max_pool2d": {"layout": ("NCHW",)},
    "upsampling": {"layout": ("NCHW",)},
}
"""CVM attributes without a detvm counterpart, and the values CVM runs with."""

PAIRS = {"conv2d": ("kernel_size", "strides", "padding", "dilation"),
         "max_pool2d": ("pool_size", "strides")}
"""Spatial tuples that CVM indexes as pairs (max_pool2d padding may have 1 or 2 values)."""

_INT = re.compile(r"\s*[+-]?\d+\s*")
_HIDDEN = re.compile(r"__.*__")
INT64 = 1 << 63
INT64_DIGITS = 19
"""Decimal digits of 2^63: a longer integer is out of range without converting it."""


def parse_attr_dict(op_name: str, text: str) -> dict[str, str]:
    """The op_attrs string of an operator node: a JSON object of string -> string."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise malformed(f"{op_name}: op_attrs is not JSON ({e})") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise malformed(f"{op_name}: op_attrs must be a JSON object of strings, got {shown(text)}")
    return value


def parse_attrs(op_name: str, raw: dict[str, str], where: str) -> dict:
    """detvm attributes (un-normalized Python values) from CVM's string dict."""
    op = ops.get(op_name)
    schema = {a.name: a for a in op.attrs}
    extra = CVM_ONLY.get(op_name, {})
    if op_name in STRICTLY_EMPTY and raw:
        raise malformed(f"{where}: {op_name} takes no attributes, got {sorted(raw)}")
    out = {}
    for key, text in raw.items():
        if _HIDDEN.fullmatch(key):
            continue
        if key in extra:
            if text not in extra[key]:
                raise invalid(f"{where}: {key}={shown(text)} is not supported (CVM accepts "
                              f"{', '.join(repr(v) for v in extra[key])})")
            continue
        if key not in schema:
            known = ", ".join(sorted((*schema, *extra))) or "none"
            raise malformed(f"{where}: Cannot find argument '{key}', Possible Arguments: {known}")
        out[key] = _parse(schema[key].kind, text, f"{where}: attribute {key}")
    for a in op.attrs:
        if a.name not in out and a.default is REQUIRED:
            raise malformed(f"{where}: required parameter {a.name} is not presented")
    _check_pairs(op_name, out, where)
    return out


def _check_pairs(op_name: str, attrs: dict, where: str) -> None:
    for key in PAIRS.get(op_name, ()):
        if key in attrs and len(attrs[key]) != 2:
            raise invalid(f"{where}: {key} needs 2 values, got {len(attrs[key])}")
    if op_name == "max_pool2d" and len(attrs.get("padding", (0,))) not in (1, 2):
        raise invalid(f"{where}: padding needs 1 or 2 values")


def _parse(kind: str, text: str, what: str):
    if kind == "int":
        return _int(text, what)
    if kind == "bool":
        low = text.strip().lower()
        if low not in ("true", "false", "1", "0"):
            raise malformed(f"{what}: {shown(text)} is not a bool")
        return low in ("true", "1")
    if kind == "optint":
        return None if text.strip() == "None" else _int(text, what)
    if kind == "ints":
        return _tuple(text, what)
    return text


def _int(text: str, what: str) -> int:
    if not _INT.fullmatch(text):
        raise malformed(f"{what}: {shown(text)} is not an integer")
    s = text.strip()
    digits = s.lstrip("+-").lstrip("0") or "0"
    if len(digits) > INT64_DIGITS:          # before int(), which refuses > 4300 digits
        raise malformed(f"{what}: {shown(text)} is out of range")
    v = -int(digits) if s[0] == "-" else int(digits)
    if not -INT64 <= v < INT64:
        raise malformed(f"{what}: {shown(text)} is out of range")
    return v


def _tuple(text: str, what: str) -> tuple[int, ...]:
    s = text.strip()
    if _INT.fullmatch(s):
        return (_int(s, what),)
    if len(s) < 2 or (s[0], s[-1]) not in (("(", ")"), ("[", "]")):
        raise malformed(f"{what}: {shown(text)} is not a tuple")
    body = s[1:-1].strip()
    if not body:
        return ()
    items = body.split(",")
    if len(items) > 1 and not items[-1].strip():
        items = items[:-1]                      # a trailing comma, as in "(1,)"
    return tuple(_int(item, what) for item in items)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def format_value(value) -> str:
    """The op_attrs string of one canonical detvm attribute value."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def format_attrs(attrs: dict) -> str:
    """The op_attrs JSON string of canonical detvm attributes (keys sorted)."""
    return json.dumps({k: format_value(v) for k, v in sorted(attrs.items())})
