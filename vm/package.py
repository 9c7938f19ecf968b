"""Self-checking model packages (``.dvmpkg``): one file with the model, its optional pre- and
post-processing models, specs, test data and an optional certificate (after Neuropod).

A package is a zip (vm/safezip.py) of::

    manifest.json            canonical JSON (sorted keys, no spaces): the package's identity
    main.dvm [pre.dvm post.dvm]
    tests/K/in-J.npy, tests/K/out-J.npy        test inputs and expected outputs
    certificate/J            the main model's certificate files (optional)

``manifest.json``: ``format`` (PACKAGE_FORMAT), ``semantics`` (the newest op-set semantics
version its models use), ``name``, ``stages`` ([{role, file, model: hash}], pre/main/post),
``symbols``, ``inputs`` and ``outputs`` (name, shape with symbols, dtype, precision), ``gas``
(the formula), ``tests`` ([{inputs: {name: member}, outputs: {name: member}}]),
``certificate`` (null or {file name: member}) and ``files`` ({member: {sha256, bytes}} for
every other member). :func:`pack` runs the tests before writing and refuses a package whose
outputs differ; :func:`load_package` checks every hash, validates every model and re-runs the
tests before returning (``check=False`` skips the runs), so a corrupted or modified package
never serves a result. The package hash (SHA-256 of the manifest) pins all of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

import ops

from . import plugins
from .encoding import decode, model_hash
from .errors import EnvironmentFault, InvalidError, MalformedError
from .model import Model, open_model
from .pipeline import ROLES, Pipeline
from .safezip import Reader, npy_array, npy_bytes, write

PACKAGE_FORMAT = "detvm-package/1"
MANIFEST = "manifest.json"
MAX_MANIFEST = 16 << 20
KEYS = {"format", "semantics", "name", "stages", "symbols", "inputs", "outputs", "gas",
        "tests", "certificate", "files"}


@dataclass(frozen=True)
class PackageInfo:
    """What a loaded package is: its hash (SHA-256 of its manifest) and manifest."""

    hash: str
    manifest: dict

    @property
    def tests(self) -> int:
        return len(self.manifest["tests"])


def is_package(source) -> bool:
    """A ``.dvmpkg`` path, or bytes that start like a zip file."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source).endswith(".dvmpkg")
    return isinstance(source, (bytes, bytearray, memoryview)) and bytes(source[:4]) == b"PK\3\4"


def canonical(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode() + b"\n"


# ---------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------

def pack(main, *, pre=None, post=None, tests=(), certificate=None, ctx=None) -> bytes:
    """The bytes of a package of ``main`` (a path, .dvm bytes, Program or Model) with the
    optional ``pre``/``post`` models; ``tests`` = [(inputs, expected outputs)], each run now
    (InvalidError on any difference); ``certificate``: the main model's certificate directory
    (re-checked now)."""
    stages = [(role, _model(src, ctx)) for role, src in
              (("pre", pre), ("main", main), ("post", post)) if src is not None]
    runner = Pipeline(stages) if len(stages) > 1 else stages[0][1]
    members: list[tuple[str, bytes]] = []
    manifest = _describe(runner, stages)
    for role, model in stages:
        members.append((f"{role}.dvm", model.to_bytes()))
    for k, (inputs, expected) in enumerate(tests):
        got = runner.run(inputs)
        _compare(k, got, expected, runner)
        case = {"inputs": {}, "outputs": {}}
        for side, infos, values in (("inputs", runner.inputs, inputs),
                                    ("outputs", runner.outputs, got)):
            for j, t in enumerate(infos):
                name = f"tests/{k}/{'in' if side == 'inputs' else 'out'}-{j}.npy"
                members.append((name, npy_bytes(np.asarray(values[t.name]).astype(t.dtype))))
                case[side][t.name] = name
        manifest["tests"].append(case)
    if certificate is not None:
        manifest["certificate"] = _certificate_members(certificate, runner, members)
    manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                         for name, data in members}
    return write([(MANIFEST, canonical(manifest))] + members)


