"""Pictures of a run's Pareto front: self-contained SVG/HTML and a static PNG.

The SVG is drawn by hand (no plotting library, no CDN, no external script), so the HTML
opens offline and every point carries a ``<title>`` tooltip with the trial number, its
objectives and its compression summary. With three or more objectives each pair of
objectives gets its own panel (accuracy on the y axis where it is one of the two). The base
model is a red diamond, budget limits are dashed red lines, the feasible Pareto front is
blue, dominated feasible trials are grey and trials that miss the budget are hollow and pale.
Where a front trial was measured on the device, a ring marks the measured value, joined to
the predicted one.
"""

from __future__ import annotations

import html
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._errors import UsageError
from nas._pareto import OBJECTIVES, RunResults, TrialRow, read_run

_logger = logging.getLogger(__name__)

FRONT_COLOR = "#1f77b4"
DOMINATED_COLOR = "#a8a8a8"
INFEASIBLE_COLOR = "#d0d0d0"
BASE_COLOR = "#d62728"
PLOT_SUFFIXES = (".html", ".svg", ".png")


def objective_pairs(objectives: Sequence[str]) -> list[tuple[str, str]]:
    """The (x, y) objective pairs to draw: accuracy on y against each cost, then cost pairs."""
    if "accuracy" in objectives:
        costs = [o for o in objectives if o != "accuracy"]
        pairs = [(c, "accuracy") for c in costs]
        pairs += list(itertools.combinations(costs, 2))
        return pairs
    return list(itertools.combinations(objectives, 2))


def axis_label(name: str) -> str:
    """``"latency_ms"`` -> ``"latency [ms]"``."""
    unit = OBJECTIVES.get(name, ("", ""))[1]
    base = name.rsplit("_", 1)[0] if unit and name.endswith(("_ms", "_mj", "_mb")) else name
    return f"{base} [{unit}]" if unit else name


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def tooltip(row: TrialRow, objectives: Sequence[str]) -> str:
    """Hover text of one trial: number, objectives, budget, compression summary."""
    parts = [f"trial {row.number}" + ("" if row.budget_met else " (misses budget)")]
    for name in objectives:
        v = row.values.get(name)
        text = f"{name} {v:.4g}" if v is not None else f"{name} -"
        if name in row.measured:
            text += f" (measured {row.measured[name]:.4g})"
        parts.append(text)
    if row.summary:
        parts.append(row.summary)
    return "\n".join(parts)


