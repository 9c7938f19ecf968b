"""detvm audit: one receipt row per input item, the same rows from the local engine and from a
Dask cluster (a worker killed on the way included), resumable, read in chunks."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import vm
from detvm.cli import main
from tests.conftest import random_input, small_cnn
from tests.test_symbolic_rules import small
from vm import receipt
from vm.audit import trace

pq = pytest.importorskip("pyarrow.parquet")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of two worker processes for the module."""
    from detvm.audit_run import local_cluster
    cluster, client = local_cluster(2)
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A model with a symbolic batch (items are batch elements) and a fixed one (items are
    whole inputs), with their data sets."""
    tmp = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(7)
    (tmp / "batched.dvm").write_bytes(vm.encode(small()))
    np.savez(tmp / "batched.npz", x=rng.integers(-127, 128, (37, 1, 4, 4)).astype(np.int8))
    fixed = small_cnn(batch=1)
    (tmp / "fixed.dvm").write_bytes(vm.encode(fixed))
    items = np.stack([random_input(vm.load(fixed), seed=k)["x"] for k in range(9)])
    np.savez_compressed(tmp / "fixed.npz", x=items)
    return tmp


def audit(*argv) -> int:
    return main(["audit", *map(str, argv)])


def table(path):
    return pq.read_table(path).to_pylist()


def test_rows_are_receipts_of_each_item(data, tmp_path):
    assert audit(data / "batched.dvm", "--inputs", data / "batched.npz", "-o",
                 tmp_path / "b.parquet", "--chunk", "8") == 0
    rows = table(tmp_path / "b.parquet")
    x = np.load(data / "batched.npz")["x"]
    model = vm.load(data / "batched.dvm")
    assert [r["index"] for r in rows] == list(range(37))
    for k in (0, 8, 36):                               # a batch element = its own run
        tr = trace(model, {"x": x[k:k + 1]})
        expected = receipt.dumps(receipt.make(tr, model.name, "root")).decode()
        assert rows[k]["receipt"] == expected and rows[k]["trace_root"] == tr.root
        assert rows[k]["source"] == f"batched.npz[{k}]" and rows[k]["gas"] == tr.gas
        assert dict(rows[k]["outputs"]) == {o.name: o.sha256 for o in tr.outputs}


def test_fixed_models_take_whole_inputs(data, tmp_path):
    assert audit(data / "fixed.dvm", "--inputs", data / "fixed.npz", "-o",
                 tmp_path / "f.parquet", "--trace-level", "hashes", "--chunk", "4") == 0
    rows = table(tmp_path / "f.parquet")
    items = np.load(data / "fixed.npz")["x"]
    model = vm.load(data / "fixed.dvm")
    for k, row in enumerate(rows):
        tr = trace(model, {"x": items[k]})
        assert row["receipt"] == receipt.dumps(receipt.make(tr, model.name, "hashes")).decode()


def test_dask_rows_equal_local_rows_and_a_lost_worker_changes_nothing(data, tmp_path,
                                                                      cluster):
    """The rows from two workers, one of them killed after the first chunk arrives, are the
    local engine's, in input order, none missing or duplicated."""
    from detvm.audit_data import Source
    from detvm.audit_run import Sink, run_dask
    _, client = cluster
    assert audit(data / "batched.dvm", "--inputs", data / "batched.npz", "-o",
                 tmp_path / "local", "--chunk", "3") == 0
    model = vm.load(data / "batched.dvm")
    source = Source(data / "batched.npz", model)
    sink = Sink(tmp_path / "dask", {"test": 1}, resume=False, part_rows=10)
    chunks = ((s, a, source.names(s, s + len(a["x"]))) for s, a in source.chunks(3))
    pids = list(client.run(os.getpid).values())
    killed = []

    def progress(n):
        if not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    run_dask(client, model.to_bytes(), "cpu", chunks, "root", sink, progress, window=6)
    sink.finish(source.count)
    assert killed
    local, remote = table(tmp_path / "local"), table(tmp_path / "dask")
    assert [r["index"] for r in remote] == list(range(37))
    assert remote == local
    client.wait_for_workers(2, timeout=60)             # the nanny restarted it


