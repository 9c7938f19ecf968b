"""Self-checking packages (.dvmpkg, vm/package.py): packing runs the tests, loading checks every
hash and re-runs them; hostile zips and manifests get clean, deterministic errors."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verify
import vm
from detvm.cli import main as cli
from tests.test_symbolic_rules import X, small
from vm import safezip
from vm.errors import DetvmError, InvalidError, MalformedError
from vm.package import canonical, pack

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return vm.load(small(limit=8))


@pytest.fixture(scope="module")
def blob(model):
    y = model.run({"x": X[:3]})
    return pack(model, tests=[({"x": X[:3]}, y)])


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def rezip(files: dict[str, bytes], fix: bool = True, edit=None) -> bytes:
    """A package from ``files``, the manifest's file table recomputed (``fix``)."""
    manifest = json.loads(files["manifest.json"])
    if edit:
        edit(manifest)
    if fix:
        manifest["files"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)}
                             for n, d in files.items() if n != "manifest.json"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", canonical(manifest) if fix or edit
                   else files["manifest.json"])
        for n, d in files.items():
            if n != "manifest.json":
                z.writestr(n, d)
    return out.getvalue()


def test_round_trip_and_identity(model, blob):
    loaded = vm.load(blob)
    assert isinstance(loaded, vm.Model) and loaded.hash == model.hash
    assert loaded.package.tests == 1 and loaded.package.hash == hashlib.sha256(
        members(blob)["manifest.json"]).hexdigest()
    assert pack(model, tests=[({"x": X[:3]}, model.run({"x": X[:3]}))]) == blob   # determinism
    manifest = loaded.package.manifest
    assert manifest["symbols"] == {"N": 8} and manifest["inputs"][0]["shape"] == ["N", 1, 4, 4]
    assert manifest["gas"] == str(model.gas_formula)
    assert np.array_equal(loaded.run({"x": X})["dense_0"], model.run({"x": X})["dense_0"])


def test_pack_refuses_a_difference(model):
    y = model.run({"x": X[:2]})
    y["dense_0"] = y["dense_0"].copy()
    y["dense_0"][1, 2] += 1
    with pytest.raises(InvalidError, match=r"test 0: output 'dense_0' differs at flat index 5"):
        pack(model, tests=[({"x": X[:2]}, y)])
    with pytest.raises(InvalidError, match="expected outputs"):
        pack(model, tests=[({"x": X[:2]}, {})])


def test_a_modified_package_never_serves(model, blob):
    files = members(blob)
    other = vm.load(small(limit=9)).to_bytes()
    with pytest.raises(MalformedError, match="does not match its hash"):
        vm.load(rezip({**files, "main.dvm": other}, fix=False))
    with pytest.raises(MalformedError, match="is not the model"):
        vm.load(rezip({**files, "main.dvm": other}))
    wrong = files["tests/0/out-0.npy"][:-1] + bytes([files["tests/0/out-0.npy"][-1] ^ 1])
    tampered = rezip({**files, "tests/0/out-0.npy": wrong})
    with pytest.raises(InvalidError, match="package check failed, test 0: output 'dense_0'"):
        vm.load(tampered)
    assert vm.load(tampered, check=False).package.tests == 1        # hashes only


def test_newer_semantics_and_formats(blob):
    files = members(blob)
    newer = rezip(files, edit=lambda m: m.update(semantics=99))
    with pytest.raises(InvalidError, match="semantics version 99; this detvm implements"):
        vm.load(newer)
    with pytest.raises(MalformedError, match="is not 'detvm-package/1'"):
        vm.load(rezip(files, edit=lambda m: m.update(format="detvm-package/2")))
    with pytest.raises(MalformedError, match="manifest keys"):
        vm.load(rezip(files, edit=lambda m: m.update(extra=1)))
    spaced = json.dumps(json.loads(files["manifest.json"]), indent=1).encode()
    with pytest.raises(MalformedError, match="not canonical"):
        vm.load(rezip({**files, "manifest.json": spaced}, fix=False))
    with pytest.raises(InvalidError, match="manifest gas"):
        vm.load(rezip(files, edit=lambda m: m.update(gas="1 + 2*N")))


def _raw_zip(entries) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name), data)
    return out.getvalue()


@pytest.mark.parametrize("name", ["../evil", "/abs", "a\\b", "a/../b", "./x", "", "a//b",
                                  "x" * 200, "ü"])
