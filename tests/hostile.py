"""A corpus of hostile models and inputs (the reliability campaign's claims, bombs and foreign
exceptions, F1-F12): each case builds its payload once and gives a thunk that must fail with a
detvm error. tests/test_budgets.py checks their memory budget, bench/budgets.py their time
budget (docs/format.md, Budgets)."""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

import ops
import vm
from vm.format import HASH_BYTES, MAGIC
from vm.program import Instr, Program, Tensor


@dataclass
class Hostile:
    """``run()`` must raise ``error``; ``payload`` bytes are the input's own (the budget is
    counted beyond them)."""
    name: str
    payload: int
    run: Callable[[], object]
    error: type = vm.DetvmError


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def raw_dvm(tensors, code, outputs, consts=b"\0\0\0\0", lengths=None) -> bytes:
    """A format-1 .dvm written field by field, so that claims the encoder would refuse can be
    made: ``tensors`` (name, kind, precision, dims), ``code`` (op, inputs, outputs) without
    attributes, raw CONS payload, ``lengths`` {tag: claimed payload length}."""
    kinds = {"input": 0, "const": 1, "value": 2}
    tens = struct.pack("<I", len(tensors)) + b"".join(
        _str(n) + struct.pack("<BBB", kinds[k], p, len(dims)) +
        struct.pack(f"<{len(dims)}I", *dims) for n, k, p, dims in tensors)
    body = struct.pack("<I", len(code)) + b"".join(
        struct.pack("<HB", ops.get(op).opcode, len(i)) + struct.pack(f"<{len(i)}I", *i) +
        struct.pack("<B", len(o)) + struct.pack(f"<{len(o)}I", *o) + b"\0" for op, i, o in code)
    sections = {b"META": _str("hostile") + b"\0\0\0\0", b"TENS": tens, b"CONS": consts,
                b"CODE": body, b"OUTS": struct.pack(f"<I{len(outputs)}I", len(outputs), *outputs)}
    out = MAGIC + struct.pack("<HHI", 1, 1, 5)
    for tag, payload in sections.items():
        out += tag + struct.pack("<Q", (lengths or {}).get(tag, len(payload))) + payload
    return out + hashlib.sha256(out).digest()


def _relu_model(dims, precision=8) -> bytes:
    return raw_dvm([("x", "input", precision, dims), ("y", "value", precision, dims)],
                   [("relu", (0,), (1,))], [1])


def with_count(blob: bytes, tag: bytes, count: int) -> bytes:
    """``blob`` with the entry count of section ``tag`` replaced (hash fixed up)."""
    body = bytearray(blob[:-HASH_BYTES])
    at = body.index(tag) + 12                       # tag, u64 length, then the u32 count
    body[at:at + 4] = count.to_bytes(4, "little")
    return bytes(body) + hashlib.sha256(body).digest()


def _load(blob: bytes) -> Hostile:
    return lambda: vm.load(blob)


