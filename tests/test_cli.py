"""The command line, end to end: compile, dis, info, run, demo, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vm
from detvm.cli import main
from compiler import disassemble
from tests.conftest import random_input, small_cnn


@pytest.fixture
def files(tmp_path):
    src = tmp_path / "cnn.dvmt"
    src.write_text(disassemble(small_cnn()))
    return tmp_path, src


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compile_dis_round_trip(capsys, files):
    tmp, src = files
    code, out, _ = run_cli(capsys, "compile", src, "-o", tmp / "cnn.dvm")
    assert code == 0 and vm.load(tmp / "cnn.dvm").hash in out
    code, out, _ = run_cli(capsys, "dis", tmp / "cnn.dvm")
    assert code == 0 and out == src.read_text()


def test_info_json(capsys, files):
    tmp, src = files
    run_cli(capsys, "compile", src, "-o", tmp / "cnn.dvm")
    code, out, _ = run_cli(capsys, "info", tmp / "cnn.dvm", "--json")
    info = json.loads(out)
    model = vm.load(tmp / "cnn.dvm")
    assert info["model"] == model.hash and info["gas"] == model.gas
    assert info["input_length"] == 384 and info["output_type_size"] == 1
    code, out, _ = run_cli(capsys, "info", tmp / "cnn.dvm")
    assert code == 0 and "gas" in out and model.hash in out


def test_run_writes_npz_and_json(capsys, files):
    tmp, src = files
    model = vm.load(str(src))
    x = random_input(model)["x"]
    np.save(tmp / "x.npy", x)
    code, out, _ = run_cli(capsys, "run", src, "--input", f"x={tmp / 'x.npy'}",
                           "-o", tmp / "out.npz", "--json")
    assert code == 0
    result = json.loads(out)
    expected = model.run(x)["logits"]
    assert result["outputs"]["logits"]["values"] == expected.reshape(-1).tolist()
    assert np.array_equal(np.load(tmp / "out.npz")["logits"], expected)
    code, out, _ = run_cli(capsys, "run", src, "--input", tmp / "x.npy")
    assert code == 0 and "gas" in out


@pytest.mark.parametrize("argv, code, text", [
    (["info", "/no/such/model.dvm"], 3, "environment: cannot read"),
    (["run", "{src}", "--input", "x={bad}"], 1, "trap: input 'x'"),
    (["compile", "{garbage}", "-o", "{out}"], 1, "malformed: line 1"),
    (["info", "{garbage}"], 1, "malformed"),
])
def test_user_errors_are_one_line(capsys, files, argv, code, text):
    tmp, src = files
    np.save(tmp / "bad.npy", np.zeros((1, 2), np.int8))
    (tmp / "garbage.dvmt").write_text("this is not a program\n")
    subst = dict(src=src, bad=tmp / "bad.npy", garbage=tmp / "garbage.dvmt", out=tmp / "o.dvm")
    got, out, err = run_cli(capsys, *[a.format(**subst) for a in argv])
    assert got == code
    assert err.count("\n") == 1 and err.startswith("detvm: ") and text in err
    assert "Traceback" not in err


def test_demo_passes(capsys):
    code, out, _ = run_cli(capsys, "demo")
    assert code == 0 and "matches the expected bytes" in out


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "detvm", "info", "/no/such.dvm"],
                       capture_output=True, text=True)
    assert r.returncode == 3 and r.stderr.startswith("detvm: environment")
    assert "Traceback" not in r.stderr
