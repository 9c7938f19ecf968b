"""The audit commands end to end: run --receipt, replay, trace, diff (with a fault injected into
one executor's kernel)."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

import vm
from detvm.cli import main
from tests.conftest import random_input, small_cnn
from vm.executors import Executor


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    program = small_cnn()
    (tmp_path / "cnn.dvm").write_bytes(vm.encode(program))
    x = random_input(vm.load(program))["x"]
    np.save(tmp_path / "x.npy", x)
    return tmp_path, tmp_path / "cnn.dvm", f"x={tmp_path / 'x.npy'}"


@pytest.fixture
def faulty_relu(monkeypatch):
    """The cpu executor's relu kernel adds 1 to element 5: a fault in one executor only."""
    original = Executor.kernel

    def kernel(self, op):
        k = original(self, op)
        if self.name != "cpu" or op.name != "relu":
            return k

        def broken(xp, *args, **kw):
            out = np.array(k(xp, *args, **kw), copy=True)
            out.reshape(-1)[5] += 1
            return out
        return broken
    monkeypatch.setattr(Executor, "kernel", kernel)


def test_run_receipt_then_replay(capsys, files):
    tmp, model, x = files
    code, out, _ = cli(capsys, "run", model, "--input", x, "--receipt", tmp / "r.json")
    assert code == 0 and "output sha256" in out
    doc = vm.receipt.loads((tmp / "r.json").read_bytes())
    tr = vm.load(model).trace({"x": np.load(tmp / "x.npy")})
    assert doc == vm.receipt.make(tr, "small-cnn")
    code, out, _ = cli(capsys, "replay", tmp / "r.json", "--model", model, "--input", x,
                       "--ctx", "reference")
    assert code == 0 and out.startswith("match:") and tr.root in out


def test_replay_names_what_differs(capsys, files, faulty_relu):
    tmp, model, x = files
    cli(capsys, "run", model, "--input", x, "--receipt", tmp / "r.json", "--ctx", "reference")
    code, out, _ = cli(capsys, "replay", tmp / "r.json", "--model", model, "--input", x)
    assert code == 1
    assert "first difference: instruction 2 `%relu_0 : [2, 4, 8, 8] p8 = relu" in out
    assert "differs: instruction 2 (relu) differs" in out and "differs: trace root" in out
    np.save(tmp / "y.npy", np.zeros((2, 3, 8, 8), np.int8))
    code, out, _ = cli(capsys, "replay", tmp / "r.json", "--model", model, "--input",
                       f"x={tmp / 'y.npy'}", "--json")
    result = json.loads(out)
    assert code == 1 and result["first"] is None
    assert result["problems"][0].startswith("input 'x': sha256")


def test_trace_prints_every_hash(capsys, files):
    tmp, model, x = files
    code, out, _ = cli(capsys, "trace", model, "--input", x, "--json")
    doc = json.loads(out)
    tr = vm.load(model).trace({"x": np.load(tmp / "x.npy")})
    assert code == 0 and doc["root"] == tr.root
    assert [o["sha256"] for e in doc["instructions"] for o in e["outputs"]] == tr.leaves()
    code, out, _ = cli(capsys, "trace", model, "--input", x)
    assert code == 0 and out.splitlines()[-1] == f"root   {tr.root}"
    assert all(h in out for h in tr.leaves())


def test_diff_agrees(capsys, files):
    tmp, model, x = files
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", "cpu,reference")
    assert code == 0 and out.startswith("agree: cpu, reference")


def test_diff_finds_the_injected_fault(capsys, files, faulty_relu):
    tmp, model, x = files
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", "reference,cpu")
    assert code == 1
    assert "first divergence: %relu_0, computed by instruction 2 `%relu_0 : [2, 4, 8, 8] p8 = relu" in out
    expected = vm.load(model, vm.reference()).trace({"x": np.load(tmp / "x.npy")}, keep=[2])
    value = int(expected.entries[2].outputs[0].values.reshape(-1)[5])
    assert f"%relu_0[0, 0, 0, 5] (flat index 5): reference {value}, cpu {value + 1}" in out
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", "reference,cpu",
                       "--json")
    d = json.loads(out)["divergence"]
    assert (d["index"], d["op"], d["element"], d["values"]) == (2, "relu", [0, 0, 0, 5],
                                                               [value, value + 1])
    assert d["inputs"] == [{"name": "cvm_right_shift_0", "shape": [2, 4, 8, 8],
                            "precision": 8}]


