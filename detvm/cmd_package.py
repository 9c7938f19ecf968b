"""The package command: pack (a self-checking .dvmpkg; vm/package.py)."""
from __future__ import annotations

import numpy as np

from vm.errors import EnvironmentFault, InvalidError

from .common import write_file


def add_commands(sub) -> None:
    p = sub.add_parser("pack", help="pack a model, its pre/post models and test data into one "
                                    "self-checking .dvmpkg")
    p.add_argument("model", help="the main model (.dvm or .dvmt)")
    p.add_argument("--test-input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="a test input (a .npz gives several by name)")
    p.add_argument("--test-output", action="append", default=[], metavar="NAME=FILE.npy",
                   help="its expected output (a .npz gives several by name)")
    p.add_argument("--pre", metavar="PRE.dvm", help="a pre-processing model")
    p.add_argument("--post", metavar="POST.dvm", help="a post-processing model")
    p.add_argument("--certificate", metavar="DIR", help="the main model's certificate "
                                                        "(detvm verify --smt2 DIR)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.dvmpkg")
    p.set_defaults(func=cmd_pack)


def arrays(specs: list[str], what: str) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` / ``FILE.npz`` specs as arrays by name."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EnvironmentFault(f"cannot read {what} {path}: {e}") from None
        found = {k: loaded[k] for k in loaded.files} if hasattr(loaded, "files") else None
        if found is None and not name:
            raise InvalidError(f"--{what} {spec}: write NAME=FILE.npy")
        for key, value in (found or {name: loaded}).items():
            if key in out:
                raise InvalidError(f"--{what} gives {key!r} twice")
            out[key] = value
    return out


def cmd_pack(args) -> None:
    from vm.package import pack
    inputs, outputs = arrays(args.test_input, "test-input"), arrays(args.test_output,
                                                                    "test-output")
    if bool(inputs) != bool(outputs):
        raise InvalidError("give both --test-input and --test-output (or neither)")
    tests = [(inputs, outputs)] if inputs else []
    data = pack(args.model, pre=args.pre, post=args.post, tests=tests,
                certificate=args.certificate)
    write_file(args.output, data)
    from vm import load
    loaded = load(args.output)
    checked = f"{len(tests)} test{'s' if len(tests) != 1 else ''} passed" if tests \
        else "no test data: not self-checking"
    print(f"{args.output}: package {loaded.package.hash} ({checked})")
