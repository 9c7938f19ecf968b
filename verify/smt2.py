"""Portable evidence: obligations as standalone SMT-LIB2 files, the solvers that answer them,
and the writing of a certificate directory (re-checking it: verify/recheck.py).

A certificate is a directory::

    manifest.json      {"format", "model" (SHA-256 of the .dvm), "input_domain", "solver",
                        "obligations": [{"name", "status", "method", "detail", "seconds",
                                         "file", "expected", "sha256"}, ...]}
    0001-shapes.smt2   one standalone query per obligation: its *negated* claim, so the
    ...                expected answer (recorded in the file as ``(set-info :status unsat)``
                       and in the manifest) is ``unsat``

Re-checking runs z3, and cvc5 when it is installed (``pip install 'detvm[cert]'``), on every
file, and compares each answer with the expected one. Files are produced by this module from
terms, never by a solver's printer, so the same model gives the same bytes on every machine.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

FORMAT = "detvm-certificate/1"
MANIFEST = "manifest.json"
RLIMIT = 50_000_000
"""Resource limit (deterministic, z3 units) of one certificate query."""


def smt2_text(model: str, name: str, expected: str, decls, asserts, note: str = "") -> str:
    """One standalone SMT-LIB2 query: ``decls`` are (symbol, sort) constants or (symbol, sort,
    term) definitions, ``asserts`` terms as
    s-expression text; ``expected`` the recorded answer (``unsat`` for a proved claim)."""
    lines = ["; detvm proof obligation (the negation of the claim: expected unsat)",
             f"; model {model}", f"; obligation {name}"]
    lines += [f"; {line}" for line in note.splitlines() if line]
    lines += ["(set-logic ALL)", f"(set-info :status {expected})"]
    lines += [f"(declare-const {d[0]} {d[1]})" if len(d) == 2 else
              f"(define-fun {d[0]} () {d[1]} {d[2]})" for d in decls]
    lines += [f"(assert {a})" for a in asserts]
    lines += ["(check-sat)", "(exit)", ""]
    return "\n".join(lines)


def num(v: int) -> str:
    """An integer literal in SMT-LIB (negatives as ``(- n)``)."""
    return str(v) if v >= 0 else f"(- {-v})"


def total(terms) -> str:
    """The sum of s-expression terms (0 for none)."""
    terms = list(terms)
    if not terms:
        return "0"
    return terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"


def expected_of(text: str) -> str | None:
    m = re.search(r"\(set-info :status (sat|unsat|unknown)\)", text)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

def run_z3(text: str, rlimit: int = RLIMIT, timeout_s: float | None = None) -> str:
    """z3's answer to ``text``: sat, unsat or unknown (seed and resource limit pinned)."""
    from .domains import solver
    s = solver(rlimit, timeout_s)
    try:
        s.from_string(text)
    except Exception as e:  # a malformed file is not a proof of anything
        return f"error: {e}"
    return str(s.check())


def cvc5_available() -> bool:
    try:
        import cvc5  # noqa: F401
    except ImportError:
        return False
    return True


def run_cvc5(text: str, timeout_s: float | None = None) -> str:
    """cvc5's answer to ``text`` (python bindings, seed pinned)."""
    import cvc5
    tm = cvc5.TermManager()
    slv = cvc5.Solver(tm)
    slv.setOption("seed", "0")
    if timeout_s:
        slv.setOption("tlimit-per", str(int(timeout_s * 1000)))
    parser = cvc5.InputParser(slv)
    parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "obligation")
    symbols, answers = parser.getSymbolManager(), []
    try:
        while True:
            cmd = parser.nextCommand()
            if cmd.isNull():
                break
            out = cmd.invoke(slv, symbols).strip()
            if out:
                answers.append(out)
    except Exception as e:
        return f"error: {e}"
    return answers[-1] if answers else "error: no answer"


# ---------------------------------------------------------------------------------------------
# Writing and re-checking a certificate directory
# ---------------------------------------------------------------------------------------------

def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80]


def write_certificate(cert, directory) -> Path:
    """Write ``cert`` (a verify.certify.Certificate) as a certificate directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.smt2"):
        old.unlink()
    entries = []
    for k, ob in enumerate(cert.obligations, 1):
        text = ob.smt2(cert.model)
        fname = f"{k:04d}-{slug(ob.name)}.smt2"
        (path / fname).write_text(text)
        entries.append({**ob.summary(), "file": fname, "expected": expected_of(text),
                        "sha256": hashlib.sha256(text.encode()).hexdigest()})
    manifest = {"format": FORMAT, "model": cert.model, "input_domain": cert.input_domain,
                "solver": {"seed": 0, "rlimit": RLIMIT}, "obligations": entries}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return path
