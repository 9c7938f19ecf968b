"""Semantics versions side by side (ops/semantics.py): a model runs under the rules of the
version its header names, on every executor, whatever version is current."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import ops
import vm
from compiler import Builder, disassemble, parse
from tests.semantics_v2 import right_shift_half_down, version_2
from vm.errors import InvalidError

TIES = np.array([[-6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7, 10, 14, 18, -18]], np.int16)


def shifter(semantics: int | None = None):
    """x (p16) -> cvm_right_shift by 2 -> relu: every x = 4k + 2 is a tie."""
    b = Builder("shifter", semantics)
    x = b.input("x", (1, 16), 16)
    y = b.op("cvm_right_shift", x, precision=8, shift_bit=2)
    b.output(b.op("elemwise_add", y, y, outputs=["out"]))
    return b.build()


@pytest.fixture
def v2():
    with version_2() as version:
        yield version


def expected(x: np.ndarray, half_up: bool) -> np.ndarray:
    """floor(x/4 + 1/2) (half up) or ceil(x/4 - 1/2) (half down), doubled, exactly."""
    q = [(v + 2) // 4 if half_up else -((-v + 2) // 4) for v in x.reshape(-1).tolist()]
    return 2 * np.array(q, np.int64).reshape(x.shape)


@pytest.mark.parametrize("ctx", [vm.cpu, vm.reference, vm.formal])
def test_each_version_runs_its_own_rules(v2, ctx):
    for version, half_up in ((1, True), (2, False)):
        program = shifter(version)
        assert program.semantics == version
        model = vm.load(vm.encode(program), ctx())
        assert np.array_equal(model.run({"x": TIES})["out"], expected(TIES, half_up))


def test_the_file_decides_not_the_current_version(v2, monkeypatch):
    data_v1 = vm.encode(shifter(1))
    monkeypatch.setattr(ops.semantics, "CURRENT", v2)
    assert shifter().semantics == v2                    # new programs get the current version
    model = vm.load(data_v1)
    assert model.program.semantics == 1
    assert np.array_equal(model.run({"x": TIES})["out"], expected(TIES, True))


def test_the_versions_differ_exactly_at_the_ties(v2):
    a = vm.load(shifter(1)).run({"x": TIES})["out"]
    b = vm.load(shifter(2)).run({"x": TIES})["out"]
    ties = (TIES.astype(np.int64) % 4 == 2)
    assert np.array_equal(a != b, ties) and ties.any()


def test_version_round_trips_through_bytes_and_text(v2):
    program = shifter(2)
    again = vm.decode(vm.encode(program))
    assert again.semantics == 2 and vm.encode(again) == vm.encode(program)
    text = disassemble(program)
    assert "semantics 2" in text and vm.encode(parse(text)) == vm.encode(program)
    assert vm.load(shifter(1)).hash != vm.load(program).hash


def conv_tail(semantics: int):
    b = Builder("conv-tail", semantics)
    x = b.input("x", (1, 2, 6, 6), 8)
    w = b.const("w", np.arange(18, dtype=np.int8).reshape(1, 2, 3, 3) % 3 - 1, precision=8)
    y = b.op("conv2d", x, w, channels=1, kernel_size=(3, 3), use_bias=False)
    b.output(b.op("cvm_right_shift", y, precision=8, shift_bit=1))
    return b.build()


def test_a_changed_op_is_not_fused(v2):
    """The CPU fusion pass composes version 1's shift into the conv's tail; under version 2
    the program runs per instruction with the version's own kernel (the reference's bytes)."""
    data = {"x": np.random.default_rng(0).integers(-9, 10, (1, 2, 6, 6)).astype(np.int8)}
    assert len(vm.load(conv_tail(1)).plan.fast) == 1                 # fused under v1
    model = vm.load(conv_tail(2))
    assert len(model.plan.fast) == 2
    ref = vm.load(conv_tail(2), vm.reference()).run(data)["cvm_right_shift_0"]
    out = model.run(data)["cvm_right_shift_0"]
    assert np.array_equal(out, ref)
    assert not np.array_equal(out, vm.load(conv_tail(1)).run(data)["cvm_right_shift_0"])


def test_unknown_versions_are_refused():
    program = shifter(1)
    program.semantics = 7
    with pytest.raises(InvalidError, match="semantics version 7 not supported"):
        vm.load(vm.encode(program))
    with pytest.raises(InvalidError, match="semantics version 7 not supported"):
        vm.load(program)
    with pytest.raises(InvalidError, match="semantics version 3 not supported"):
        Builder("x", 3)


def test_declarations_are_checked(v2):
    shift = right_shift_half_down()
    with pytest.raises(ValueError, match="already declared"):
        ops.semantics.declare(2, {})
    with pytest.raises(ValueError, match="needs version 4"):
        ops.semantics.declare(5, {})
    with pytest.raises(ValueError, match="keep its name and opcode"):
        ops.semantics.declare(3, {"cvm_right_shift": replace(shift, opcode=999)})
    with pytest.raises(ValueError, match="does not replace a known op"):
        ops.semantics.declare(3, {"no_such_op": shift})
    with pytest.raises(ValueError, match="only the newest"):
        ops.semantics.forget(1)
    assert ops.semantics.changed(1) == frozenset()
    assert ops.semantics.changed(2) == {"cvm_right_shift"}
    assert ops.get("relu", 2) is ops.get("relu", 1)


def batched_shifter(semantics: int):
    """The shifter over a symbolic batch N <= 4: every instance follows the file's version."""
    b = Builder("batched-shifter", semantics)
    b.symbol("N", 4)
    x = b.input("x", ("N", 16), 16)
    b.output(b.op("cvm_right_shift", x, precision=8, shift_bit=2, outputs=["out"]))
    return b.build()


