"""``vm.load``: a model, a package or a chain of models from a path, bytes or a Program."""
from __future__ import annotations

import os
from typing import Any

from . import plugins
from .errors import InvalidError
from .executors import Context
from .model import Model, open_model
from .package import is_package, load_package
from .pipeline import Pipeline
from .validate import Limits


def load(source: Any, ctx: Context | None = None, limits: Limits | None = None,
         require_certificate: bool = False, certificate: Any = None,
         threads: int | None = None, pre: Any = None, post: Any = None, check: bool = True):
    """Load a model from a path (``.dvm`` bytes, ``.dvmt`` text or a ``.dvmpkg`` package) or
    from bytes; validate it completely, then bind it to ``ctx`` (default ``vm.cpu()``).

    ``require_certificate``: the model must carry a certificate, the directory ``certificate``
    (default: ``<model path>.cert`` next to the model file; a package's own), that is this
    model's own and re-checks with z3 (verify/, docs/formal.md); a missing or failing one is
    an InvalidError. ``threads`` (cpu): None keeps the BLAS library's own threading; n runs on
    n lanes with one BLAS thread each (needs threadpoolctl; docs/performance.md). The bytes
    never depend on it. ``pre``/``post``: pre- and post-processing models (sources as for
    ``source``) chained around it: a :class:`vm.pipeline.Pipeline` (vm/pipeline.py). A package
    (vm/package.py) brings its own chain; its hashes are checked and, unless
    ``check=False``, its test data re-run before it is returned.
    """
    if is_package(source):
        if pre is not None or post is not None:
            raise InvalidError("a package carries its own pre/post models: pre=/post= are for "
                               "single models")
        return load_package(source, ctx, limits, check, require_certificate, threads)
    model = source if isinstance(source, Model) else open_model(source, ctx, limits, threads)
    if pre is not None or post is not None:
        stages = [("main", model)]
        if pre is not None:
            stages.insert(0, ("pre", _stage(pre, ctx, limits, threads)))
        if post is not None:
            stages.append(("post", _stage(post, ctx, limits, threads)))
        model = Pipeline(stages)
    if require_certificate:
        checker = plugins.require("certificates", "check", "certificate checking")
        if certificate is None and isinstance(source, (str, os.PathLike)):
            certificate = os.fspath(source) + ".cert"
        checker(getattr(model, "model", model), certificate)
    return model


def _stage(source: Any, ctx, limits, threads) -> Model:
    if isinstance(source, Model):
        return source
    if is_package(source):
        raise InvalidError("a pre/post stage is one model (.dvm, .dvmt), not a package")
    return open_model(source, ctx, limits, threads)
