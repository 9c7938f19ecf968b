"""The .dvm codec: canonical round trips, and strict decoding under fuzzing."""
from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from vm.decoding import decode
from vm.encoding import HASH_BYTES, MAGIC, encode
from vm.errors import DetvmError, MalformedError
from tests.conftest import small_cnn
from tests.fuzz import mutate_bytes

DATA = encode(small_cnn())


def rehash(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_round_trip_is_identity():
    program = decode(DATA)
    assert encode(program) == DATA
    assert encode(decode(encode(program))) == DATA


def test_hash_is_sha256_of_the_canonical_bytes():
    model = vm.load(DATA)
    assert model.hash == hashlib.sha256(DATA[:-HASH_BYTES]).hexdigest()
    assert model.to_bytes() == DATA


def test_same_program_same_bytes():
    assert encode(small_cnn()) == DATA
    assert encode(small_cnn(seed=5)) != DATA


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 20, len(DATA) // 2, len(DATA) - 33, len(DATA) - 1])
def test_truncation_is_malformed(cut):
    with pytest.raises(MalformedError):
        decode(DATA[:cut])


def test_every_truncation_is_malformed():
    for cut in range(0, len(DATA), 7):
        with pytest.raises(MalformedError):
            decode(DATA[:cut])


def test_trailing_bytes_are_malformed():
    with pytest.raises(MalformedError):
        decode(DATA + b"\0")
    with pytest.raises(MalformedError, match="trailing"):
        decode(rehash(DATA[:-HASH_BYTES] + b"\0"))


def test_bad_magic_version_and_hash():
    with pytest.raises(MalformedError, match="magic"):
        decode(b"X" + DATA[1:])
    body = bytearray(DATA[:-HASH_BYTES])
    body[8:10] = struct.pack("<H", 99)
    with pytest.raises(MalformedError, match="format version 99"):
        decode(rehash(bytes(body)))
    flipped = bytearray(DATA)
    flipped[len(DATA) // 2] ^= 1
    with pytest.raises(MalformedError, match="hash mismatch"):
        decode(bytes(flipped))


def _code_offset(data: bytes) -> int:
    return data.index(b"CODE") + 4 + 8 + 4  # tag, length, instruction count


def test_unknown_opcode_is_malformed():
    body = bytearray(DATA[:-HASH_BYTES])
    at = _code_offset(DATA)
    body[at:at + 2] = struct.pack("<H", 65000)
    with pytest.raises(MalformedError, match="unknown opcode 65000"):
        decode(rehash(bytes(body)))


def test_unknown_attribute_is_malformed():
    body = DATA[:-HASH_BYTES]
    assert b"kernel_size" in body
    with pytest.raises(MalformedError, match="unknown attribute 'kernel_sizf'"):
        decode(rehash(body.replace(b"kernel_size", b"kernel_sizf")))


def test_non_canonical_order_is_malformed():
    # swap two attribute keys of equal length so every length stays right
    body = DATA[:-HASH_BYTES]
    swapped = body.replace(b"strides", b"XXXXXXX").replace(b"padding", b"strides") \
        .replace(b"XXXXXXX", b"padding")
    with pytest.raises(MalformedError):
        decode(rehash(swapped))


def test_not_bytes():
    with pytest.raises(MalformedError):
        decode("a string")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_bytes_never_crash(data):
    """Any mutation, with or without a fixed-up hash: a Model or a deterministic DetvmError."""
    body = bytearray(DATA[:-HASH_BYTES])
    mutate_bytes(data, body, len(MAGIC))
    blob = rehash(bytes(body)) if data.draw(st.booleans()) else bytes(body) + DATA[-HASH_BYTES:]
    try:
        program = decode(blob)
    except DetvmError as e:
        assert e.deterministic, e
        return
    assert encode(program) == blob          # canonical: only the encoder's own bytes decode
    try:
        vm.load(blob)
    except DetvmError as e:
        assert e.deterministic, e


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_malformed(blob):
    with pytest.raises(MalformedError):
        decode(blob)
    with pytest.raises(MalformedError):
        decode(MAGIC + blob)
