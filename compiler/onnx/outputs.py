"""The end of an import: ONNX graph outputs become program outputs (their scales and zero
points in the metadata, for ``float_io``), then the program is built."""
from __future__ import annotations

from vm.errors import InvalidError
from vm.program import Program
from vm.validate import Limits

from .lower import Lowering, floats, ints, scale32
from .quantops import materialize
from .values import Acc, Int, Post, Q, describe


def finish(ctx: Lowering, limits: Limits | None = None) -> Program:
    """The program of a lowered graph: its outputs, its metadata (validated under ``limits``)."""
    for out in ctx.graph.outputs:
        output(ctx, out)
    for k, v in ctx.meta.items():
        ctx.b.meta(k, v)
    return ctx.b.build(limits)


def output(ctx: Lowering, onnx_name: str) -> None:
    """Make the ONNX graph output ``onnx_name`` a program output, its scales in the metadata."""
    v = post = ctx.values.get(onnx_name)
    if isinstance(v, Post):
        v = v.value
    if isinstance(v, (Q, Acc)):
        v = materialize(ctx, v, None)
    elif not isinstance(v, Int):
        kind = describe(v) if v is not None else "undefined"
        raise InvalidError(f"ONNX output {onnx_name!r} is {kind}: only computed tensors "
                           "can be outputs")
    name = _named(ctx, v.name, onnx_name)
    ctx.b.output(name)
    key = f"output.{name}."
    if isinstance(post, Post):
        ctx.meta[key + "post"] = f"{post.kind}:{post.axis}"
    if isinstance(v, (Q, Acc)):
        ctx.meta[key + "scale"] = floats(scale32(v))
        if isinstance(v, Q):
            ctx.meta[key + "zero_point"] = ints(v.zero)
        if len(v.scale) > 1:
            ctx.meta[key + "axis"] = str(v.axis)


def _named(ctx: Lowering, name: str, onnx_name: str) -> str:
    """The tensor ``name`` under the ONNX output name (renamed, or copied when it is an
    input, a constant or already an output)."""
    t = ctx.b.tensor(name)
    wanted = "".join(c if c.isprintable() else "_" for c in onnx_name)[:255] or "out"
    if name == wanted and t.kind == "value" and name not in ctx.outputs:
        ctx.outputs.add(name)
        return name
    if t.kind == "value" and wanted not in ctx.b and name not in ctx.outputs:
        ctx.b.rename(name, wanted)
    else:
        wanted = ctx.op("reshape", name, out=wanted, shape=t.shape)
    ctx.outputs.add(wanted)
    return wanted
