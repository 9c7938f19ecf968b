"""The five error classes of detvm.

Like the WebAssembly specification, detvm separates what is wrong with a *model or its input*
(deterministic: every machine reaches the same verdict, so a consensus node may charge for it)
from what is wrong with the *machine* (not the model's fault: never charged).

=============  ====  ==============  ===================================================
class          code  deterministic   meaning
=============  ====  ==============  ===================================================
MalformedError  1    yes             the bytes cannot be decoded
InvalidError    2    yes             decodes, but fails validation (shapes, bounds, ...)
TrapError       3    yes             defined run-time failure (bad input shape/values)
EnvironmentFault 4   no              out of memory, executor unavailable, file missing
InternalError   5    no              a bug in detvm: cannot happen after validation
=============  ====  ==============  ===================================================

The library never prints; messages name the offending field or quote the instruction.
"""
from __future__ import annotations

MAX_MESSAGE = 2000
"""Characters of an error message kept: hostile input cannot make a message large."""


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    tail = f"... ({len(text) - limit} more characters)"
    return text[:max(0, limit - len(tail))] + tail


class DetvmError(Exception):
    """Base class of every error detvm raises on purpose. ``code`` and ``kind`` are stable.
    Messages are capped at :data:`MAX_MESSAGE` characters."""

    code = 0
    kind = "error"
    deterministic = False

    def __init__(self, message: str):
        message = clip_text(str(message), MAX_MESSAGE)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class MalformedError(DetvmError):
    """The model bytes (or text) cannot be decoded."""
    code, kind, deterministic = 1, "malformed", True


class InvalidError(DetvmError):
    """The model decodes but fails validation; the message names the instruction or field."""
    code, kind, deterministic = 2, "invalid", True


class TrapError(DetvmError):
    """A defined run-time failure: an input of the wrong name, shape, dtype or range."""
    code, kind, deterministic = 3, "trap", True


class EnvironmentFault(DetvmError):
    """Not the model's fault: out of memory, executor unavailable, file missing."""
    code, kind, deterministic = 4, "environment", False


class InternalError(DetvmError):
    """A bug in detvm: an invariant that validation should have guaranteed does not hold."""
    code, kind, deterministic = 5, "internal", False


ALL = (MalformedError, InvalidError, TrapError, EnvironmentFault, InternalError)
