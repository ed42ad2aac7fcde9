"""Static pictures, all drawn by matplotlib: files (PNG, SVG) and SVG inlined in HTML pages.

The interactive charts of the HTML pages are drawn in the browser by ``_plots.js``; every
static picture (the front as a file, the legend of the pages' charts, the per-layer policy
bars of the report) comes from matplotlib through :func:`inline_svg` or ``savefig``, so
there is one renderer and one set of colours.

Inline SVG is trimmed for embedding: no XML prologue or metadata (so no external URL in the
page), element ids only where they are referenced, and matplotlib's style rule scoped to
its own picture.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

FRONT_COLOR = "#1f77b4"
DOMINATED_COLOR = "#a8a8a8"
BASE_COLOR = "#d62728"
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def inline_svg(fig: Any, *, name: str) -> str:
    """``fig`` as an ``<svg class="mpl">`` element to put in an HTML page; closes ``fig``.

    Args:
        fig: A matplotlib figure.
        name: Unique on the page (it salts the ids of clip paths and markers).
    """
    import matplotlib

    salt = hashlib.sha1(name.encode()).hexdigest()[:8]
    buf = io.StringIO()
    try:
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
            fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    finally:
        pyplot().close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = text.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)
    text = text.replace("<svg ", '<svg class="mpl" ', 1)
    text = text.replace('<style type="text/css">*{', "<style>svg.mpl *{", 1)
    return re.sub(r'<g id="[^"]*"', "<g", text).strip()


@cache
def legend_svg() -> str:
    """The legend of the front's charts (the same marks as the browser and the files draw)."""
    from matplotlib.lines import Line2D

    def mark(**kwargs: Any) -> Line2D:
        return Line2D([], [], **{"ls": "none", "marker": "o", "markersize": 7, **kwargs})

    handles = [
        mark(color=FRONT_COLOR),
        mark(color=DOMINATED_COLOR, markersize=6),
        mark(mfc="none", mec=DOMINATED_COLOR, markersize=6),
        Line2D([], [], color=FRONT_COLOR, lw=1, marker="o", mfc="white", mec=FRONT_COLOR),
        mark(color=BASE_COLOR, marker="D", markersize=6),
        Line2D([], [], color=BASE_COLOR, ls="--", lw=1),
    ]
    labels = [
        "Pareto front (meets the budget)",
        "dominated",
        "misses the budget",
        "ring: the trial's other cost",
        "base model",
        "budget limit",
    ]
    fig = pyplot().figure(figsize=(9.6, 0.34))
    fig.legend(handles, labels, loc="center", ncol=6, frameon=False, fontsize=8, borderpad=0)
    return inline_svg(fig, name="legend")


def bar_chart_svg(title: str, bars: Sequence[tuple[str, float | None, str, str]]) -> str:
    """Horizontal bars as inline SVG: one ``(name, fraction 0..1, label, colour)`` per bar."""
    plt = pyplot()
    height = 0.45 + 0.24 * len(bars)
    fig, ax = plt.subplots(figsize=(7.2, height))
    names = [n if len(n) <= 34 else "…" + n[-33:] for n, *_ in bars]
    ys = list(range(len(bars)))[::-1]
    fracs = [min(max(frac or 0.0, 0.0), 1.0) for _, frac, _, _ in bars]
    ax.barh(ys, [1.0] * len(bars), color="#eeeeee", height=0.75)
    ax.barh(ys, fracs, color=[c for *_, c in bars], height=0.75)
    for y, (_, _, label, _) in zip(ys, bars, strict=True):
        ax.text(1.02, y, label, va="center", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_title(title, fontsize=10, fontweight="bold", loc="left")
    fig.subplots_adjust(left=0.34, right=0.8, top=1 - 0.3 / height, bottom=0.05 / height)
    return inline_svg(fig, name=title)


__all__ = [
    "BASE_COLOR",
    "DOMINATED_COLOR",
    "FRONT_COLOR",
    "bar_chart_svg",
    "inline_svg",
    "legend_svg",
    "pyplot",
]