@pytest.mark.parametrize("ctx", [vm.cpu, vm.reference])
def test_instances_of_a_batched_model_keep_its_version(v2, ctx, monkeypatch):
    x = np.concatenate([TIES, -TIES, TIES + 1])
    for version, half_up in ((1, True), (2, False)):
        model = vm.load(vm.encode(batched_shifter(version)), ctx())
        monkeypatch.setattr(ops.semantics, "CURRENT", 3 - version)      # the other one
        assert model.instance(N=3).program.semantics == version
        assert np.array_equal(2 * model.run({"x": x})["out"], expected(x, half_up))
        trace = model.trace({"x": x})
        assert trace.semantics == version and trace.gas == model.gas_for(N=3)


@pytest.mark.parametrize("ctx", ["cpu", "reference"])
def test_a_receipt_replays_under_its_own_version(v2, ctx, tmp_path, monkeypatch, capsys):
    """A receipt names the version its model ran under; with another version current, replaying
    it runs that version's rules and matches, and the other version's twin does not."""
    from detvm.cli import main
    for version in (1, 2):
        (tmp_path / f"v{version}.dvm").write_bytes(vm.encode(shifter(version)))
    np.save(tmp_path / "x.npy", TIES)
    x = f"x={tmp_path / 'x.npy'}"
    for version in (1, 2):
        monkeypatch.setattr(ops.semantics, "CURRENT", version)
        model, receipt = tmp_path / f"v{version}.dvm", tmp_path / f"v{version}.json"
        assert main(["run", str(model), "--input", x, "--receipt", str(receipt),
                     "--trace-level", "full"]) == 0
        assert vm.receipt.loads(receipt.read_bytes())["semantics"] == version
    capsys.readouterr()
    for current in (1, 2):
        monkeypatch.setattr(ops.semantics, "CURRENT", current)
        for version in (1, 2):
            model, receipt = tmp_path / f"v{version}.dvm", tmp_path / f"v{version}.json"
            assert main(["replay", str(receipt), "--model", str(model), "--input", x,
                         "--ctx", ctx]) == 0
            assert capsys.readouterr().out.startswith("match:")
        twin = tmp_path / "v2.dvm"
        assert main(["replay", str(tmp_path / "v1.json"), "--model", str(twin), "--input", x,
                     "--ctx", ctx, "--json"]) == 1
        problems = json.loads(capsys.readouterr().out)["problems"]
        assert "semantics version 2 is not the receipt's 1" in problems
