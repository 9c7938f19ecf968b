"""The HTML report (detvm report): its facts against the model's, a page that parses, loads
nothing, and renders in headless Chromium with visible charts and no console message."""
from __future__ import annotations

import shutil
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import vm
from detvm.cli import main
from detvm.report_facts import live_bytes, rows
from tests.conftest import random_input, small_cnn
from vm.validate import infer

pytest.importorskip("matplotlib")


class Page(HTMLParser):
    """Every start tag with its attributes, the text of table cells by table id, and the
    markup inside figures."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.tables, self.figures = [], {}, {}
        self._table = self._figure = None
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and "id" in attrs:
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td" and self._table is not None:
            self._cell = []
        elif tag == "figure":
            self._figure = self.figures.setdefault(attrs.get("id"), [])
        if self._figure is not None:
            self._figure.append(tag)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The small CNN's report with an input (obligations not proved: fast)."""
    tmp = tmp_path_factory.mktemp("report")
    program = small_cnn()
    (tmp / "cnn.dvm").write_bytes(vm.encode(program))
    x = random_input(vm.load(program))["x"]
    np.save(tmp / "x.npy", x)
    code = main(["report", str(tmp / "cnn.dvm"), "--input", f"x={tmp / 'x.npy'}", "-o",
                 str(tmp / "r.html"), "--no-certify", "--repeat", "2"])
    assert code == 0
    return tmp / "r.html", program, {"x": x}


def test_the_page_is_self_contained(report):
    path, _, _ = report
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for _, attrs in page.tags:
        for key in ("src", "href"):
            assert key not in attrs or attrs[key].startswith("#"), attrs
    assert "http://" not in text.replace("http://www.w3.org/", "") and "https://" not in text
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and csp[0]["content"].startswith("default-src 'none'")
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert len(ids) == len(set(ids)), "element ids must be unique across the charts"


def test_the_page_shows_the_model_and_the_trace(report):
    path, program, x = report
    page = Page(path.read_text(encoding="utf-8"))
    model = vm.load(program)
    table = page.tables["instructions"][1:]
    assert [int(r[0]) for r in table] == list(range(len(program.code)))
    trace = model.trace(x)
    assert [r[-1] for r in table] == [e.outputs[0].sha256 for e in trace.entries]
    assert trace.root in path.read_text(encoding="utf-8")
    assert set(page.figures) == {"chart-precision", "chart-gas-memory", "chart-time"}
    assert all(tags.count("svg") == 1 for tags in page.figures.values())


def test_the_facts_are_the_validators(report):
    _, program, _ = report
    model = vm.load(program)
    inst = model.instance()
    facts = rows(inst)
    t = program.tensors
    for r, ins in zip(facts, program.code):
        _, _, precs = infer(ins.op, [t[i].shape for i in ins.inputs],
                            [t[i].precision for i in ins.inputs], ins.attrs)
        assert r.proven == max(precs) <= r.declared <= r.carrier
        assert r.carrier == 8 * t[ins.outputs[0]].dtype.itemsize
        acc = inst.analysis.acc_bounds.get(r.index)
        assert (r.acc_bits is None) == (acc is None)
        if acc is not None:
            assert 1 << (r.acc_bits - 1) <= acc < 1 << r.acc_bits <= 1 << r.acc_limit
    inputs = sum(5 * x.size for x in program.tensors if x.kind != "value")
    assert inputs + sum(r.gas for r in facts) == model.gas
    assert max(live_bytes(program, inst.analysis.last_use)) == inst.analysis.live_peak


def test_certificate_status(tmp_path):
    """Proved now when there is no certificate; re-checked when MODEL.cert exists."""
    import verify
    program = small_cnn(batch=1)
    path = tmp_path / "cnn.dvm"
    path.write_bytes(vm.encode(program))
    assert main(["report", str(path), "-o", str(tmp_path / "a.html")]) == 0
    status = Page((tmp_path / "a.html").read_text()).tables["certificate"]
    assert status[1:] and all(row[1] == "proved" for row in status[1:])
    verify.certify(vm.load(path)).write(tmp_path / "cnn.dvm.cert")
    assert main(["report", str(path), "-o", str(tmp_path / "b.html")]) == 0
    text = (tmp_path / "b.html").read_text()
    assert "re-checked: <span class=\"ok\">every obligation holds" in text


def test_matplotlib_missing_is_an_environment_fault(tmp_path, monkeypatch, capsys):
    (tmp_path / "cnn.dvm").write_bytes(vm.encode(small_cnn()))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = main(["report", str(tmp_path / "cnn.dvm"), "-o", str(tmp_path / "r.html"),
                 "--no-certify"])
    assert code == 3 and "pip install 'detvm[report]'" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")
def test_the_page_renders_in_chromium(report):
    sync_api = pytest.importorskip("playwright.sync_api")
    path, program, _ = report
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            messages, requests = [], []
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: messages.append(f"error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            assert messages == [] and requests == [path.as_uri()]
            for key in ("precision", "gas-memory", "time"):
                chart = page.locator(f"#chart-{key} svg")
                box = chart.bounding_box()
                assert chart.is_visible() and box["width"] > 600 and box["height"] > 150
                assert page.locator(f"#chart-{key} svg path").count() > 10      # drawn bars
            rows_shown = page.locator("#instructions tbody tr").count()
            assert rows_shown == len(program.code)
        finally:
            browser.close()
