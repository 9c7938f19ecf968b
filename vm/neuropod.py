"""Neuropod's packaging and inference API on detvm: a problem definition (input and output
specs with symbolic dims), a package that checks itself with test data, ``infer``.

    create_neuropod(neuropod_path="adder.dvmpkg", model_name="addition_model", model=program,
                    input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
                    test_input_data=TEST_INPUT_DATA, test_expected_out=TEST_EXPECTED_OUT)
    with load_neuropod("adder.dvmpkg") as neuropod:
        results = neuropod.infer({"x": x, "y": y})

A neuropod is a detvm package (``.dvmpkg``, vm/package.py): creating one runs the test data
and refuses to write on any difference; loading one checks every hash and re-runs the test
data. A spec is ``{"name", "dtype", "shape"}``: dtypes are the tensors' integer storage types
(``int8``/``int32``), a dim is an int, None (anything) or a symbol name that must take one
value in every tensor of a call. The specs are checked against the model when the package is
made and against the tensors of every ``infer``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from .checks import expect, expect_path
from .errors import EnvironmentFault, InvalidError, TrapError
from .model import Model, open_model
from .package import load_package, pack


def create_neuropod(neuropod_path, model_name: str, model, input_spec: Sequence[Mapping],
                    output_spec: Sequence[Mapping], test_input_data: Mapping | None = None,
                    test_expected_out: Mapping | None = None, pre=None, post=None,
                    certificate=None) -> None:
    """Package ``model`` (a path, .dvm bytes, a Program or a Model) as ``neuropod_path``: the
    specs are checked against it, the test data run (InvalidError on a difference)."""
    path = expect_path(neuropod_path, "neuropod_path")
    expect(model_name, str, "model_name")
    main = _model(model)
    if main.name != model_name:                # the packaged model carries the given name
        main = Model(replace(main.program, name=model_name))
    pre, post = (None if m is None else _model(m) for m in (pre, post))
    ins, outs = _specs(input_spec, "input_spec"), _specs(output_spec, "output_spec")
    _match(ins, (pre or main).inputs, "input")
    _match(outs, (post or main).outputs, "output")
    if test_expected_out is not None and test_input_data is None:
        raise TrapError("test_expected_out needs test_input_data")
    if test_input_data is not None:
        _check_tensors(ins, expect(test_input_data, Mapping, "test_input_data"), {}, "test input")
    tests = [(dict(test_input_data), dict(expect(test_expected_out, Mapping, "test_expected_out")))
             ] if test_expected_out is not None else []
    data = pack(main, pre=pre, post=post, tests=tests, certificate=certificate)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise EnvironmentFault(f"cannot write {path}: {e.strerror or e}") from None
    if test_input_data is not None:          # as Neuropod: the package, reloaded, infers
        with load_neuropod(path) as neuropod:
            _check_tensors(outs, neuropod.infer(dict(test_input_data)), {}, "test output")


def _model(source) -> Model:
    return source if isinstance(source, Model) else open_model(source)


class Neuropod:
    """A loaded neuropod: ``infer(inputs)`` checks the tensors against the specs, runs the
    package's model (or pipeline), checks the outputs. A context manager."""

    def __init__(self, runner, input_spec: list[dict], output_spec: list[dict]):
        self.runner, self.inputs, self.outputs = runner, input_spec, output_spec

    @property
    def name(self) -> str:
        return self.runner.name

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        expect(inputs, Mapping, "infer inputs")
        symbols: dict[str, int] = {}
        _check_tensors(self.inputs, inputs, symbols, "input")
        results = self.runner.run(dict(inputs))
        _check_tensors(self.outputs, results, symbols, "output")
        return results

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Neuropod":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_neuropod(neuropod_path, check: bool = True, **load_options) -> Neuropod:
    """A neuropod from its package, after its hashes, models and (``check``) test data are
    checked; its specs are the package's (symbols named by the model)."""
    runner = load_package(expect_path(neuropod_path, "neuropod_path"), check=check,
                          **load_options)
    spec = lambda infos: [{"name": t.name, "dtype": t.dtype.name, "shape": tuple(t.shape)}
                          for t in infos]
    return Neuropod(runner, spec(runner.inputs), spec(runner.outputs))


def _specs(spec, what: str) -> list[dict]:
    expect(spec, (list, tuple), what)
    out = []
    for k, item in enumerate(spec):
        expect(item, Mapping, f"{what}[{k}]")
        if set(item) != {"name", "dtype", "shape"}:
            raise TrapError(f"{what}[{k}]: a spec has the keys name, dtype and shape")
        dims = expect(item["shape"], (list, tuple), f"{what}[{k}] shape")
        for d in dims:
            if not (d is None or isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= 0)):
                raise TrapError(f"{what}[{k}] shape: {d!r} is not an int, None or a symbol")
        try:
            dtype = np.dtype(item["dtype"])
        except TypeError:
            raise TrapError(f"{what}[{k}]: {item['dtype']!r} is not a dtype") from None
        out.append({"name": expect(item["name"], str, f"{what}[{k}] name"),
                    "dtype": dtype.name, "shape": tuple(dims)})
    return out


def _match(spec: list[dict], infos, what: str) -> None:
    """Each spec names one of the model's tensors, with its dtype and compatible dims."""
    if sorted(s["name"] for s in spec) != sorted(t.name for t in infos):
        raise InvalidError(f"the {what} spec names {sorted(s['name'] for s in spec)}; the model's "
                           f"{what}s are {sorted(t.name for t in infos)}")
    by_name = {t.name: t for t in infos}
    for s in spec:
        t = by_name[s["name"]]
        if s["dtype"] != t.dtype.name:
            raise InvalidError(f"{what} {t.name!r}: the spec says {s['dtype']}, the model's "
                               f"tensor is {t.dtype.name}")
        if len(s["shape"]) != len(t.shape) or any(
                isinstance(d, int) and (d != m if isinstance(m, int) else False)
                for d, m in zip(s["shape"], t.shape)):
            raise InvalidError(f"{what} {t.name!r}: spec shape {s['shape']} does not fit the "
                               f"model's {tuple(t.shape)}")


def _check_tensors(spec: list[dict], tensors: Mapping, symbols: dict, what: str) -> None:
    """The tensors match the spec: names, dtypes, dims, one value per symbol."""
    names = sorted(str(k) for k in tensors)
    if names != sorted(s["name"] for s in spec):
        raise TrapError(f"{what}s {names} do not match the spec {[s['name'] for s in spec]}")
    for s in spec:
        array = tensors[s["name"]]
        if not isinstance(array, np.ndarray) or array.dtype.name != s["dtype"]:
            got = array.dtype.name if isinstance(array, np.ndarray) else type(array).__name__
            raise TrapError(f"{what} {s['name']!r}: {got}, the spec says {s['dtype']}")
        if array.ndim != len(s["shape"]):
            raise TrapError(f"{what} {s['name']!r}: {array.ndim} dims, the spec {s['shape']}")
        for d, n in zip(s["shape"], array.shape):
            if isinstance(d, int) and d != n:
                raise TrapError(f"{what} {s['name']!r}: shape {array.shape} is not {s['shape']}")
            if isinstance(d, str) and symbols.setdefault(d, n) != n:
                raise TrapError(f"{what} {s['name']!r}: symbol {d!r} is {n} here, "
                                f"{symbols[d]} elsewhere")


__all__ = ["create_neuropod", "load_neuropod", "Neuropod"]
