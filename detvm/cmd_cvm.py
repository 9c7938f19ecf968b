"""The CVM commands: import-cvm, export-cvm (docs/cvm-compat.md)."""
from __future__ import annotations

from pathlib import Path

from vm.errors import EnvironmentFault

from .common import import_cvm, load_model, write_file


def add_commands(sub) -> None:
    ic = sub.add_parser("import-cvm", help="import a CVM model (graph JSON + params) to .dvm")
    ic.add_argument("graph")
    ic.add_argument("params")
    ic.add_argument("-o", "--output", required=True)
    ic.add_argument("--compat", choices=["cvm"], help="reproduce CVM's quirks")
    ic.set_defaults(func=cmd_import_cvm)

    ec = sub.add_parser("export-cvm", help="write a model as a CVM directory (symbol, params)")
    ec.add_argument("model")
    ec.add_argument("-o", "--output", required=True, metavar="DIR")
    ec.set_defaults(func=cmd_export_cvm)


def cmd_import_cvm(args) -> None:
    from vm import Model
    model = Model(import_cvm(Path(args.graph), Path(args.params), args.compat))
    write_file(args.output, model.to_bytes())
    print(f"{args.output}: {model.hash} ({len(model.program.code)} instructions, "
          f"gas {model.gas})")


def cmd_export_cvm(args) -> None:
    from compiler.cvm import export_cvm
    graph, params = export_cvm(load_model(args.model).program)
    try:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create {args.output}: {e.strerror or e}") from None
    write_file(Path(args.output) / "symbol", graph)
    write_file(Path(args.output) / "params", params)
    print(f"{args.output}: symbol ({len(graph)} bytes), params ({len(params)} bytes)")
