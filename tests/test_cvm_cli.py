"""The CVM subcommands: import-cvm, export-cvm, and model directories for info and run."""
from __future__ import annotations

import json

import numpy as np
import pytest

import vm
from vm import runtime as rt
from detvm.cli import main
from tests.cvm_util import input_bytes, params_of, vector


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def model_dir(tmp_path):
    m = vector("j_argmax_rows")
    d = tmp_path / "j_argmax_rows"
    d.mkdir()
    (d / "symbol").write_text(m["graph_json"])
    (d / "params").write_bytes(params_of(m))
    np.save(tmp_path / "x.npy", np.array(m["input"]["values"], np.int8).reshape(3, 4))
    return d


def test_info_of_a_model_directory(capsys, model_dir):
    code, out, _ = cli(capsys, "info", model_dir, "--json", "--compat", "cvm")
    info = json.loads(out)
    assert code == 0 and info["name"] == "j_argmax_rows"
    want = vector("j_argmax_rows")["info"]
    assert {k: info["cvm"][k] for k in want} == want
    assert info["cvm"]["compat"] == "cvm"


def test_run_a_model_directory(capsys, model_dir):
    code, out, _ = cli(capsys, "run", model_dir, "-i", model_dir.parent / "x.npy", "--json")
    values = json.loads(out)["outputs"]["broadcast_mul_0"]["values"]
    assert code == 0 and values == [2, 10, 6, 4, 18, 2, 200, 8, -2, -4, 128, 0]


def test_import_then_export(capsys, model_dir, tmp_path):
    dvm = tmp_path / "j.dvm"
    code, out, _ = cli(capsys, "import-cvm", model_dir / "symbol", model_dir / "params",
                       "-o", dvm, "--compat", "cvm")
    model = vm.load(dvm)
    assert code == 0 and model.hash in out and model.metadata["cvm.compat"] == "cvm"
    assert rt.load_model(model).info()["postprocess"] == "argmax"
    code, _, _ = cli(capsys, "export-cvm", dvm, "-o", tmp_path / "out")
    assert code == 0
    net = rt.CVMAPILoadModel((tmp_path / "out" / "symbol").read_text(),
                             (tmp_path / "out" / "params").read_bytes(), compat="cvm")
    m = vector("j_argmax_rows")
    assert np.frombuffer(rt.CVMAPIInference(net, input_bytes(m)), "<i4").tolist() == m["cpu"]


def test_errors_are_one_line(capsys, tmp_path):
    m = vector("x_prec_overflow")
    (tmp_path / "g.json").write_text(m["graph_json"])
    (tmp_path / "p").write_bytes(params_of(m))
    code, _, err = cli(capsys, "import-cvm", tmp_path / "g.json", tmp_path / "p", "-o",
                       tmp_path / "x.dvm")
    assert code == 1 and err.startswith("detvm: invalid:") and err.count("\n") == 1
    code, _, err = cli(capsys, "import-cvm", tmp_path / "nope", tmp_path / "p", "-o",
                       tmp_path / "x.dvm")
    assert code == 3 and "cannot read" in err


def test_export_refuses_non_cvm_programs(capsys, tmp_path):
    from compiler import Builder
    b = Builder("two-inputs")
    b.output(b.elemwise_add(b.input("a", (2,), 8), b.input("b", (2,), 8)))
    (tmp_path / "m.dvm").write_bytes(vm.encode(b.build()))
    code, _, err = cli(capsys, "export-cvm", tmp_path / "m.dvm", "-o", tmp_path / "out")
    assert code == 1 and "exactly one input" in err