def _model(source, ctx) -> Model:
    if isinstance(source, Model):
        return source
    if is_package(source):
        raise InvalidError("a stage of a package is one model (.dvm, .dvmt), not a package")
    return open_model(source, ctx)


def _describe(runner, stages) -> dict:
    io = lambda ts: [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
                      "precision": t.precision} for t in ts]
    return {"format": PACKAGE_FORMAT, "name": runner.name,
            "semantics": max(m.program.semantics for _, m in stages),
            "stages": [{"role": r, "file": f"{r}.dvm", "model": m.hash} for r, m in stages],
            "symbols": dict(runner.symbols), "inputs": io(runner.inputs),
            "outputs": io(runner.outputs), "gas": str(runner.gas_formula), "tests": [],
            "certificate": None}


def _compare(k: int, got: dict, expected: dict, runner) -> None:
    names = [t.name for t in runner.outputs]
    if sorted(expected) != sorted(names):
        raise InvalidError(f"test {k}: expected outputs {sorted(expected)}, the model gives "
                           f"{names}")
    for name in names:
        want, have = np.asarray(expected[name]), got[name]
        if want.shape != have.shape:
            raise InvalidError(f"test {k}: output {name!r} has shape {have.shape}, expected "
                               f"{want.shape}")
        if want.dtype.kind not in "iu":
            raise InvalidError(f"test {k}: expected output {name!r} is not integer "
                               f"({want.dtype})")
        diff = np.flatnonzero(want.astype(np.int64).reshape(-1) !=
                              have.astype(np.int64).reshape(-1))
        if diff.size:
            i = int(diff[0])
            raise InvalidError(f"test {k}: output {name!r} differs at flat index {i}: the "
                               f"model gives {int(have.reshape(-1)[i])}, expected "
                               f"{int(want.reshape(-1)[i])} ({diff.size} values differ)")