@pytest.mark.parametrize("level", ["hashes", "full"])
def test_diff_against_a_receipt(capsys, files, faulty_relu, level):
    tmp, model, x = files
    cli(capsys, "run", model, "--input", x, "--receipt", tmp / "r.json", "--ctx", "reference",
        "--trace-level", level)
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--against", tmp / "r.json",
                       "--json")
    d = json.loads(out)["divergence"]
    assert code == 1 and d["index"] == 2 and d["sides"] == ["cpu", "receipt"]
    if level == "full":
        assert d["element"] == [0, 0, 0, 5] and d["values"][0] == d["values"][1] + 1
    else:
        assert d["element"] is None and "hashes only" in d["note"]
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--against", tmp / "r.json",
                       "--executors", "reference")
    assert code == 0 and out.startswith("agree: reference, receipt")


def test_diff_usage_errors(capsys, files):
    tmp, model, x = files
    code, _, err = cli(capsys, "diff", model, "--input", x, "--executors", "cpu")
    assert code == 1 and "at least two" in err
    code, _, err = cli(capsys, "diff", model, "--input", x, "--executors", "cpu,tpu")
    assert code == 1 and "unknown executor 'tpu'" in err
    (tmp / "bad.json").write_text("{}")
    code, _, err = cli(capsys, "replay", tmp / "bad.json", "--model", model, "--input", x)
    assert code == 1 and err.startswith("detvm: malformed: receipt")


@pytest.fixture
def faulty_fused_step(monkeypatch):
    """The cpu executor's fused steps: the first one covering several instructions adds 1 to
    element 5 of its output (a fault in the fusion pass, not in any op's kernel)."""
    original = Executor.fast_steps

    def fast_steps(self, program, analysis, steps, threads=None):
        fast = original(self, program, analysis, steps, threads)
        if self.name != "cpu":
            return fast
        k = next(k for k, s in enumerate(fast) if len(s.covers) > 1)
        kernel = fast[k].kernel

        def broken(xp, *args, **kw):
            out = np.array(kernel(xp, *args, **kw), copy=True)
            out.reshape(-1)[5] += 1
            return out
        return fast[:k] + [dataclasses.replace(fast[k], kernel=broken)] + fast[k + 1:]
    monkeypatch.setattr(Executor, "fast_steps", fast_steps)


def test_fast_diff_finds_a_fused_step_at_fault(capsys, files, faulty_fused_step):
    tmp, model, x = files
    cpu = "cpu:numpy"                    # the fusion pass's steps
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", f"{cpu},reference")
    assert code == 0                     # the per-instruction path does not fuse
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", f"reference,{cpu}",
                       "--fast", "--json")
    d = json.loads(out)["divergence"]
    assert code == 1 and d["steps"] == {cpu: [0, 1, 2]} and d["output"] == "relu_0"
    assert d["element"] == [0, 0, 0, 5] and d["values"][1] == d["values"][0] + 1
    assert f"{cpu}'s step covering instructions 0, 1, 2 is at fault" in d["note"]
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", f"reference,{cpu}",
                       "--fast")
    assert f"{cpu} computed it in one step covering instructions 0, 1, 2" in out


def test_fast_diff_agrees_across_backends(capsys, files):
    """numpy's fused steps, onnxruntime's lowered regions (where its self-test licenses it)
    and the reference: every tensor both compute is the same."""
    tmp, model, x = files
    try:
        vm.load(model, vm.cpu(backend="onnxruntime"))
        names = "reference,cpu:numpy,cpu:onnxruntime"
    except vm.EnvironmentFault:
        names = "reference,cpu:numpy"
    code, out, _ = cli(capsys, "diff", model, "--input", x, "--executors", names, "--fast")
    assert code == 0 and out.startswith(f"agree: {names.replace(',', ', ')} (")
    assert re.search(r"\(\d+ tensors? compared\)", out)