def _model_cases() -> list[Hostile]:
    small = _relu_model((4,))
    cases = [
        ("2^40 elements", _relu_model((1 << 24, 1 << 16))),
        ("six 2^24 dims", _relu_model((1 << 24,) * 6)),
        ("ndim 255", _relu_model((1,) * 255)),
        ("truncated", small[:len(small) // 2]),
        ("bad hash", small[:-1] + bytes([small[-1] ^ 1])),
        ("random bytes", np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()),
        ("u64-max section length", raw_dvm([("x", "input", 8, (4,)), ("y", "value", 8, (4,))],
                                           [("relu", (0,), (1,))], [1],
                                           lengths={b"TENS": (1 << 64) - 1})),
    ]
    for claim in (1 << 30, 1 << 40, (1 << 64) - 1):         # a constant claiming its bytes
        cons = struct.pack("<IIBQ", 1, 1, 1, claim) + b"\0" * 4
        cases.append((f"constant claiming {claim} bytes", raw_dvm(
            [("x", "input", 8, (4,)), ("c", "const", 8, (1 << 15, 1 << 15)),
             ("y", "value", 8, (4,))], [("relu", (0,), (2,))], [2], consts=cons)))
    for tag in (b"META", b"TENS", b"CONS", b"CODE", b"OUTS"):
        cases.append((f"u32-max count in {tag.decode()}", with_count(small, tag, (1 << 32) - 1)))
    cases.append(("2^20 + 1 instructions claimed", with_count(small, b"CODE", (1 << 20) + 1)))
    pool = dict(pool_size=(1, 1), strides=(1, 1), padding=(0, 0), zero_point=0,
                count_include_pad=False)
    side = 1 << 15                                                        # F1
    cases.append(("sum_pool2d of 2^30 pixels", vm.encode(Program(
        "sp", [Tensor("x", (1, 1, side, side), 8, "input"),
               Tensor("y", (1, 1, side, side), 32, "value")],
        {}, [Instr("sum_pool2d", (0,), (1,), pool)], [1]))))
    conv = dict(channels=1, kernel_size=(2048, 2048), use_bias=False)    # gas ~ 2^44
    cases.append(("conv2d beyond the gas ceiling", vm.encode(Program(
        "g", [Tensor("x", (1, 1, 4096, 4096), 2, "input"),
              Tensor("w", (1, 1, 2048, 2048), 2, "input"),
              Tensor("y", (1, 1, 2049, 2049), 32, "value")],
        {}, [Instr("conv2d", (0, 1), (2,), ops.get("conv2d").check_attrs(conv))], [2]))))
    bad = np.zeros((1 << 24,), np.int8)                                   # F6
    bad[-3] = -128
    cases.append(("16 MiB constant, one value outside p8", vm.encode(Program(
        "c", [Tensor("x", (1,), 8, "input"), Tensor("c", bad.shape, 8, "const"),
              Tensor("y", (1,), 8, "value")], {1: bad}, [Instr("relu", (0,), (2,), {})], [2]))))
    out = [Hostile(name, len(blob), _load(blob)) for name, blob in cases]
    program = Program("p", [Tensor("x", (1, 1, 4, 4), 8, "input"),
                            Tensor("y", (1, 1, 4, 4), 8, "value")], {},
                      [Instr("max_pool2d", (0,), (1,), {"pool_size": tuple(range(1, 65536))})],
                      [1])
    out.append(Hostile("65535-int attribute", 65535 * 8, lambda: vm.load(program)))
    return out


def _front_end_cases() -> list[Hostile]:
    from compiler import parse
    from tests.cvm_util import params_of, vector
    from vm import runtime as rt
    m = vector("a2_dense_raw")
    params = params_of(m)
    out = []
    for name, change in (("CVM attribute of 5000 digits", "digits"),          # F7
                         ("CVM lone surrogate", "surrogate")):               # F8
        g = json.loads(m["graph_json"])
        if change == "digits":
            k = next(k for k, t in enumerate(g["attrs"]["op_attrs"][1]) if "units" in t)
            g["attrs"]["op_attrs"][1][k] = json.dumps({"use_bias": "True", "units": "9" * 5000})
        else:
            g["postprocess"] = "\ud800"
        text = json.dumps(g)
        out.append(Hostile(name, len(text) + len(params),
                           lambda text=text: rt.CVMAPILoadModel(text, params), rt.CVMError))
    text = ('model "m"\ninput %x : [1] p8\nconst @c : [' + ", ".join(["1"] * 65) +   # F9
            '] p8 = [1]\n%y = relu %x\noutput %y\n')
    out.append(Hostile("text constant of 65 dims", len(text), lambda: parse(text)))
    return out


class _Refuses:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("r" * 100000)


def _input_cases() -> list[Hostile]:
    from detvm.common import DEMO_DIR
    from tests.conftest import small_cnn
    model = vm.load(small_cnn())
    x = np.zeros(model.inputs[0].shape, np.int8)
    big = np.zeros((1 << 24,), np.int8)
    digits = vm.decode((DEMO_DIR / "digits.dvm").read_bytes())
    bad_io = replace(digits, metadata={**digits.metadata, "input.image.scale": "abc"})
    return [
        Hostile("input keys of mixed types", x.nbytes * 3,                            # F10
                lambda: model.run({"x": x, 0: x, "z": x})),
        Hostile("array-like that raises", 0, lambda: model.run({"x": _Refuses()})),  # F12
        Hostile("input of 2^24 elements for a small shape", big.nbytes,
                lambda: model.run({"x": big})),
        Hostile("input value outside its precision", big.nbytes,
                lambda: model.run({"x": np.full(model.inputs[0].shape, 1 << 20, np.int32)})),
        Hostile("float_io metadata scale 'abc'", 0, lambda: vm.load(bad_io)),       # F11
    ]


def corpus() -> list[Hostile]:
    """Every hostile case (built now: some payloads take a few MiB)."""
    return _model_cases() + _front_end_cases() + _input_cases()
