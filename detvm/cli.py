"""The ``detvm`` command line. User errors print one line and exit non-zero, no traceback.

Exit status: 0 ok; 1 the model or input is at fault (malformed, invalid, trap: deterministic);
2 usage; 3 environment (file missing, executor unavailable, out of memory); 4 internal bug.
Each group of commands lives in its own module (``detvm/cmd_*.py``) with ``add_commands``.
"""
from __future__ import annotations

import argparse
import sys

from vm.errors import DetvmError, EnvironmentFault, InternalError

from . import (cmd_audit, cmd_cvm, cmd_dataset, cmd_model, cmd_onnx, cmd_package, cmd_report,
               cmd_verify)

EXIT_USAGE, EXIT_ENV, EXIT_INTERNAL = 2, 3, 4
COMMANDS = (cmd_model, cmd_cvm, cmd_onnx, cmd_package, cmd_verify, cmd_audit, cmd_report,
            cmd_dataset)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except DetvmError as e:
        print(f"detvm: {e}", file=sys.stderr)
        if isinstance(e, InternalError):
            return EXIT_INTERNAL
        return EXIT_ENV if isinstance(e, EnvironmentFault) else 1
    except KeyboardInterrupt:
        print("detvm: interrupted", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    from vm import __version__
    p = argparse.ArgumentParser(prog="detvm", description="Deterministic integer inference VM")
    p.add_argument("--version", action="version", version=f"detvm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMANDS:
        group.add_commands(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