def row_class(row: TrialRow) -> str:
    """``"front"``, ``"dominated"`` or ``"infeasible"``."""
    if not row.budget_met:
        return "infeasible"
    return "front" if row.pareto else "dominated"


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, v: float) -> float:
        if self.hi == self.lo:
            return (self.a + self.b) / 2
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _limits(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.06 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _guides(results: RunResults, name: str) -> tuple[float | None, float | None]:
    """(base value, budget limit) of objective ``name``."""
    base = results.base_value(name)[0]
    if name == "accuracy":
        return base, results.accuracy_floor()
    return base, results.budget.get(name)


def panel_svg(results: RunResults, x: str, y: str, *, width: int = 440, height: int = 330) -> str:
    """One scatter panel (objective ``x`` against ``y``) as an ``<svg>`` element."""
    ml, mr, mt, mb = 62, 14, 24, 46
    rows = list(results.rows)
    bx, lx = _guides(results, x)
    by, ly = _guides(results, y)
    xs = [r.values.get(x, math.nan) for r in rows] + [
        r.measured[x] for r in rows if x in r.measured
    ]
    ys = [r.values.get(y, math.nan) for r in rows] + [
        r.measured[y] for r in rows if y in r.measured
    ]
    sx = _Scale(*_limits([*xs, *(v for v in (bx, lx) if v is not None)]), ml, width - mr)
    sy = _Scale(*_limits([*ys, *(v for v in (by, ly) if v is not None)]), height - mb, mt)
    out = [
        f'<svg class="panel" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(axis_label(y))} against {html.escape(axis_label(x))}">',
        f'<rect x="{ml}" y="{mt}" width="{width - ml - mr}" height="{height - mt - mb}" '
        'fill="#fff" stroke="#888"/>',
    ]
    out += _axes(sx, sy, x, y, width, height, ml, mt, mb)
    if lx is not None:
        px = sx(lx)
        out.append(_vline(px, mt, height - mb, f"budget: {x} <= {lx:g}"))
    if ly is not None:
        py = sy(ly)
        op = ">=" if OBJECTIVES.get(y, ("minimize",))[0] == "maximize" else "<="
        out.append(_hline(py, ml, width - mr, f"budget: {y} {op} {ly:.4g}"))
    order = {"infeasible": 0, "dominated": 1, "front": 2}
    for row in sorted(rows, key=lambda r: order[row_class(r)]):
        out.append(_point(row, results, x, y, sx, sy))
    if bx is not None and by is not None:
        cx, cy = sx(bx), sy(by)
        d = 7
        out.append(
            f'<path class="base" d="M{cx:.1f},{cy - d:.1f} L{cx + d:.1f},{cy:.1f} '
            f'L{cx:.1f},{cy + d:.1f} L{cx - d:.1f},{cy:.1f} Z" fill="{BASE_COLOR}">'
            f"<title>base model\n{x} {bx:.4g}\n{y} {by:.4g}</title></path>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _axes(
    sx: _Scale, sy: _Scale, x: str, y: str, width: int, height: int, ml: int, mt: int, mb: int
) -> list[str]:
    out = []
    for t in nice_ticks(sx.lo, sx.hi):
        px = sx(t)
        out.append(
            f'<line x1="{px:.1f}" y1="{height - mb}" x2="{px:.1f}" y2="{height - mb + 4}" '
            f'stroke="#555"/><text x="{px:.1f}" y="{height - mb + 16}" font-size="11" '
            f'text-anchor="middle">{t:g}</text>'
        )
    for t in nice_ticks(sy.lo, sy.hi):
        py = sy(t)
        out.append(
            f'<line x1="{ml - 4}" y1="{py:.1f}" x2="{ml}" y2="{py:.1f}" stroke="#555"/>'
            f'<text x="{ml - 6}" y="{py + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>'
        )
    out.append(
        f'<text x="{(ml + width) / 2:.1f}" y="{height - 8}" font-size="12" '
        f'text-anchor="middle">{html.escape(axis_label(x))}</text>'
    )
    out.append(
        f'<text x="14" y="{(mt + height - mb) / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {(mt + height - mb) / 2:.1f})">'
        f"{html.escape(axis_label(y))}</text>"
    )
    return out


def _vline(px: float, y0: float, y1: float, label: str) -> str:
    return (
        f'<line class="budget" x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y1}" '
        f'stroke="{BASE_COLOR}" stroke-dasharray="5 4"><title>{html.escape(label)}</title></line>'
    )


def _hline(py: float, x0: float, x1: float, label: str) -> str:
    return (
        f'<line class="budget" x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" '
        f'stroke="{BASE_COLOR}" stroke-dasharray="5 4"><title>{html.escape(label)}</title></line>'
    )


def _point(row: TrialRow, results: RunResults, x: str, y: str, sx: _Scale, sy: _Scale) -> str:
    vx, vy = row.values.get(x), row.values.get(y)
    if vx is None or vy is None or not (math.isfinite(vx) and math.isfinite(vy)):
        return ""
    cls = row_class(row)
    tip = html.escape(tooltip(row, results.objectives))
    px, py = sx(vx), sy(vy)
    parts = [f'<g class="trial {cls}" data-trial="{row.number}">']
    if cls == "front" and (x in row.measured or y in row.measured):
        mx, my = sx(row.measured.get(x, vx)), sy(row.measured.get(y, vy))
        parts.append(
            f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{mx:.1f}" y2="{my:.1f}" '
            f'stroke="{FRONT_COLOR}" stroke-width="1" opacity="0.6"/>'
            f'<circle class="measured" cx="{mx:.1f}" cy="{my:.1f}" r="5" fill="none" '
            f'stroke="{FRONT_COLOR}"><title>{tip}\n(ring: measured on the device)</title></circle>'
        )
    if cls == "front":
        style = f'r="5" fill="{FRONT_COLOR}" stroke="#fff"'
    elif cls == "dominated":
        style = f'r="4" fill="{DOMINATED_COLOR}"'
    else:
        style = f'r="4" fill="none" stroke="{DOMINATED_COLOR}"'
    parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" {style}><title>{tip}</title></circle>')
    if cls == "front":
        parts.append(
            f'<text x="{px + 7:.1f}" y="{py - 6:.1f}" font-size="10" fill="#333">'
            f"{row.number}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def front_svg(results: RunResults, *, panel_width: int = 440, panel_height: int = 330) -> str:
    """All panels of the front, one per objective pair, as inline ``<svg>`` elements."""
    pairs = objective_pairs(results.objectives)
    return "\n".join(
        panel_svg(results, x, y, width=panel_width, height=panel_height) for x, y in pairs
    )


def front_svg_document(
    results: RunResults, *, panel_width: int = 440, panel_height: int = 330, ncols: int = 3
) -> str:
    """All panels in one standalone SVG document, laid out in a grid."""
    pairs = objective_pairs(results.objectives)
    ncols = min(ncols, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    width, height = ncols * panel_width, nrows * panel_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
    ]
    for i, (x, y) in enumerate(pairs):
        panel = panel_svg(results, x, y, width=panel_width, height=panel_height)
        ox, oy = (i % ncols) * panel_width, (i // ncols) * panel_height
        parts.append(panel.replace("<svg ", f'<svg x="{ox}" y="{oy}" ', 1))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


LEGEND_HTML = (
    '<div class="legend">'
    f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="{FRONT_COLOR}"/></svg>'
    " Pareto front (meets the budget)</span>"
    f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="none" '
    f'stroke="{FRONT_COLOR}"/></svg> measured on the device</span>'
    f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="4" fill="{DOMINATED_COLOR}"/>'
    "</svg> dominated</span>"
    f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="4" fill="none" '
    f'stroke="{DOMINATED_COLOR}"/></svg> misses the budget</span>'
    f'<span><svg width="12" height="12"><path d="M6,0 L12,6 L6,12 L0,6 Z" fill="{BASE_COLOR}"/>'
    "</svg> base model</span>"
    f'<span><svg width="20" height="12"><line x1="0" y1="6" x2="20" y2="6" stroke="{BASE_COLOR}" '
    'stroke-dasharray="5 4"/></svg> budget limit</span>'
    "</div>"
)

PLOT_CSS = """
.panels { display: flex; flex-wrap: wrap; gap: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 16px; font-size: 13px; margin: 8px 0; }
.legend svg { vertical-align: middle; }
g.trial { cursor: pointer; }
g.trial:hover circle, g.trial.hl circle { stroke: #000; stroke-width: 2; }
g.trial.hl text { font-weight: bold; }
"""

# Hovering a point highlights the same trial in every panel.
PLOT_JS = """
(function () {
  var groups = document.querySelectorAll("g.trial[data-trial]");
  function mark(n, on) {
    groups.forEach(function (g) {
      if (g.getAttribute("data-trial") === n) { g.classList.toggle("hl", on); }
    });
  }
  groups.forEach(function (g) {
    var n = g.getAttribute("data-trial");
    g.addEventListener("mouseenter", function () { mark(n, true); });
    g.addEventListener("mouseleave", function () { mark(n, false); });
  });
})();
"""


def front_html(results: RunResults, *, title: str | None = None) -> str:
    """A self-contained HTML page with the front's panels, legend and hover tooltips."""
    title = title or f"Pareto front of {results.run_dir.name}"
    n_front = sum(r.pareto for r in results.rows)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body { font-family: sans-serif; margin: 16px; }"
        f"{PLOT_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{n_front} Pareto-optimal of {len(results.rows)} completed trials. "
        "Hover a point for its trial and compression.</p>"
        f'{LEGEND_HTML}<div class="panels">{front_svg(results)}</div>'
        f"<script>{PLOT_JS}</script></body></html>\n"
    )


def front_png(results: RunResults, path: str | Path, *, dpi: int = 110) -> Path:
    """Draw the front's panels with matplotlib (Agg) into a PNG file."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = objective_pairs(results.objectives)
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    try:
        for ax, (x, y) in zip(axes.flat, pairs, strict=False):
            _png_panel(ax, results, x, y)
        for ax in list(axes.flat)[len(pairs) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7, loc="best")
        fig.suptitle(f"Pareto front of {results.run_dir.name}", fontsize=11)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _png_panel(ax: Any, results: RunResults, x: str, y: str) -> None:
    groups: dict[str, list[TrialRow]] = {"infeasible": [], "dominated": [], "front": []}
    for row in results.rows:
        if x in row.values and y in row.values:
            groups[row_class(row)].append(row)
    style = {
        "infeasible": dict(facecolors="none", edgecolors=DOMINATED_COLOR, s=18),
        "dominated": dict(c=DOMINATED_COLOR, s=18),
        "front": dict(c=FRONT_COLOR, s=30, zorder=3),
    }
    labels = {"infeasible": "misses budget", "dominated": "dominated", "front": "Pareto front"}
    for cls, rows in groups.items():
        if rows:
            ax.scatter(
                [r.values[x] for r in rows],
                [r.values[y] for r in rows],
                label=labels[cls],
                **style[cls],
            )
    for row in groups["front"]:
        ax.annotate(
            str(row.number),
            (row.values[x], row.values[y]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
        if x in row.measured or y in row.measured:
            mx, my = row.measured.get(x, row.values[x]), row.measured.get(y, row.values[y])
            ax.plot([row.values[x], mx], [row.values[y], my], color=FRONT_COLOR, lw=0.7)
            ax.scatter([mx], [my], facecolors="none", edgecolors=FRONT_COLOR, s=30)
    bx, lx = _guides(results, x)
    by, ly = _guides(results, y)
    if bx is not None and by is not None:
        ax.scatter([bx], [by], marker="D", c=BASE_COLOR, s=40, label="base model", zorder=4)
    if lx is not None:
        ax.axvline(lx, color=BASE_COLOR, ls="--", lw=1, label="budget")
    if ly is not None:
        ax.axhline(ly, color=BASE_COLOR, ls="--", lw=1, label=None if lx is not None else "budget")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.grid(alpha=0.3)


def plot_front(run: Any, path: str | Path) -> Path:
    """Write the front of ``run`` to ``path``: ``.html`` (interactive), ``.svg`` or ``.png``.

    Args:
        run: A run folder, a ``nas.Run``, or :class:`~nas._pareto.RunResults`.
        path: Output file; its suffix picks the format.

    Returns:
        The written path.

    Raises:
        UsageError: The suffix is not one of ``.html``, ``.svg``, ``.png``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise UsageError(
            f"cannot plot to {str(path)!r}: the file must end in one of {list(PLOT_SUFFIXES)} "
            "(e.g. --plot front.html for hover tooltips, front.png for a picture)"
        )
    results = run if isinstance(run, RunResults) else read_run(run)
    if suffix == ".png":
        front_png(results, path)
    elif suffix == ".svg":
        path.write_text(front_svg_document(results))
    else:
        path.write_text(front_html(results))
    _logger.info("wrote the Pareto front of %s to %s", results.run_dir, path)
    return path
