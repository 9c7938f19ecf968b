"""detvm assembly: Builder, parser, disassembler.

Identities: parse(disassemble(p)) == p field by field, and disassemble is a fixed point of
parse . disassemble. Errors: syntax -> MalformedError with line and column; semantic ->
InvalidError (unknown op: MalformedError) with the line; nothing else ever escapes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from compiler import Builder, disassemble, parse
from ops.base import bound
from vm.errors import InvalidError, MalformedError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.dvmt"


def need(*names):
    missing = [n for n in names if ops.get(n) is None]
    if missing:
        pytest.skip(f"ops not registered yet: {missing}")


def assert_same(p, q):
    assert (q.name, q.semantics, q.metadata) == (p.name, p.semantics, p.metadata)
    assert q.tensors == p.tensors
    assert q.code == p.code and q.outputs == p.outputs
    assert sorted(q.consts) == sorted(p.consts)
    for i, a in p.consts.items():
        assert q.consts[i].dtype == a.dtype and np.array_equal(q.consts[i], a)


def roundtrip(p):
    text = disassemble(p)
    q = parse(text)
    assert_same(p, q)
    assert disassemble(q) == text
    return text


# -- hand-written programs ---------------------------------------------------------------------

def nn_program():
    b = Builder("nn chain").meta("labels", "a,b").meta("odd \"key\"", "tab\there\nnewline")
    x = b.input("x", (1, 4, 6, 6), 7)
    w = b.const("w", np.arange(-36, 36).reshape(4, 2, 3, 3) % 50, precision=8)
    bias = b.const("bias", [1, -2, 3, -4])
    y = b.conv2d(x, w, bias, channels=4, kernel_size=3, padding=1, groups=2, dilation=(1, 1))
    y = b.relu(y)
    y = b.op("max_pool2d", y, pool_size=3, strides=2, ceil_mode=True, outputs="pool")
    y = b.op("upsampling", y, scale=2, declared=[((1, 4, 6, 6), 32)])
    w2 = b.const("w2", np.ones((2, 4, 1, 1), np.int8))
    z = b.conv2d(x, w2, channels=2, kernel_size=1, use_bias=False, strides=2)
    return b.output(y, z, "x").build()


def dense_program():
    b = Builder("")
    x = b.input("in put", (3, 5), 8)
    w = b.const("é\"\\w", np.full((2, 5), -127), precision=8)
    b.output(b.op("relu", b.dense(x, w, units=2, use_bias=False)))
    return b.build()


def test_roundtrip_nn():
    text = roundtrip(nn_program())
    assert "%pool : [1, 4, 3, 3] p21 = max_pool2d %relu_0 {ceil_mode=true, pool_size=[3, 3], " \
           "strides=[2, 2]}" in text
    assert "dilation" not in text and "p32 = upsampling" in text  # defaults omitted; widening kept


def test_roundtrip_dense_and_quoted_names():
    text = roundtrip(dense_program())
    assert 'model ""' in text and '%"in put"' in text and '@"é\\"\\\\w"' in text


def test_roundtrip_elemwise_broadcast():
    need("cvm_right_shift", "elemwise_add", "broadcast_add", "flatten", "clip")
    b = Builder("elemwise")
    x = b.input("x", (2, 3), 8)
    c = b.const("c", [[1], [2]])
    y = b.elemwise_add(x, x)
    y = b.broadcast_add(y, c)
    y = b.cvm_right_shift(y, precision=4, shift_bit=2)
    y = b.clip(y, a_min=-3, a_max=3)
    roundtrip(b.output(y).build())


def test_roundtrip_several_outputs():
    need("get_valid_counts")
    b = Builder("vision")
    d = b.input("d", (1, 4, 6), 8)
    cnt, boxes = b.get_valid_counts(d, score_threshold=1)
    assert (cnt, boxes) == ("get_valid_counts_0.valid_count", "get_valid_counts_0.y")
    text = roundtrip(b.output(boxes, cnt).build())
    assert '%"get_valid_counts_0.valid_count" : [1]' not in text  # '.' is a plain name char
    assert "%get_valid_counts_0.valid_count : [1] p" in text


def test_interleaved_declarations_keep_ids():
    b = Builder("ids")
    x = b.input("x", (1, 2, 4, 4), 8)
    y = b.relu(x)
    w = b.const("w", np.ones((3, 2, 1, 1), np.int8))
    z = b.conv2d(y, w, channels=3, kernel_size=1, use_bias=False)
    x2 = b.input("x2", (1, 3, 4, 4), 20)
    p = b.output(z, b.relu(x2)).build()
    assert [t.name for t in p.tensors] == ["x", "relu_0", "w", "conv2d_0", "x2", "relu_1"]
    roundtrip(p)


def test_example_parses():
    p = parse(EXAMPLE.read_text())
    roundtrip(p)
    assert p.name == "tiny-cnn" and p.metadata == {"labels": "horizontal,vertical"}


def test_layout_freedom():
    src = ('; header\r\nmodel "m"   ; name\r\n\r\n  input %x : [ 2 ,\n 2 ] p8\n'
           '%y : [2, 2] p8 = relu %x {\n}\n; end\noutput %y ; last')
    p = parse(src)
    assert [t.name for t in p.tensors] == ["x", "y"] and p.code[0].op == "relu"


# -- random valid programs ---------------------------------------------------------------------

PRINTABLE = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
NAMES = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,6}", fullmatch=True),
                  st.text(PRINTABLE, min_size=1, max_size=6).filter(str.isprintable))


def unique_name(draw, b):
    name = draw(NAMES)
    while name in b:
        name += "_"
    return name


@st.composite
def programs(draw):
    b = Builder(draw(st.text(max_size=8)))
    for k, v in draw(st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3)).items():
        b.meta(k, v)
    fresh = lambda: unique_name(draw, b)
    image = draw(st.booleans())
    dims = [(1, 2), (1, 3), (2, 5), (2, 5)] if image else [(1, 3), (1, 6)]
    shape = tuple(draw(st.integers(lo, hi)) for lo, hi in dims)
    cur = b.input(fresh(), shape, draw(st.integers(1, 8)))
    for _ in range(draw(st.integers(0, 5))):
        cur = _step(draw, b, cur, fresh)
    extra = draw(st.lists(st.sampled_from([t.name for t in b.tensors]), unique=True, max_size=2))
    b.output(cur, *[n for n in extra if n != cur])
    return b.build()


def _const(draw, b, fresh, shape, p):
    n = int(np.prod(shape))
    values = draw(st.lists(st.integers(-bound(p), bound(p)), min_size=n, max_size=n))
    return b.const(fresh(), np.array(values).reshape(shape), draw(st.sampled_from([p, None])))


def _step(draw, b, cur, fresh):
    t = b.tensor(cur)
    choices = ["relu"]
    if len(t.shape) == 4:
        choices += ["max_pool2d", "upsampling"] + (["conv2d"] if t.precision <= 8 else [])
        choices += ["flatten"] if ops.get("flatten") else []
    if len(t.shape) == 2 and t.precision <= 8:
        choices.append("dense")
    if ops.get("cvm_right_shift") and t.precision > 8:
        choices.append("cvm_right_shift")
    op = draw(st.sampled_from(choices))
    attrs, inputs = {}, [cur]
    if op == "max_pool2d":
        k = draw(st.integers(1, min(t.shape[2:])))
        attrs = dict(pool_size=k, strides=draw(st.integers(1, 2)),
                     padding=draw(st.integers(0, k - 1)))
    elif op == "upsampling":
        attrs = dict(scale=draw(st.integers(1, 2)))
    elif op == "cvm_right_shift":
        attrs = dict(precision=draw(st.integers(1, 8)), shift_bit=draw(st.integers(1, 12)))
    elif op in ("conv2d", "dense"):
        out, bias = draw(st.integers(1, 3)), draw(st.booleans())
        k = draw(st.integers(1, min(t.shape[2:]))) if op == "conv2d" else 0
        wshape = (out, t.shape[1], k, k) if k else (out, t.shape[1])
        inputs.append(_const(draw, b, fresh, wshape, draw(st.integers(1, 8))))
        if bias:
            inputs.append(_const(draw, b, fresh, (out,), draw(st.integers(1, 12))))
        attrs = dict(channels=out, kernel_size=k) if k else dict(units=out)
        attrs["use_bias"] = bias
    name = b.op(op, *inputs, outputs=[fresh()], **attrs)
    return _maybe_widen(draw, b, name)


def _maybe_widen(draw, b, name):
    t = b.tensor(name)
    if t.precision >= 32 or not draw(st.booleans()):
        return name
    return b.op("relu", name, outputs=[unique_name(draw, b)],
                declared=[(t.shape, draw(st.integers(t.precision, 32)))])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_roundtrip_random_programs(p):
    roundtrip(p)


# -- fuzzing: any mutation parses or fails with a detvm error ----------------------------------

NN_TEXT = disassemble(nn_program())
SEED = NN_TEXT[:NN_TEXT.index("\noutput")].replace("\n\n", "\n; comment [1, {\n\n") + r"""
; a second part, written by hand
input %"in put" : [3, 5] p8
const @"w\\2" : [2, 5] p8 = [1, -2, 3, 4, 5,  ; wrapped
   -127, 0, 0, 0, 1]