def test_the_cli_on_a_scheduler(data, tmp_path, cluster):
    c, _ = cluster
    assert audit(data / "fixed.dvm", "--inputs", data / "fixed.npz", "-o", tmp_path / "a",
                 "--chunk", "2") == 0
    assert audit(data / "fixed.dvm", "--inputs", data / "fixed.npz", "-o", tmp_path / "b",
                 "--engine", "dask", "--scheduler", c.scheduler_address, "--chunk", "2") == 0
    assert table(tmp_path / "a") == table(tmp_path / "b")


def test_resume_skips_what_was_written(data, tmp_path, capsys, monkeypatch):
    from detvm import audit_run
    out = tmp_path / "r.parquet"
    argv = [data / "batched.dvm", "--inputs", data / "batched.npz", "-o", out, "--chunk", "5"]
    assert audit(*argv) == 0
    full = table(out)
    assert audit(*argv) == 3 and "pass --resume" in capsys.readouterr().err
    monkeypatch.setattr(audit_run, "PART_ROWS", 10)      # several parts, then lose two
    for p in out.iterdir():
        p.unlink()
    assert audit(*argv) == 0
    files = audit_run.parts(out)
    assert [(a, b) for a, b, _ in files] == [(0, 10), (10, 20), (20, 30), (30, 37)]
    files[-1][2].unlink()
    files[-2][2].unlink()
    (out / ".part-000000000020-000000000030.parquet").write_bytes(b"torn")   # a crash's
    capsys.readouterr()
    assert audit(*argv, "--resume") == 0
    assert "37 rows (17 new, 20 already written)" in capsys.readouterr().out
    assert table(out) == full and not list(out.glob(".part-*"))


def test_resume_refuses_another_audit(data, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert audit(data / "batched.dvm", "--inputs", data / "batched.npz", "-o", out) == 0
    code = audit(data / "fixed.dvm", "--inputs", data / "fixed.npz", "-o", out, "--resume")
    assert code == 3 and "belongs to another audit" in capsys.readouterr().err


def test_readers_agree(data, tmp_path):
    """.npz (stored or compressed), a directory of NAME.npy, and one .npy per item."""
    x = np.load(data / "batched.npz")["x"]
    np.savez_compressed(tmp_path / "z.npz", x=x)
    (tmp_path / "cols").mkdir()
    np.save(tmp_path / "cols" / "x.npy", x)
    (tmp_path / "items").mkdir()
    for k, item in enumerate(x):
        np.save(tmp_path / "items" / f"img{k:03d}.npy", item)
    outs = {}
    for name in ("z.npz", "cols", "items"):
        assert audit(data / "batched.dvm", "--inputs", tmp_path / name, "-o",
                     tmp_path / f"{name}.out", "--chunk", "6") == 0
        outs[name] = [(r["index"], r["receipt"]) for r in table(tmp_path / f"{name}.out")]
    assert outs["z.npz"] == outs["cols"] == outs["items"]
    assert table(tmp_path / "items.out")[3]["source"] == "img003.npy"


BAD = [
    ("float", lambda: {"x": np.zeros((3, 1, 4, 4), np.float32)}, "not an integer type"),
    ("shape", lambda: {"x": np.zeros((3, 1, 4, 5), np.int8)}, "items of shape (1, 4, 5)"),
    ("name", lambda: {"y": np.zeros((3, 1, 4, 4), np.int8)}, "no array 'x'"),
    ("fortran", lambda: {"x": np.asfortranarray(np.zeros((3, 1, 4, 4), np.int8))},
     "Fortran-ordered"),
]


@pytest.mark.parametrize("label,make,message", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_refused_before_running(data, tmp_path, capsys, label, make, message):
    np.savez(tmp_path / "d.npz", **make())
    code = audit(data / "batched.dvm", "--inputs", tmp_path / "d.npz", "-o", tmp_path / "o")
    assert code != 0 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_receipt_rows_replay(data, tmp_path, capsys):
    """A row's receipt is a receipt: detvm replay checks it."""
    out = tmp_path / "r.parquet"
    assert audit(data / "fixed.dvm", "--inputs", data / "fixed.npz", "-o", out,
                 "--trace-level", "hashes") == 0
    row = table(out)[4]
    (tmp_path / "r.json").write_text(row["receipt"])
    np.save(tmp_path / "x.npy", np.load(data / "fixed.npz")["x"][4])
    assert main(["replay", str(tmp_path / "r.json"), "--model", str(data / "fixed.dvm"),
                 "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    assert json.loads(row["receipt"])["trace"]["level"] == "hashes"
