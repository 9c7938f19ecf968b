"""Re-checking a certificate directory (written by verify/smt2.py) with z3 and cvc5, and
binding it to a model by regenerating the model's obligations."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .certificate import certify, model_identity
from .smt2 import FORMAT, MANIFEST, cvc5_available, expected_of, run_cvc5, run_z3


@dataclass
class FileCheck:
    """The re-check of one obligation file."""

    name: str
    file: str
    expected: str
    answers: dict = field(default_factory=dict)
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass
class CheckReport:
    """The re-check of a certificate: ``ok`` only when every file gave its expected answer,
    every obligation was proved, and (given the model) the files are the model's own."""

    model: str
    files: list[FileCheck]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.ok for f in self.files)


def check_certificate(directory, model=None, solvers=None, timeout_s: float | None = None,
                      progress=None) -> CheckReport:
    """Re-check the certificate in ``directory`` with z3 (and cvc5 when installed).

    With ``model`` (a vm.Model or Program) the obligations are also regenerated from it and
    must equal the files byte for byte, which binds the certificate to that model.
    """
    path = Path(directory)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return CheckReport("", [], [f"no readable {MANIFEST} in {path}: {e}"])
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(f"unknown certificate format {manifest.get('format')!r}")
    solvers = list(solvers or (["z3", "cvc5"] if cvc5_available() else ["z3"]))
    entries = manifest.get("obligations", [])
    if model is not None:
        problems += _compare_with_model(path, manifest, model)
    files = []
    for k, entry in enumerate(entries):
        files.append(_check_file(path, entry, solvers, timeout_s))
        if progress:
            progress(k + 1, len(entries), files[-1])
    if not entries:
        problems.append("the certificate has no obligation")
    return CheckReport(manifest.get("model", ""), files, problems)


def _check_file(path: Path, entry: dict, solvers, timeout_s) -> FileCheck:
    check = FileCheck(entry.get("name", "?"), entry.get("file", "?"), entry.get("expected", "?"))
    try:
        text = (path / check.file).read_text()
    except OSError as e:
        check.problem = f"missing file: {e}"
        return check
    if hashlib.sha256(text.encode()).hexdigest() != entry.get("sha256"):
        check.problem = "file differs from the digest in the manifest"
    if entry.get("status") != "proved" or check.expected != "unsat" \
            or expected_of(text) != "unsat":
        check.problem = check.problem or f"obligation not proved ({entry.get('status')})"
    for name in solvers:
        answer = run_z3(text, timeout_s=timeout_s) if name == "z3" else run_cvc5(text, timeout_s)
        check.answers[name] = answer
        if answer != check.expected and not (name != "z3" and answer == "unknown"):
            check.problem = check.problem or f"{name} answered {answer}, expected {check.expected}"
    return check


def _compare_with_model(path: Path, manifest: dict, model) -> list[str]:
    if manifest.get("model") != model_identity(model):
        return [f"certificate is for model {manifest.get('model')}, not "
                f"{model_identity(model)}"]
    domain = {k: tuple(v) for k, v in (manifest.get("input_domain") or {}).items()}
    fresh = certify(model, domain or None, solve=False)
    entries = manifest.get("obligations", [])
    if [ob.name for ob in fresh.obligations] != [e.get("name") for e in entries]:
        return ["the certificate's obligations are not the model's obligations"]
    problems = []
    for ob, entry in zip(fresh.obligations, entries):
        try:
            stored = (path / entry.get("file", "")).read_text()
        except OSError:
            continue                          # reported by the file check
        if stored != ob.smt2(fresh.model):
            problems.append(f"{entry.get('file')}: not the obligation {ob.name} of this model")
    return problems