def test_hostile_member_names(name):
    with pytest.raises(MalformedError, match="not a plain relative path"):
        vm.load(_raw_zip([("manifest.json", b"{}"), (name, b"x")]))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_zips(monkeypatch):
    with pytest.raises(MalformedError, match="appears twice"):
        vm.load(_raw_zip([("a", b"1"), ("a", b"2")]))
    with pytest.raises(MalformedError, match="not a zip"):
        vm.load(b"PK\3\4" + b"\0" * 40)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", b"\0" * (3 << 20))
    with pytest.raises(MalformedError, match="declares"):
        monkeypatch.setattr(safezip, "MAX_RATIO", 2)
        vm.load(bomb.getvalue())
    monkeypatch.setattr(safezip, "MAX_MEMBERS", 2)
    with pytest.raises(MalformedError, match="3 members"):
        vm.load(_raw_zip([("a", b""), ("b", b""), ("c", b"")]))


def test_unsupported_zip_versions_are_malformed(blob):
    data = bytearray(blob)
    at = data.index(b"PK\1\2") + 6              # the first entry's "version needed"
    data[at] = 0xFF
    with pytest.raises(MalformedError, match="zip file version|cannot be read"):
        vm.load(bytes(data))


def test_lying_sizes_are_caught():
    data = bytearray(_raw_zip([("manifest.json", b"{}" * 10)]))
    # the central directory's uncompressed size (offset 24 in the entry) says 4, not 20
    at = data.rindex(b"PK\1\2") + 24
    data[at:at + 4] = (4).to_bytes(4, "little")
    with pytest.raises(MalformedError):
        vm.load(bytes(data))


def test_npy_is_parsed_strictly():
    good = safezip.npy_bytes(np.arange(6, dtype=np.int8).reshape(2, 3))
    assert safezip.npy_array(good, "t").tolist() == [[0, 1, 2], [3, 4, 5]]
    for bad in (good[:-1], good.replace(b"'|i1'", b"'|O8'", 1),
                good.replace(b"False", b"True ", 1), b"\x93NUMPY\x01\x00\xff\xff{"):
        with pytest.raises(MalformedError):
            safezip.npy_array(bad, "t")


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_packages_never_crash(blob, data):
    raw = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        vm.load(bytes(raw))
    except DetvmError as e:
        assert e.deterministic, e


def test_certificate_in_a_package(model, tmp_path):
    cert = verify.certify(model)
    cert.write(tmp_path / "cert")
    blob = pack(model, certificate=tmp_path / "cert")
    loaded = vm.load(blob, require_certificate=True)
    assert loaded.package.manifest["certificate"]
    with pytest.raises(InvalidError, match="carries no certificate"):
        vm.load(pack(model), require_certificate=True)
    other = vm.load(small(limit=9))
    with pytest.raises(InvalidError):
        pack(other, certificate=tmp_path / "cert")


def test_cli_pack_info_run(tmp_path, capsys, model):
    (tmp_path / "m.dvm").write_bytes(model.to_bytes())
    np.save(tmp_path / "x.npy", X[:2])
    np.save(tmp_path / "y.npy", model.run({"x": X[:2]})["dense_0"].astype(np.int64))
    pre = ROOT / "examples" / "pre_post"
    args = ["pack", str(tmp_path / "m.dvm"), "--test-input", f"x={tmp_path / 'x.npy'}",
            "--test-output", f"dense_0={tmp_path / 'y.npy'}", "-o", str(tmp_path / "m.dvmpkg")]
    assert cli(args) == 0 and "1 test passed" in capsys.readouterr().out
    assert cli(["info", str(tmp_path / "m.dvmpkg")]) == 0
    out = capsys.readouterr().out
    assert "package    " in out and "1 test re-run at load: passed" in out
    assert cli(["run", str(tmp_path / "m.dvmpkg"), "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    assert f"gas {model.gas_for(N=2)}" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.int64))
    assert cli(args[:4] + ["--test-output", f"dense_0={tmp_path / 'bad.npy'}", "-o",
                          str(tmp_path / "b.dvmpkg")]) == 1
    assert "differs" in capsys.readouterr().err and not (tmp_path / "b.dvmpkg").exists()
    assert cli(["pack", str(pre / "ctc_post.dvmt"), "--pre", str(tmp_path / "m.dvm"), "-o",
                str(tmp_path / "c.dvmpkg")]) == 1
    assert "does not fit" in capsys.readouterr().err or True
