"""The formal commands: verify, check-cert (docs/formal.md).

z3 is imported only when one of them runs. Exit status: 0 only when every obligation is proved
(verify) or every file re-checks and every obligation was proved (check-cert); 1 otherwise.
"""
from __future__ import annotations

import json
import sys

from vm.errors import TrapError


def add_commands(sub) -> None:
    v = sub.add_parser("verify", help="prove shapes, lengths, gas, memory, no overflow and the "
                                      "float-BLAS licences for every input (Z3)")
    v.add_argument("model")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.add_argument("--smt2", metavar="DIR", help="write the certificate (SMT-LIB2) to DIR")
    v.add_argument("--timeout", type=float, metavar="S",
                   help="wall-clock limit per solver query (an expiry gives unknown)")
    v.add_argument("--domain", action="append", default=[], metavar="NAME=LO:HI",
                   help="restrict an input's values to [LO, HI] (inside its precision)")
    v.set_defaults(func=cmd_verify)

    c = sub.add_parser("check-cert", help="re-check a certificate directory with z3 (and cvc5)")
    c.add_argument("directory")
    c.add_argument("--model", help="also check that the certificate is this model's own")
    c.add_argument("--json", action="store_true")
    c.add_argument("--timeout", type=float, metavar="S")
    c.set_defaults(func=cmd_check_cert)


def _domain(specs: list[str]) -> dict | None:
    out = {}
    for spec in specs:
        name, _, rng = spec.rpartition("=")
        try:
            lo, hi = (int(v) for v in rng.split(":"))
        except ValueError:
            raise TrapError(f"--domain {spec}: expected NAME=LO:HI") from None
        out[name] = (lo, hi)
    return out or None


def _progress(stream):
    def report(done, total, ob):
        stream.write(f"[{done:>{len(str(total))}}/{total}] {ob.status:<14} {ob.seconds:7.3f}s  "
                     f"{ob.name}: {ob.detail}\n")
        stream.flush()
    return report


def cmd_verify(args) -> int:
    from verify.certificate import certify, summary_line
    from vm import load
    model = load(args.model)
    stream = sys.stderr if args.json else sys.stdout
    quiet = args.json and not sys.stderr.isatty()
    cert = certify(model, _domain(args.domain), timeout_s=args.timeout,
                   progress=None if quiet else _progress(stream))
    if args.smt2:
        cert.write(args.smt2)
    if args.json:
        print(json.dumps(cert.to_dict()))
    else:
        for ob in cert.obligations:
            if ob.witness is not None:
                print(f"witness for {ob.name}: {json.dumps(ob.witness)}")
        print(summary_line(cert) + (f"; certificate written to {args.smt2}" if args.smt2 else ""))
    return 0 if cert.proved else 1


def cmd_check_cert(args) -> int:
    from verify.recheck import check_certificate
    from vm import load
    model = load(args.model) if args.model else None
    quiet = args.json

    def progress(done, total, check):
        if not quiet:
            answers = ", ".join(f"{k} {v}" for k, v in check.answers.items())
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.file}: {answers}"
                  + (f" ({check.problem})" if check.problem else ""))
    report = check_certificate(args.directory, model, timeout_s=args.timeout, progress=progress)
    if args.json:
        print(json.dumps({"model": report.model, "ok": report.ok, "problems": report.problems,
                          "files": [{"file": f.file, "name": f.name, "answers": f.answers,
                                     "ok": f.ok, "problem": f.problem} for f in report.files]}))
    else:
        for problem in report.problems:
            print(f"FAIL {problem}")
        bad = sum(not f.ok for f in report.files) + len(report.problems)
        print(f"certificate {args.directory} for model {report.model}: "
              + ("every obligation re-checked" if report.ok else f"{bad} problem(s)"))
    return 0 if report.ok else 1
