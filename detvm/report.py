"""``detvm report``: one self-contained HTML page about a model (docs/audit.md).

The page holds the model's facts, its certificate's status, per instruction the proven
precision against its carrier, the accumulator against its exact device, gas and live memory,
and for an input the trace hashes and timings; charts are inline SVG (matplotlib, the
``report`` extra). Nothing is loaded from anywhere: a Content-Security-Policy forbids it.
"""
from __future__ import annotations

import html
import platform
from dataclasses import dataclass

from vm.version import __version__

from . import report_charts as charts
from .report_facts import CertificateStatus, Row

CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1180px;padding:0 16px;color:#1d2733}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d9dee5;padding-bottom:4px}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12px}table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{text-align:left;
padding:3px 6px;border-bottom:1px solid #eceff3;vertical-align:top}th{background:#f4f6f8;
position:sticky;top:0}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:0}dt{color:#5b6776}
dd{margin:0}.ok{color:#1f7a3a;font-weight:600}.bad{color:#b8322c;font-weight:600}
.muted{color:#5b6776}figure.chart{margin:10px 0 18px}figure.chart svg{width:100%;height:auto;
display:block}.scroll{max-height:640px;overflow:auto;border:1px solid #eceff3}
"""


@dataclass
class Page:
    """Everything the page shows (detvm/cmd_report.py gathers it)."""

    model: object
    inst: object
    rows: list[Row]
    cert: CertificateStatus
    trace: object | None = None
    whole_seconds: float | None = None
    repeat: int = 0


def render(page: Page) -> str:
    """The HTML text of ``page``."""
    m = page.model
    title = f"detvm report: {m.name or m.hash[:16]}"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class=\"muted\">detvm {__version__} on Python "
             f"{_e(platform.python_version())}; semantics version {m.program.semantics}</p>",
             _summary(page), _charts(page), _instructions(page)]
    if page.trace is not None:
        parts.append(_trace(page))
    parts += [_certificate(page.cert), "</body></html>\n"]
    return "\n".join(parts)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _summary(page: Page) -> str:
    m, inst = page.model, page.inst
    io = lambda ts: "<br>".join(f"<code>%{_e(t.name)}</code> {_e(list(t.shape))} "
                                f"p{t.precision} {t.dtype.name}" for t in ts)
    dims = ", ".join(f"{k} = {v}" for k, v in inst.dims.items())
    items = [("model", f"<code>{m.hash}</code>"), ("name", _e(m.name)),
             ("inputs", io(m.inputs)), ("outputs", io(m.outputs)),
             ("instructions", str(len(inst.program.code))),
             ("gas", f"{inst.analysis.gas:,}" + (f" (formula {_e(m.gas_formula)})"
                                                  if m.symbols else "")),
             ("peak memory", f"{inst.analysis.peak_memory:,} bytes")]
    if dims:
        items.append(("this page's instance", _e(dims)))
    items.append(("certificate", _verdict(page.cert)))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h2>Model</h2><dl id=\"summary\">{rows}</dl>"


def _verdict(cert: CertificateStatus, with_id: bool = True) -> str:
    tag = "<span id=\"certificate-status\"" if with_id else "<span"
    if cert.ok is None:
        return f"{tag} class=\"muted\">{_e(cert.source)}</span>"
    verdict = ("<span class=\"ok\">every obligation holds</span>" if cert.ok else
               "<span class=\"bad\">NOT every obligation holds</span>")
    return (f"{tag}>{_e(cert.source)}: {verdict}"
            + (f" <span class=\"muted\">({cert.seconds:.1f} s)</span>" if cert.seconds else "")
            + "</span>")


def _certificate(cert: CertificateStatus) -> str:
    head = f"<h2>Certificate</h2><p>{_verdict(cert, False)}</p>"
    if not cert.items:
        return head
    body = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td class=\"{'ok' if status in ('proved', 'ok') else 'bad'}\">"
        f"{_e(status)}</td><td class=\"n\">{seconds:.3f}</td><td>{_e(detail)}</td></tr>"
        for name, status, seconds, detail in cert.items)
    return (head + "<div class=\"scroll\"><table id=\"certificate\"><thead><tr><th>obligation"
            "</th><th>status</th><th class=\"n\">s</th><th>detail</th></tr></thead><tbody>"
            + body + "</tbody></table></div>")


def _charts(page: Page) -> str:
    figures = [("precision", "Precision headroom", charts.precision(page.rows)),
               ("gas-memory", "Gas and memory",
                charts.gas_memory(page.rows, page.inst.analysis.peak_memory))]
    if page.trace is not None:
        figures.append(("time", "Timings", charts.times(page.rows)))
    return "<h2>Charts</h2>" + "".join(
        f"<figure class=\"chart\" id=\"chart-{key}\" aria-label=\"{_e(label)}\">{svg}</figure>"
        for key, label, svg in figures)


def _instructions(page: Page) -> str:
    traced = page.trace is not None
    head = ("<tr><th class=\"n\">#</th><th>instruction</th><th class=\"n\">proven bits</th>"
            "<th class=\"n\">declared</th><th class=\"n\">carrier</th>"
            "<th class=\"n\">headroom</th><th>accumulator</th><th class=\"n\">gas</th>"
            "<th class=\"n\">live bytes</th>"
            + ("<th class=\"n\">ms</th><th>output sha256</th>" if traced else "") + "</tr>")
    body = []
    for r in page.rows:
        acc = (f"2^{r.acc_bits} &lt; 2^{r.acc_limit} ({_e(r.acc_path)})"
               if r.acc_bits is not None else "")
        cells = [f"<td class=\"n\">{r.index}</td><td><code>{_e(r.text)}</code></td>",
                 f"<td class=\"n\">{r.proven}</td><td class=\"n\">{r.declared}</td>",
                 f"<td class=\"n\">{r.carrier}</td><td class=\"n\">{r.headroom}</td>",
                 f"<td>{acc}</td><td class=\"n\">{r.gas:,}</td><td class=\"n\">{r.live:,}</td>"]
        if traced:
            cells.append(f"<td class=\"n\">{r.seconds * 1e3:.3f}</td><td class=\"mono\">"
                         + "<br>".join(_e(h) for h in r.hashes) + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Instructions</h2><div class=\"scroll\"><table id=\"instructions\"><thead>"
            + head + "</thead><tbody>" + "\n".join(body) + "</tbody></table></div>")


def _trace(page: Page) -> str:
    tr = page.trace
    io = lambda ts: "".join(f"<tr><td><code>%{_e(o.name)}</code></td><td>{_e(list(o.shape))} "
                            f"{o.dtype}</td><td class=\"mono\">{o.sha256}</td></tr>" for o in ts)
    total = sum(r.seconds for r in page.rows)
    return (f"<h2>Trace of this input</h2><dl id=\"trace\"><dt>trace root</dt><dd class=\"mono\">"
            f"{tr.root}</dd><dt>executor</dt><dd>{_e(tr.executor)}</dd><dt>gas</dt><dd>"
            f"{tr.gas:,}</dd><dt>time</dt><dd>{total * 1e3:.3f} ms instruction by instruction, "
            f"{page.whole_seconds * 1e3:.3f} ms for the whole run on the executor's fastest "
            f"path (medians of {page.repeat})</dd></dl><table id=\"io\"><thead><tr><th>tensor"
            f"</th><th>type</th><th>sha256</th></tr></thead><tbody>{io(tr.inputs)}"
            f"{io(tr.outputs)}</tbody></table>")
