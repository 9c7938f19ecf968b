"""The HTML report's charts: matplotlib figures rendered as inline SVG (no pyplot, no global
state; deterministic ids and no date, so the same facts give the same bytes)."""
from __future__ import annotations

import io
import re

from vm.errors import EnvironmentFault

BLUE, GREY, ORANGE, RED = "#3b6ea8", "#d9dee5", "#e08a2c", "#b8322c"
WIDTH = 10.0


def _figure(height: float, rows: int = 1):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise EnvironmentFault("detvm report draws its charts with matplotlib: "
                               "pip install 'detvm[report]'") from None
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    return fig, fig.subplots(rows, 1, squeeze=False)[:, 0]


def svg(fig, prefix: str) -> str:
    """The figure as one ``<svg>`` element (XML prolog, DOCTYPE and RDF metadata dropped),
    every id and reference to one prefixed with ``prefix``: ids stay unique across the page's
    charts (a clip path found in another chart would cut this one)."""
    import matplotlib
    with matplotlib.rc_context({"svg.hashsalt": "detvm-report", "svg.fonttype": "none"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", buf.getvalue(), flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', rf"\1{prefix}-\2", text)
    return text[text.index("<svg"):].strip()


def _ticks(ax, n: int) -> None:
    step = max(1, n // 24)
    ax.set_xticks(range(0, n, step))
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("instruction")
    ax.grid(axis="y", color=GREY, linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def precision(rows) -> str:
    """Bits the proven bound needs against the carrier's bits; accumulators against their exact
    device (float32 24, float64 53, int64 63 magnitude bits)."""
    accs = [r for r in rows if r.acc_bits is not None]
    fig, axes = _figure(4.6 if accs else 2.6, 2 if accs else 1)
    x = [r.index for r in rows]
    ax = axes[0]
    ax.bar(x, [r.carrier for r in rows], color=GREY, width=0.8, label="carrier (storage bits)")
    ax.bar(x, [r.proven for r in rows], color=BLUE, width=0.8, label="proven bound (bits)")
    ax.set_ylabel("bits")
    ax.set_title("Precision headroom: proven bound vs carrier", loc="left", fontsize=10)
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize=8, frameon=False, ncols=2)
    _ticks(ax, len(rows))
    if accs:
        ax = axes[1]
        xa = [r.index for r in accs]
        ax.bar(xa, [r.acc_limit for r in accs], color=GREY, width=0.8,
               label="exact device limit (bits)")
        ax.bar(xa, [r.acc_bits for r in accs], color=ORANGE, width=0.8,
               label="accumulator bound (bits)")
        for r in accs:
            ax.annotate(r.acc_path, (r.index, r.acc_limit), ha="center", va="bottom",
                        fontsize=7)
        ax.set_ylabel("bits")
        ax.set_ylim(0, 70)
        ax.set_title("Accumulators: proven partial-sum bound vs the exact device", loc="left",
                     fontsize=10)
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize=8, frameon=False, ncols=2)
        _ticks(ax, len(rows))
    return svg(fig, "precision")


def gas_memory(rows, peak: int) -> str:
    """Gas per instruction (log scale) and bytes live while each runs, with the peak."""
    fig, (ax, bx) = _figure(4.6, 2)
    x = [r.index for r in rows]
    ax.bar(x, [max(r.gas, 1) for r in rows], color=BLUE, width=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("gas")
    ax.set_title("Gas per instruction", loc="left", fontsize=10)
    _ticks(ax, len(rows))
    bx.step(x, [r.live / 1024 for r in rows], where="mid", color=BLUE)
    bx.fill_between(x, [r.live / 1024 for r in rows], step="mid", color=BLUE, alpha=0.15)
    bx.axhline(peak / 1024, color=RED, linewidth=0.8, linestyle="--")
    bx.annotate(f"validated peak {peak / 1024:,.1f} KiB", (0, peak / 1024), fontsize=8,
                color=RED, va="bottom")
    bx.set_ylabel("KiB live")
    bx.set_ylim(0, peak / 1024 * 1.18 or 1)
    bx.set_title("Memory: tensors live while each instruction runs", loc="left", fontsize=10)
    _ticks(bx, len(rows))
    return svg(fig, "gas-memory")


def times(rows) -> str:
    """Median milliseconds per instruction (the per-instruction path)."""
    fig, (ax,) = _figure(2.6)
    ax.bar([r.index for r in rows], [r.seconds * 1e3 for r in rows], color=BLUE, width=0.8)
    ax.set_ylabel("ms")
    ax.set_title("Time per instruction (median)", loc="left", fontsize=10)
    _ticks(ax, len(rows))
    return svg(fig, "time")

