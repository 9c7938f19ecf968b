"""Every public call of the seed-style APIs and of a closed Model, given wrong types, fails with
a clear detvm error (or the API's own documented error class or status code), never an
AttributeError, TypeError or IndexError from inside."""
from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

import vm
import vm.acl as acl
from detvm.common import DEMO_DIR
from vm import ndarray as nd, runtime as rt, utils
from vm.accl import AsyncAccl, MultiStreamAsyncAccl, SyncAccl
from vm.errors import DetvmError
from vm.lite import LiteNetwork

BAD = (None, -1, "bogus", object(), np.array([1.5]), [[], {}])
ALLOWED = (DetvmError, rt.CVMError)
BLOCKING = ("wait", "stop", "close", "shutdown", "receive")
"""Calls that block or end an object by contract (tested on their own)."""


def public(obj):
    for name, fn in inspect.getmembers(obj, callable):
        if not name.startswith("_") and not inspect.isclass(fn):
            yield name, fn


def arity(fn) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.default is p.empty and p.kind in
               (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def sweep(fn, name) -> list[str]:
    """Call ``fn`` with every pair of bad values (the rest None); the unexpected failures."""
    n, problems = arity(fn), []
    for args in itertools.product(BAD, repeat=min(n, 2)):
        args = list(args) + [BAD[0]] * (n - len(args))
        try:
            fn(*args)
        except ALLOWED:
            pass
        except Exception as e:
            problems.append(f"{name}{tuple(type(a).__name__ for a in args)}: "
                            f"{type(e).__name__}: {e}")
            break
    return problems


MODULES = {"vm.runtime": rt, "vm.ndarray": nd, "vm.utils": utils, "vm.acl": acl,
           "vm.acl.mdl": acl.mdl, "vm.acl.rt": acl.rt, "vm.acl.util": acl.util,
           "vm.acl.op": acl.op}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_functions(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems = [p for name, fn in public(MODULES[module])
                if getattr(fn, "__module__", "").startswith(MODULES[module].__name__)
                for p in sweep(fn, f"{module}.{name}")]
    assert not problems, "\n".join(problems)


def instances():
    model = vm.load(DEMO_DIR / "digits.dvm")
    lite = LiteNetwork()
    lite.load(str(DEMO_DIR / "digits.dvm"))
    yield "LiteNetwork(unloaded)", LiteNetwork()
    yield "LiteNetwork", lite
    yield "LiteTensor", lite.get_io_tensor("image")
    yield "SyncAccl", SyncAccl(model)
    yield "AsyncAccl", AsyncAccl(model)
    yield "MultiStreamAsyncAccl", MultiStreamAsyncAccl(model)
    yield "NDArray", nd.array(np.arange(4, dtype=np.int32))
    closed = vm.load(DEMO_DIR / "digits.dvm")
    closed.close()
    yield "Model(closed)", closed


@pytest.mark.parametrize("label,obj", list(instances()), ids=lambda v: v if isinstance(v, str) else "")
def test_methods(label, obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # a dump path "bogus" is a valid file name
    problems = [p for name, fn in public(obj) if name not in BLOCKING
                for p in sweep(fn, f"{label}.{name}")]
    assert not problems, "\n".join(problems)


def test_closed_model_refuses_every_run():
    model = vm.load(DEMO_DIR / "digits.dvm")
    x = np.load(DEMO_DIR / "digits_inputs.npz")["image"]
    model.close()
    for call in (lambda: model.run({"image": x}), lambda: model.run_many([{"image": x}]),
                 model.instance, model.bound_plan):
        with pytest.raises(vm.TrapError, match="closed"):
            call()
    assert model.gas > 0 and len(model.hash) == 64         # the facts stay readable


def test_a_context_or_precisions_of_the_wrong_kind():
    x = np.array([1, -2], np.int8)
    for call in (lambda: vm.load(DEMO_DIR / "digits.dvm", "cpu"),
                 lambda: vm.Model(vm.load(DEMO_DIR / "digits.dvm").program, 1),
                 lambda: vm.op("relu", x, ctx="cpu"),
                 lambda: vm.op("relu", x, precisions=["x"]),
                 lambda: vm.op("relu", x, precisions=3)):
        with pytest.raises(DetvmError):
            call()
