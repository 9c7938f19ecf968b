"""The constants of the ``.dvm`` format (its layout is documented in vm/encoding.py), shared by
the encoder (vm/encoding.py) and the decoder (vm/decoding.py)."""
from __future__ import annotations

MAGIC = b"\x89DVM\r\n\x1a\n"
FORMAT_VERSION = 2
"""The newest format this detvm writes and reads; it reads every version in SECTIONS."""
SECTIONS = {1: (b"META", b"TENS", b"CONS", b"CODE", b"OUTS"),
            2: (b"META", b"SYMS", b"TENS", b"CONS", b"CODE", b"OUTS")}
HASH_BYTES = 32
TAG_INT, TAG_BOOL, TAG_INTS, TAG_STR, TAG_NONE, TAG_SYMINTS = range(6)
I64 = (-(1 << 63), (1 << 63) - 1)
SYMBOL_DIM = 1 << 31
"""A TENS dim at or above this stands for symbol number (dim - SYMBOL_DIM) (format 2)."""
