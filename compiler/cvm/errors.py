"""CVM's error classification carried on detvm errors.

CVM reports 1 (ERROR_LOGIC: the model's or caller's fault) or 2 (ERROR_RUNTIME). The front-end
raises ordinary detvm errors (MalformedError when bytes cannot be decoded, InvalidError when a
model fails a check) and records CVM's code for that case in ``cvm_code`` (cvm-observed.md §5).
"""
from __future__ import annotations

from vm.errors import DetvmError, InvalidError, MalformedError

LOGIC, RUNTIME = 1, 2


def malformed(message: str, cvm_code: int = RUNTIME) -> MalformedError:
    """A decoding failure (bad JSON, bad params record); CVM's code defaults to 2."""
    return _tag(MalformedError(message), cvm_code)


def invalid(message: str, cvm_code: int = LOGIC) -> InvalidError:
    """A failed load-time check; CVM's code defaults to 1."""
    return _tag(InvalidError(message), cvm_code)


def _tag(error: DetvmError, cvm_code: int) -> DetvmError:
    error.cvm_code = cvm_code
    return error


def cvm_code(error: DetvmError) -> int:
    """CVM's code for ``error``: its tag, else 1 for deterministic errors, 2 otherwise."""
    return getattr(error, "cvm_code", LOGIC if error.deterministic else RUNTIME)
