"""The report's plots: drawn by matplotlib, inlined in the page as SVG.

SVG rather than PNG: its text stays text, so a reader can copy a figure's numbers, a test can
read its tick labels, and it stays sharp when zoomed. Figures are `matplotlib.figure.Figure`
objects, not pyplot ones, so drawing leaves no global state behind.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any

RED, BLUE, GREEN, GREY, ORANGE = "#b5584a", "#4a7fb5", "#5a9e6f", "#777777", "#d9822b"
_XML_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_IDS = re.compile(r"""\b(id="|href="#|url\(#)""")
MAX_TICKS_AT_DATA = 8  # up to this many logged points, each gets its own tick (more would crowd)


def figure(width: float = 7.0, height: float = 3.2, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    """A figure and its axes (one Axes, or an array of them for a grid)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols)


def integer_x(ax: Any, xs: list[float]) -> None:
    """Steps, episodes and updates are counts: a tick at 2.5 names nothing that happened. A short
    run gets a tick at every logged x, a long one round integer steps."""
    from matplotlib.ticker import MaxNLocator

    logged = sorted({x for x in xs if not math.isnan(x)})
    if 0 < len(logged) <= MAX_TICKS_AT_DATA and all(x == int(x) for x in logged):
        ax.set_xticks(logged, [str(int(x)) for x in logged])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def series(values: list[Any]) -> list[float]:
    """Logged values as floats to draw; a missing one becomes NaN (a gap in the line)."""
    return [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan for v in values]


def svg(fig: Any, name: str) -> str:
    """The figure as an `<svg>` element for the page.

    Text is kept as text (`svg.fonttype: none`). Every matplotlib SVG numbers its element ids
    from 1 (`xtick_1`, clip paths), and one page holds many, so ids and the references to them
    get the figure's `name` as a prefix.
    """
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.1, metadata={"Date": None})
    text = _METADATA.sub("", _XML_PROLOGUE.sub("", buf.getvalue(), count=1), count=1)
    return _IDS.sub(lambda m: f"{m.group(1)}{name}-", text)


def plot_html(fig: Any, name: str, alt: str, caption: str = "") -> str:
    """A figure block: the SVG, labelled for screen readers, with an optional caption (HTML)."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (
        f"<figure class='plot' id='plot-{name}' role='img' aria-label='{html.escape(alt, quote=True)}'>"
        f"{svg(fig, name)}{cap}</figure>"
    )


def barh(labels: list[str], bars: dict[str, list[Any]], title: str, xlabel: str, counts: bool = False) -> Any:
    """Horizontal bars, one group per label (the first label on top), one colour per series; a
    missing value (None) draws no bar rather than a bar at 0. `counts`: integer ticks."""
    fig, ax = figure(7, max(2.0, 0.28 * len(labels) * max(1, len(bars)) + 1.0))
    height = 0.8 / max(1, len(bars))
    colors = [BLUE, ORANGE, GREEN, RED]
    for i, (name, values) in enumerate(bars.items()):
        ys = [len(labels) - 1 - j + (len(bars) - 1 - 2 * i) * height / 2 for j in range(len(labels))]
        ax.barh(ys, series(values), height=height, color=colors[i % len(colors)], label=name)
    ax.set_yticks(range(len(labels)), labels[::-1])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if counts:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(bars) > 1:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(bars), frameon=False, fontsize="small")
    return fig