%d = dense %"in put", @"w\\2" {units=2, use_bias=false}
%"r\"" : [3, 2] p20 = relu %d
output %"r\"", %x, %upsampling_0
"""
SYNTAX = list('%@[]{},:=;"\\-0123456789\n\t pxyz_.') + ["p8", "-1", "\\u{"]
CHARS = st.one_of(st.sampled_from(SYNTAX),
                  st.characters())


@st.composite
def mutants(draw, source):
    text = source
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.sampled_from(range(len(text) + 1)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"] * 3 + ["truncate"]))
        if kind == "truncate":
            text = text[:i]
        elif kind == "insert":
            text = text[:i] + draw(CHARS) + text[i:]
        else:
            n = draw(st.integers(1, 3))
            text = text[:i] + (draw(CHARS) if kind == "replace" else "") + text[i + n:]
    return text


def check_mutant(text):
    try:
        p = parse(text)
    except (MalformedError, InvalidError) as e:
        assert re.match(r"(line \d+|program )", e.message), e.message
        return
    roundtrip(p)


@settings(max_examples=400, deadline=None)
@given(mutants(SEED))
def test_fuzz_mutations(text):
    check_mutant(text)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_example(data):
    need("cvm_right_shift", "flatten")
    check_mutant(data.draw(mutants(EXAMPLE.read_text())))


# -- errors: class, line and column ------------------------------------------------------------

BASE = """model "t"
input %x : [1, 3, 8, 8] p8
const @w : [2, 3, 1, 1] p8 = [1, 2, 3, 4, 5, 6]
%c = conv2d %x, @w {channels=2, kernel_size=1, use_bias=false}
output %c
"""
ERRORS = [
    ("conv2d %x,", "conv2d %x %", MalformedError, r"line 4, column 16: expected .*found"),
    ("[1, 2, 3, 4, 5, 6]", "[1, 2, x]", MalformedError, r"line 3, column 30: .*malformed list"),
    ("2, 3, 4", "2,\n 3 4", MalformedError, r"line 4, column 2: expected an integer .* found .3 4."),
    ("output %c\n", "", MalformedError, r"line 4, column \d+: expected .*\"output\".* end of file"),
    ("conv2d %x", "conv3d %x", MalformedError, r"line 4: unknown op conv3d at column 6 in `%c ="),
    ("conv2d %x", "conv2d %y", InvalidError, r"line 4: undefined name %y at column 13"),
    ("@w :", "@x :", InvalidError, r"line 3: duplicate name @x at column 7"),
    ("%c =", "%c : [1, 2, 8, 9] p32 =", InvalidError, r"line 4: .*declared shape \[1, 2, 8, 9\]"),
    ("%c =", "%c : [1, 2, 8, 8] p4 =", InvalidError, r"line 4: .*declared precision 4 .* need 18"),
    ("channels=2", "channels=0", InvalidError, r"line 4: .*channels value 0 out of range"),
    ("channels=2", "chanels=2", InvalidError, r"line 4: conv2d has no attribute chanels .*column 21"),
    ("channels=2", "channels=2, channels=2", InvalidError, r"line 4: attribute channels given twice"),
    ("channels=2", "channels=true", InvalidError, r"line 4: .*channels must be an int"),
    ("%x, @w", "%x, %w", InvalidError, r"line 4: %w is a constant: write @w"),
    ("conv2d %x, @w", "conv2d %x", InvalidError, r"line 4: .*takes 2\.\.3 inputs, got 1"),
    ("5, 6]", "5]", InvalidError, r"line 3: .*5 values for shape \[2, 3, 1, 1\]"),
    ("5, 6]", "5, 600]", InvalidError, r"line 3: .*value 600 at flat index 5 exceeds precision 8"),
    ("p8\nconst", "p0\nconst", InvalidError, r"line 2: .*precision 0 outside"),
    ('"t"\n', '"t"\nsemantics 2\n', InvalidError, r"line 2: semantics version 2 not supported"),
    ('"t"\n', '"t"\nmeta "a" = "1"\nmeta "a" = "2"\n', InvalidError, r"line 3: duplicate metadata"),
    ("output %c", "output %c, %c", InvalidError, r"line 5: output 'c' listed twice"),
    ('model "t"', 'model "\\u{d800}"', MalformedError, r"line 1: .* is not a character"),
    ("channels=2", "channels=" + "9" * 5000, InvalidError, r"line 4: integer 9+\.\.\. is too large"),
]


@pytest.mark.parametrize("old,new,cls,pattern", ERRORS, ids=[e[2].__name__ + ":" + e[3][:24]
                                                               for e in ERRORS])
def test_error_positions(old, new, cls, pattern):
    assert old in BASE
    with pytest.raises(cls) as info:
        parse(BASE.replace(old, new, 1))
    assert type(info.value) is cls
    assert re.search(pattern, info.value.message), info.value.message


def test_base_source_is_valid():
    assert [t.name for t in parse(BASE).tensors] == ["x", "w", "c"]


def test_not_text():
    with pytest.raises(MalformedError):
        parse(b"model")


# -- Builder ---------------------------------------------------------------------------------

def test_builder_const_precision_and_dtype():
    b = Builder("c")
    assert b.tensor(b.const("a", [0, 1, -1])).precision == 2
    assert b.tensor(b.const("z", np.zeros((2, 2), np.int64))).precision == 1
    b.const("big", [1 << 20], shape=(1,))
    assert b.consts[2].dtype == np.dtype("<i4") and b.consts[0].dtype == np.dtype("<i1")
    b.const("flat", range(6), shape=(2, 3))
    assert b.tensor("flat").shape == (2, 3)


@pytest.mark.parametrize("call,pattern", [
    (lambda b: b.const("f", [1.5]), "must be integers"),
    (lambda b: b.const("r", [200], precision=8), "value 200 at flat index 0"),
    (lambda b: b.const("s", [1, 2, 3], shape=(2, 2)), "3 values for shape"),
    (lambda b: b.input("x", (1, 2), 8), "duplicate tensor name 'x'"),
    (lambda b: b.input("", (1,), 8), "bad tensor name"),
    (lambda b: b.op("relu", "nope"), "relu \\(relu_0\\): undefined tensor 'nope'"),
    (lambda b: b.op("nope", "x"), "unknown op 'nope'"),
    (lambda b: b.op("relu", "x", declared=[((1, 3), 8)]), "declared shape \\[1, 3\\]"),
    (lambda b: b.op("relu", "x", declared=[(None, 33)]), "declared precision 33"),
    (lambda b: b.op("relu", "x", outputs=["a", "b"]), "relu has 1 output"),
    (lambda b: b.op("max_pool2d", "x", pool_size=2), "max_pool2d .*4-D"),
    (lambda b: b.output("nope"), "undefined tensor 'nope'"),
    (lambda b: b.build(), "no output"),
])
def test_builder_errors(call, pattern):
    b = Builder("e")
    b.input("x", (1, 2), 8)
    with pytest.raises(InvalidError, match=pattern):
        call(b)


def test_builder_sugar_and_auto_names():
    b = Builder("s")
    x = b.input("relu_0", (2, 2), 8)
    y = b.relu(x)
    assert y == "relu_1" and b.relu(y) == "relu_2"
    with pytest.raises(AttributeError):
        b.no_such_op
