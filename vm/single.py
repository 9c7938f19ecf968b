"""One op on numpy arrays, run as a one-instruction program: ``vm.op("relu", x)``.

    y = vm.op("conv2d", x, w, channels=4, kernel_size=(3, 3), padding=(1, 1), use_bias=False)
    m = vm.op_model("conv2d", x, w, ...)          # the validated Model: m.gas, m.run(...)

The arrays become the program's inputs, each with the tightest precision holding its values
(or ``precisions=[...]``); attributes are checked and completed by the op's schema; shapes,
precisions and gas come from the op's rules, exactly as for an instruction of a model, and the
program is validated before it runs. The result is bit-exact with the same instruction inside
any model, on any executor (``ctx=``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import ops
from ops.base import OpError, precision_for

from .checks import expect_int
from .errors import InvalidError, TrapError
from .executors import Context
from .model import Model
from .program import Instr, Program, Tensor
from .validate import MAX_PRECISION, infer


def op_model(name: str, *inputs, precisions: Sequence[int] | None = None,
             ctx: Context | None = None, **attrs: Any) -> Model:
    """The validated one-instruction Model of op ``name`` on arrays shaped like ``inputs``."""
    op = ops.get(name) if isinstance(name, str) else None
    if op is None:
        known = ", ".join(o.name for o in ops.all_ops())
        raise InvalidError(f"unknown op {name!r} (known: {known})")
    arrays = [_integers(a, k) for k, a in enumerate(inputs)]
    if precisions is None:
        precs = [_tight(a) for a in arrays]
    else:
        if isinstance(precisions, (str, bytes)) or not hasattr(precisions, "__iter__"):
            raise TrapError(f"precisions: a list of ints expected, got {type(precisions).__name__}")
        precs = [expect_int(int(p) if isinstance(p, np.integer) else p, f"precisions[{k}]",
                            lo=1) for k, p in enumerate(precisions)]
        if len(precs) != len(arrays):
            raise TrapError(f"{len(precs)} precisions for {len(arrays)} inputs")
    try:
        canon, shapes, out_precs = infer(name, [a.shape for a in arrays], precs, attrs)
    except OpError as e:
        raise InvalidError(f"{name}: {e}") from None
    tensors = [Tensor(f"x{k}", a.shape, p, "input") for k, (a, p) in enumerate(zip(arrays, precs))]
    if max(out_precs, default=0) > MAX_PRECISION:
        raise InvalidError(f"{name}: its output needs precision {max(out_precs)} > "
                           f"{MAX_PRECISION} for these input precisions {precs}")
    outs = list(range(len(tensors), len(tensors) + len(shapes)))
    tensors += [Tensor(f"y{k}", tuple(s), p, "value") for k, (s, p) in enumerate(zip(shapes, out_precs))]
    program = Program(name, tensors, {}, [Instr(name, tuple(range(len(arrays))), tuple(outs),
                                                canon)], outs)
    return Model(program, ctx)


def op(name: str, *inputs, precisions: Sequence[int] | None = None,
       ctx: Context | None = None, **attrs: Any):
    """Run op ``name`` on ``inputs``: its output array (a tuple for several outputs)."""
    model = op_model(name, *inputs, precisions=precisions, ctx=ctx, **attrs)
    out = model.run({f"x{k}": a for k, a in enumerate(inputs)})
    values = tuple(out[t.name] for t in model.outputs)
    return values[0] if len(values) == 1 else values


def _integers(value, k: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as e:
        raise TrapError(f"input {k}: not an array ({type(e).__name__}: {e})") from None
    if array.dtype.kind not in "iu":
        raise TrapError(f"input {k}: dtype {array.dtype} is not an integer type")
    if array.ndim == 0:
        raise TrapError(f"input {k}: a scalar; ops take arrays of at least one dimension")
    return array


def _tight(array: np.ndarray) -> int:
    if not array.size:
        return 1
    return precision_for(max(abs(int(array.min())), abs(int(array.max()))))
