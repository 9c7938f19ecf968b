"""ONNX import keeps a symbolic batch symbolic: one program (one hash) for every batch up to its
maximum, bit-exact with onnxruntime at each batch and with the fixed-batch import."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

import vm  # noqa: E402
from compiler.onnx import import_onnx  # noqa: E402
from compiler.onnx.batch import symbol_name  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402
from detvm.cli import main  # noqa: E402
from tests.onnx_util import cnn, mlp, ort_session  # noqa: E402
from vm.errors import InvalidError  # noqa: E402

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    out = {}
    for name, build, shape, fmt in (("cnn", cnn, (3, 8, 8), "qdq"),
                                    ("mlp", mlp, (4, 6), "qoperator")):
        onnx.save(build(0), root / f"{name}.onnx")
        calib = RNG.normal(0, 1, (16, *shape)).astype(np.float32)
        out[name] = (quantize_onnx(root / f"{name}.onnx", {"x": calib}, root / f"{name}.q.onnx",
                                   fmt=fmt, activation="uint8"), shape)
    return out


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_symbolic_import_matches_onnxruntime_at_every_batch(models, name):
    path, shape = models[name]
    program = import_onnx(path, maxima={"N": 40})
    assert program.symbols == {"N": 40}
    model = vm.load(program)
    assert model.inputs[0].shape == ("N", *shape)
    session = ort_session(path)
    for n in (1, 3, 40):
        x = RNG.normal(0, 1, (n, *shape)).astype(np.float32)
        ours = model.run({"x": x}, float_io=True)
        theirs = session.run(None, {"x": x})
        assert np.array_equal(ours["y"], theirs[0]), n
        fixed = vm.load(import_onnx(path, batch=n)).run({"x": x}, float_io=True)
        assert all(np.array_equal(ours[k], fixed[k]) for k in ours)
        assert model.gas_for(N=n) == vm.load(import_onnx(path, batch=n)).gas


def test_default_maximum_and_cli(models, tmp_path, capsys):
    path, _ = models["cnn"]
    program = import_onnx(path)
    assert program.symbols == {"N": 1024}          # small model: the largest default
    assert main(["import-onnx", str(path), "-o", str(tmp_path / "m.dvm"), "--max", "N=7"]) == 0
    assert "N <= 7" in capsys.readouterr().out
    model = vm.load(tmp_path / "m.dvm")
    assert model.symbols == {"N": 7}
    assert main(["import-onnx", str(path), "-o", str(tmp_path / "f.dvm"), "--batch", "2"]) == 0
    assert vm.load(tmp_path / "f.dvm").symbols == {}
    assert main(["info", str(tmp_path / "m.dvm")]) == 0
    assert "gas        " in capsys.readouterr().out
    with pytest.raises(InvalidError, match="--max names no symbolic batch: M"):
        import_onnx(path, maxima={"M": 3})


def test_the_default_maximum_fits_the_ceilings(models):
    path, _ = models["cnn"]
    memory = vm.validate(import_onnx(path, maxima={"N": 1})).memory_formula
    limits = vm.Limits(max_memory=memory.at({"N": 100}))
    assert import_onnx(path, limits=limits).symbols == {"N": 64}   # the largest power of 2


def test_a_batch_beyond_the_default_ceiling_imports_and_runs_under_given_limits(
        models, tmp_path, capsys):
    """The ceilings are the caller's: an import validates under the limits it is given (the
    Python ``limits=``, the CLI's ``--max-memory``), and so does the load that runs it."""
    path, shape = models["cnn"]
    memory = vm.validate(import_onnx(path, maxima={"N": 1})).memory_formula
    ceiling = memory.at({"N": 20})          # batch 24 needs more than this, batch 16 less
    tight = vm.Limits(max_memory=ceiling)
    with pytest.raises(InvalidError, match="peak memory .* exceeds the ceiling"):
        import_onnx(path, batch=24, limits=tight)
    assert import_onnx(path, maxima={"N": 24}, limits=vm.Limits(max_memory=2 * ceiling))
    program = import_onnx(path, batch=16, limits=tight)
    with pytest.raises(InvalidError, match="exceeds the ceiling"):
        vm.load(program, limits=vm.Limits(max_memory=ceiling // 4))
    out = tmp_path / "b24.dvm"
    args = ["import-onnx", str(path), "-o", str(out), "--batch", "24"]
    assert main(args + ["--max-memory", str(ceiling)]) == 1           # invalid: one line
    assert "exceeds the ceiling" in capsys.readouterr().err
    assert main(args + ["--max-memory", f"{-(-2 * ceiling // 1024)}K"]) == 0
    np.save(tmp_path / "x.npy", RNG.normal(0, 1, (24, *shape)).astype(np.float32))
    capsys.readouterr()
    assert main(["info", str(out)]) == 0                  # the default ceiling: 2 GiB
    assert main(["info", str(out), "--max-memory", str(ceiling)]) == 1
    assert main(["run", str(out), "--float-io", "-i", f"x={tmp_path / 'x.npy'}",
                 "--max-memory", "1G"]) == 0
    assert main(["run", str(out), "--float-io", "-i", f"x={tmp_path / 'x.npy'}",
                 "--max-memory", "1K"]) == 1
    with pytest.raises(SystemExit):
        main(["info", str(out), "--max-memory", "lots"])


def test_a_ceiling_reached_between_the_probe_batches_bounds_the_symbol(models):
    """A symbolic batch is derived from builds at batches 2 and 3, which are not held to the
    ceilings (they grow with the batch): a model whose peak memory passes the ceiling between
    batch 2 and batch 3 imports with N <= 2, and N = 3 is refused when it runs."""
    path, shape = models["cnn"]
    memory = vm.validate(import_onnx(path, maxima={"N": 1})).memory_formula
    ceiling = (memory.at({"N": 2}) + memory.at({"N": 3})) // 2
    program = import_onnx(path, limits=vm.Limits(max_memory=ceiling))
    assert program.symbols == {"N": 2}
    model = vm.load(program, limits=vm.Limits(max_memory=ceiling))
    x = RNG.normal(0, 1, (2, *shape)).astype(np.float32)
    assert model.run({"x": x}, float_io=True)
    with pytest.raises(vm.TrapError, match="outside"):
        model.run({"x": np.concatenate([x, x[:1]])}, float_io=True)


def test_a_batch_that_moves_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]      # [N, 4] -> [2, 2N]
    graph = helper.make_graph(
        nodes, "moves", [helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [2, None])],
        [numpy_helper.from_array(np.array([2, -1], np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(InvalidError, match="input 'x' cannot stay symbolic.*--batch"):
        import_onnx(model)
    assert import_onnx(model, batch=3).symbols == {}


def test_shape_fixes_other_dims_and_keeps_the_batch(tmp_path, capsys):
    from detvm.cmd_onnx import shape_arg
    from tests.onnx_util import two_heads
    onnx.save(two_heads(0), tmp_path / "h.onnx")               # x: [N, 3, H, W]
    calib = RNG.normal(0, 1, (8, 3, 6, 6)).astype(np.float32)
    q = quantize_onnx(tmp_path / "h.onnx", {"x": calib}, tmp_path / "h.q.onnx",
                      shapes={"x": ("N", 3, 6, 6)})
    program = import_onnx(q, shapes={"x": ("N", 3, 6, 6)}, maxima={"N": 5})
    assert program.symbols == {"N": 5}
    assert shape_arg("x=N,3,6,6") == ("x", ("N", 3, 6, 6))
    assert shape_arg("x=2,3,6,6") == ("x", (2, 3, 6, 6))
    with pytest.raises(Exception):
        shape_arg("x=3,N,6")
    out = str(tmp_path / "h.dvm")
    assert main(["import-onnx", str(q), "--shape", "x=B,3,6,6", "-o", out]) == 0
    assert vm.load(tmp_path / "h.dvm").symbols == {"B": 1024}


def test_symbol_names():
    assert symbol_name("batch_size") == "batch_size"
    assert symbol_name("batch:0") == "batch_0"
    assert symbol_name("9x") == "_9x"
    assert symbol_name("") == symbol_name("none") == "N"