def _certificate_members(directory, runner, members: list) -> dict:
    main = runner.model if isinstance(runner, Pipeline) else runner
    plugins.require("certificates", "check", "certificate checking")(main, directory)
    files = {}
    for j, name in enumerate(sorted(os.listdir(directory))):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                members.append((f"certificate/{j}", f.read()))
            files[name] = f"certificate/{j}"
    return files


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_package(source, ctx=None, limits=None, check: bool = True,
                 require_certificate: bool = False, threads: int | None = None):
    """A package's model (a :class:`Model`, or a :class:`Pipeline` with pre/post models) after
    checking its hashes and models, and (``check``) re-running its tests."""
    if isinstance(source, (str, os.PathLike)):
        try:
            source = open(os.fspath(source), "rb")
        except OSError as e:
            raise EnvironmentFault(f"cannot read {os.fspath(source)}: {e.strerror or e}") \
                from None
    with source if hasattr(source, "read") else _nothing() as _:
        zipped = Reader(source)
        raw = zipped.read(MANIFEST, MAX_MANIFEST)
        manifest = _manifest(raw)
        _check_members(zipped, manifest)
        read = lambda name: _verified(zipped, manifest, name)
        stages = [(s["role"], _stage(read, s, ctx, limits, threads)) for s in manifest["stages"]]
        runner = Pipeline(stages) if len(stages) > 1 else stages[0][1]
        _cross_check(runner, manifest)
        if require_certificate:
            _check_certificate(runner, manifest, read)
        if check:
            for k, case in enumerate(manifest["tests"]):
                inputs = {n: npy_array(read(m), m) for n, m in case["inputs"].items()}
                expected = {n: npy_array(read(m), m) for n, m in case["outputs"].items()}
                try:
                    _compare(k, runner.run(inputs), expected, runner)
                except InvalidError as e:
                    raise InvalidError(f"package check failed, {e.message}") from None
    runner.package = PackageInfo(hashlib.sha256(raw).hexdigest(), manifest)
    return runner


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _manifest(raw: bytes) -> dict:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedError("package: manifest.json is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise MalformedError(f"package format {str(got)[:40]!r} is not {PACKAGE_FORMAT!r}")
    if set(manifest) != KEYS:
        raise MalformedError(f"package manifest keys {sorted(manifest)[:12]} are not "
                             f"{sorted(KEYS)}")
    if canonical(manifest) != raw:
        raise MalformedError("package manifest is not canonical (sorted keys, no spaces)")
    semantics = manifest["semantics"]
    if not isinstance(semantics, int) or isinstance(semantics, bool) or semantics < 1:
        raise MalformedError(f"package semantics {semantics!r} is not a version number")
    if not ops.semantics.known(semantics):
        raise InvalidError(f"the package needs op-set semantics version {semantics}; this "
                           f"detvm implements {', '.join(map(str, ops.semantics.versions()))} "
                           "(a newer detvm is needed)")
    _shape_of(manifest)
    return manifest


def _shape_of(m: dict) -> None:
    """The manifest's structure (types) before anything is read from it."""
    stages, tests, files, cert = m["stages"], m["tests"], m["files"], m["certificate"]
    ok = isinstance(stages, list) and [s.get("role") if isinstance(s, dict) else None
                                       for s in stages] in _ORDERS \
        and all(set(s) == {"role", "file", "model"} and s["file"] == f"{s['role']}.dvm"
                and isinstance(s["model"], str) for s in stages) \
        and isinstance(tests, list) and all(
            isinstance(t, dict) and set(t) == {"inputs", "outputs"} and
            all(isinstance(t[k], dict) and all(isinstance(v, str) for v in t[k].values())
                for k in t) for t in tests) \
        and isinstance(files, dict) and all(
            isinstance(v, dict) and set(v) == {"sha256", "bytes"} for v in files.values()) \
        and (cert is None or (isinstance(cert, dict) and all(
            isinstance(v, str) for v in cert.values())))
    if not ok:
        raise MalformedError("package manifest: stages, tests, files or certificate are "
                             "not in the documented form")


_ORDERS = [[r for r in ROLES if r in combo] for combo in
           (("main",), ("pre", "main"), ("main", "post"), ("pre", "main", "post"))]


def _check_members(zipped: Reader, manifest: dict) -> None:
    listed = set(manifest["files"]) | {MANIFEST}
    if zipped.names() != listed:
        extra = sorted(zipped.names() - listed) or sorted(listed - zipped.names())
        raise MalformedError(f"package members and manifest disagree (e.g. {extra[0]!r})")
    referred = {s["file"] for s in manifest["stages"]} | {
        v for t in manifest["tests"] for side in t.values() for v in side.values()} | set(
        (manifest["certificate"] or {}).values())
    if referred != set(manifest["files"]):
        raise MalformedError("package manifest: files and their uses disagree")


def _verified(zipped: Reader, manifest: dict, name: str) -> bytes:
    entry = manifest["files"][name]
    data = zipped.read(name, entry["bytes"] if isinstance(entry["bytes"], int) else 0)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise MalformedError(f"package member {name!r} does not match its hash: the package "
                             "is corrupt or was modified")
    return data


def _stage(read, stage: dict, ctx, limits, threads) -> Model:
    data = read(stage["file"])
    if model_hash(data) != stage["model"]:
        raise MalformedError(f"package: {stage['file']} is not the model {stage['model'][:16]}"
                             "... the manifest names")
    return Model(decode(data), ctx, limits, data=data, threads=threads)


def _cross_check(runner, manifest: dict) -> None:
    described = _describe(runner, runner.stages if isinstance(runner, Pipeline)
                          else [("main", runner)])
    for key in ("name", "semantics", "symbols", "inputs", "outputs", "gas"):
        if described[key] != manifest[key]:
            raise InvalidError(f"package manifest {key} {str(manifest[key])[:100]} is not the "
                               f"models' {str(described[key])[:100]}")


def _check_certificate(runner, manifest: dict, read) -> None:
    files = manifest["certificate"]
    if not files:
        raise InvalidError("the package carries no certificate")
    check = plugins.require("certificates", "check", "certificate checking")
    main = runner.model if isinstance(runner, Pipeline) else runner
    with tempfile.TemporaryDirectory() as tmp:
        for name, member in files.items():
            if "/" in name or "\\" in name or name in ("", ".", "..") or len(name) > 255:
                raise MalformedError(f"package certificate file name {name[:80]!r}")
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(read(member))
        check(main, tmp)
