"""The report command: one self-contained HTML page about a model (docs/audit.md)."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import load_model, read_inputs, write_file


def add_commands(sub) -> None:
    r = sub.add_parser("report", help="write a self-contained HTML report: precision headroom, "
                                      "gas, memory, certificate, trace hashes and timings")
    r.add_argument("model")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input to trace and time (a .npz supplies inputs by name)")
    r.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    r.add_argument("--ctx", default="cpu", choices=["cpu", "reference", "gpu"])
    r.add_argument("--certificate", metavar="DIR",
                   help="re-check this certificate (default: MODEL.cert when it exists, "
                        "else prove the obligations now)")
    r.add_argument("--no-certify", action="store_true",
                   help="do not prove the obligations when there is no certificate")
    r.add_argument("--repeat", type=int, default=5, metavar="K",
                   help="timings: median of K runs (default 5)")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> None:
    from vm.errors import TrapError

    from .report import Page, render
    from .report_facts import certificate, rows, timings
    if args.repeat < 1:
        raise TrapError("--repeat must be at least 1")
    model = load_model(args.model, args.ctx)
    feeds = read_inputs(args.input, model) if args.input else None
    dims = model._check_inputs(feeds)[1] if feeds is not None else dict(model.symbols)
    inst = model.instance(**dims)
    page_rows = rows(inst)
    trace = whole = None
    if feeds is not None:
        trace = model.trace(feeds)
        per, whole = timings(model, feeds, args.repeat)
        for r, e, s in zip(page_rows, trace.entries, per):
            r.seconds, r.hashes = s, [o.sha256 for o in e.outputs]
    directory = args.certificate or (args.model + ".cert"
                                     if Path(args.model + ".cert").is_dir() else None)
    if directory is None and not args.no_certify:
        sys.stderr.write("proving the model's obligations (--no-certify skips)...\n")
    cert = certificate(model, directory, not args.no_certify)
    write_file(args.output, render(Page(model, inst, page_rows, cert, trace, whole,
                                        args.repeat)))
    print(f"{args.output}: {len(page_rows)} instructions"
          + (f", trace root {trace.root}" if trace is not None else "")
          + f"; certificate: {cert.source}"
          + ("" if cert.ok is None else " (all hold)" if cert.ok else " (NOT all hold)"))
