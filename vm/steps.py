"""A step: one instruction bound to an executor's kernel (vm/interp.py), or a group of
instructions fused into one prepared kernel (vm/fusion.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Step:
    """One bound instruction, or (``covers``) a fused group of instructions."""

    index: int
    kernel: Callable
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    dtypes: tuple[np.dtype, ...]
    kwargs: dict[str, Any]
    frees: tuple[int, ...]
    covers: tuple[int, ...] = ()

    def with_frees(self, frees: tuple[int, ...]) -> "Step":
        if frees == self.frees:
            return self
        return Step(self.index, self.kernel, self.inputs, self.outputs, self.dtypes,
                    self.kwargs, frees, self.covers)
