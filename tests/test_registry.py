"""The op registry: all 37 CVM ops, each declared once with every rule."""
from __future__ import annotations

import pytest

import ops
from ops.base import Attr, OpDef, RULES

CVM_OPS = """conv2d dense relu max_pool2d upsampling non_max_suppression get_valid_counts
broadcast_add broadcast_sub broadcast_mul broadcast_div broadcast_max broadcast_greater abs
negative cvm_precision elemwise_add elemwise_sub clip cvm_clip cvm_left_shift cvm_right_shift
sum max repeat tile flatten concatenate expand_dims reshape squeeze transpose strided_slice take
cvm_lut slice_like where""".split()


def test_all_cvm_ops_are_registered():
    assert len(CVM_OPS) == 37
    assert set(CVM_OPS) <= set(ops.REGISTRY)


@pytest.mark.parametrize("op", ops.all_ops(), ids=lambda op: op.name)
def test_every_op_is_complete(op):
    assert ops.by_opcode(op.opcode) is op and ops.get(op.name) is op
    assert len(op.doc.split()) >= 5, "the doc must state the integer semantics"
    for rule in RULES:
        assert callable(getattr(op, rule))


def test_missing_rule_is_an_import_error_naming_the_op():
    rules = dict(shape=lambda s, a: s[0], precision=lambda p, s, a: p[0],
                 cost=lambda s, a: 1, scalar=lambda r, a: r[0], kernel=lambda xp, x: x,
                 z3=lambda zx, x: x)
    OpDef("fine", 9999, "y = x.", ("x",), ("y",), (), **rules)
    for missing in rules:
        partial = {**rules, missing: None}
        with pytest.raises(TypeError, match=f"op 'broken': missing rule '{missing}'"):
            OpDef("broken", 9999, "y = x.", ("x",), ("y",), (), **partial)
    with pytest.raises(TypeError, match="missing doc"):
        OpDef("broken", 9999, " ", ("x",), ("y",), (), **rules)


def test_attribute_schema_normalizes_and_rejects():
    a = Attr("padding", "ints", default=(0, 0), lo=0, hi=4096, length=(2,), expand=2)
    assert a.normalize(3) == (3, 3) and a.normalize([1, 2]) == (1, 2)
    for bad in ((1, 2, 3), (-1, 0), "x", True):
        with pytest.raises(ops.OpError):
            a.normalize(bad)
    conv = ops.get("conv2d")
    with pytest.raises(ops.OpError, match="has no attribute 'bogus'"):
        conv.check_attrs({"channels": 1, "kernel_size": 3, "bogus": 1})
    with pytest.raises(ops.OpError, match="needs attribute 'channels'"):
        conv.check_attrs({"kernel_size": 3})
