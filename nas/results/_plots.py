"""Pictures of a run's Pareto front: an interactive HTML page, and static PNG/SVG files.

One renderer per kind of output. The HTML page embeds each figure as JSON and draws it in
the browser with a small script (``_plots.js``, inlined: no library, no CDN), so the page
opens offline; hovering a point shows its trial, compression and predicted and measured
costs, and the points can be filtered to the front or to the trials within budget. Every
static picture (the PNG and SVG files, the legend inlined in the pages) is drawn by
matplotlib (``nas.results._images``).

With three or more objectives each pair of objectives gets its own panel (accuracy on the y
axis where it is one of the two). The base model is a red diamond, budget limits are dashed
red lines, the feasible Pareto front is blue, dominated feasible trials are grey and trials
that miss the budget are hollow. Where a trial has both a predicted and a measured cost, a
ring marks the one the search did not use, joined to the point.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from nas._errors import UsageError
from nas._objectives import OBJECTIVES
from nas.results._images import BASE_COLOR, DOMINATED_COLOR, FRONT_COLOR, legend_svg, pyplot
from nas.results._table import budget_text, unit_of
from nas.searching._run import Run, read_run
from nas.searching._trial_row import TrialRow

_logger = logging.getLogger(__name__)

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
    unit = unit_of(name)
    base = name.rsplit("_", 1)[0] if unit and name.endswith(("_ms", "_mj", "_mb")) else name
    return f"{base} [{unit}]" if unit else name


def row_class(row: TrialRow) -> str:
    """``"front"``, ``"dominated"`` or ``"infeasible"``."""
    if not row.budget_met:
        return "infeasible"
    return "front" if row.pareto else "dominated"


def uses_measured_costs(results: Run) -> bool:
    """Whether the search optimised measured costs (then the base model is shown measured)."""
    return any(r.cost_source == "measured" for r in results.rows)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _limits(results: Run) -> dict[str, dict[str, Any]]:
    """Objective -> ``{"value", "op"}`` of its budget limit, for the objectives on the axes."""
    out: dict[str, dict[str, Any]] = {}
    for name in results.objectives:
        if name == "accuracy":
            floor = results.accuracy_floor()
            if floor is not None:
                out[name] = {"value": floor, "op": ">="}
        elif name in results.budget:
            out[name] = {"value": results.budget[name], "op": "<="}
    return out


def _base_point(results: Run, names: Sequence[str]) -> dict[str, float | None]:
    measured = uses_measured_costs(results)
    point = {}
    for name in names:
        pred, meas = results.base_value(name)
        point[name] = _finite(meas if measured and meas is not None else pred)
    return point


def _trial_record(row: TrialRow, names: Sequence[str]) -> dict[str, Any]:
    predicted, measured, other = {}, {}, {}
    for name in names:
        if name == "accuracy":
            predicted[name] = _finite(row.accuracy)
            continue
        pred, meas = row.cost(name)
        predicted[name], measured[name] = _finite(pred), _finite(meas)
        other[name] = measured[name] if row.cost_source != "measured" else predicted[name]
    return {
        "number": row.number,
        "cls": row_class(row),
        "values": {k: _finite(v) for k, v in row.values.items()},
        "predicted": predicted,
        "measured": measured,
        "other": other,
        "source": row.cost_source,
        "summary": row.summary,
        "violations": [f"{k} by {v:.4g}" for k, v in row.constraints.items() if v > 0],
    }


def front_figure(results: Run) -> dict[str, Any]:
    """The front as the data ``_plots.js`` draws: panels, trials, base model, budget."""
    names = list(results.objectives) + [n for n in OBJECTIVES if n not in results.objectives]
    return {
        "type": "front",
        "pairs": objective_pairs(results.objectives),
        "rows": names,
        "labels": {n: axis_label(n) for n in names},
        "trials": [_trial_record(r, names) for r in sorted(results.rows, key=lambda r: r.number)],
        "base": _base_point(results, names),
        "limits": _limits(results),
    }


def line_figure(
    series: Sequence[Mapping[str, Any]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    vlines: Sequence[Mapping[str, Any]] = (),
    hlines: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A line chart for ``_plots.js``.

    Args:
        series: Each ``{"points": [[x, y] or [x, y, hover text], ...]}``, optionally with
            ``"step": True`` (a step line), ``"markers": True`` (hoverable dots), ``"color"``.
        title: Shown above the chart.
        xlabel: The x axis label, with its unit.
        ylabel: The y axis label, with its unit.
        vlines: Dotted vertical markers, each ``{"x", "label"}``.
        hlines: Dashed horizontal guides, each ``{"y", "label"}``.
    """
    return {
        "type": "line",
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "series": [dict(s) for s in series],
        "vlines": [dict(v) for v in vlines],
        "hlines": [dict(h) for h in hlines],
    }


def figure_html(figure: Mapping[str, Any]) -> str:
    """A ``<div>`` that the page's script fills with ``figure``; the data travels as JSON."""
    data = json.dumps(figure, allow_nan=False, separators=(",", ":"))
    # Inside <script>, "</script>" or "<!--" in a string would end or confuse the element.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    noscript = "<noscript>This chart needs JavaScript.</noscript>"
    return (
        f'<div class="hwnas-figure"><script type="application/json">{data}</script>'
        f"{noscript}</div>"
    )


@cache
def plot_script() -> str:
    """The script that draws the figures (``_plots.js``)."""
    return Path(__file__).with_name("_plots.js").read_text(encoding="utf-8")


def legend_html() -> str:
    """The legend of the front's charts (drawn by matplotlib) and what a ring means."""
    return (
        f'<div class="legend">{legend_svg()}<p class="note">A ring is the same trial\'s '
        "other cost: measured where the search used predicted costs, predicted where it used "
        "measured ones; shown on the front and on hover.</p></div>"
    )


PLOT_CSS = """
body { font-family: sans-serif; color: #222; }
.panels { display: flex; flex-wrap: wrap; gap: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 16px; font-size: 13px; margin: 8px 0; }
.legend svg { vertical-align: middle; }
.controls { display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; margin: 6px 0; }
.controls .count { color: #555; } .controls .hint { color: #888; }
svg.panel, svg.line { user-select: none; }
g.trial { cursor: pointer; }
g.trial:hover circle.mark, g.trial.hl circle.mark { stroke: #000; stroke-width: 2; }
g.trial.hl text { font-weight: bold; }
.ring { display: none; }  /* shown on the front, on hover, or for all on request */
g.trial.front .ring, g.trial.hl .ring, .all-rings .ring { display: inline; }
rect.zoom-band { fill: rgba(31, 119, 180, 0.12); stroke: #1f77b4; }
.hwnas-tip { position: fixed; display: none; z-index: 10; pointer-events: none;
  background: #fff; border: 1px solid #999; border-radius: 4px; padding: 6px 8px;
  font-size: 12px; box-shadow: 0 2px 6px rgba(0, 0, 0, 0.2); max-width: 380px; }
.hwnas-tip table { border-collapse: collapse; margin: 4px 0; font-size: 12px; }
.hwnas-tip td, .hwnas-tip th { border: none; padding: 1px 6px 1px 0; text-align: right; }
.hwnas-tip td:first-child { text-align: left; } .hwnas-tip td.used { font-weight: bold; }
.hwnas-tip .summary { margin-top: 3px; } .hwnas-tip .note { color: #666; }
.hwnas-tip .violation { color: #d62728; }
"""


def html_page(title: str, body: str, *, css: str = "") -> str:
    """A self-contained HTML page: ``body`` plus the charts' style and script, all inline."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{PLOT_CSS}{css}</style></head><body>"
        f"{body}<script>{plot_script()}</script></body></html>\n"
    )


def front_html(results: Run, *, title: str | None = None) -> str:
    """A self-contained HTML page with the front's panels, legend and hover tooltips."""
    title = title or f"Pareto front of {results.run_dir.name}"
    n_front = sum(r.pareto for r in results.rows)
    body = (
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{n_front} Pareto-optimal of {len(results.rows)} completed trials; budget "
        f"{html.escape(budget_text(results.budget))}.</p>"
        f"{legend_html()}{figure_html(front_figure(results))}"
    )
    return html_page(title, body, css="body { margin: 16px; }")


def front_image(results: Run, path: str | Path, *, dpi: int = 110) -> Path:
    """Draw the front's panels with matplotlib (Agg) into a PNG or SVG file."""
    plt = pyplot()
    pairs = objective_pairs(results.objectives)
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    try:
        for ax, (x, y) in zip(axes.flat, pairs, strict=False):
            _image_panel(ax, results, x, y)
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


def _image_panel(ax: Any, results: Run, x: str, y: str) -> None:
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
        other = _other_point(row, x, y)
        if other is not None:
            ax.plot(
                [row.values[x], other[0]], [row.values[y], other[1]], color=FRONT_COLOR, lw=0.7
            )
            ax.scatter([other[0]], [other[1]], facecolors="none", edgecolors=FRONT_COLOR, s=30)
    base = _base_point(results, (x, y))
    if base[x] is not None and base[y] is not None:
        ax.scatter([base[x]], [base[y]], marker="D", c=BASE_COLOR, s=40, label="base model")
    limits = _limits(results)
    if x in limits:
        ax.axvline(limits[x]["value"], color=BASE_COLOR, ls="--", lw=1, label="budget")
    if y in limits:
        label = None if x in limits else "budget"
        ax.axhline(limits[y]["value"], color=BASE_COLOR, ls="--", lw=1, label=label)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.grid(alpha=0.3)


def _other_point(row: TrialRow, x: str, y: str) -> tuple[float, float] | None:
    """Where the trial's other cost (the one the search did not use) puts it, if anywhere."""
    point = []
    for name in (x, y):
        if name == "accuracy":
            point.append(row.values[name])
            continue
        pred, meas = row.cost(name)
        other = pred if row.cost_source == "measured" else meas
        point.append(row.values[name] if other is None else other)
    if point == [row.values[x], row.values[y]]:
        return None
    return point[0], point[1]


def plot_front(run: Any, path: str | Path) -> Path:
    """Write the front of ``run`` to ``path``: ``.html`` (interactive), ``.svg`` or ``.png``.

    Args:
        run: A run folder, a ``nas.Run``, or ``nas.RunResults``.
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
            "(e.g. --plot front.html to hover and filter, front.png for a picture)"
        )
    results = run if isinstance(run, Run) else read_run(run)
    if suffix == ".html":
        path.write_text(front_html(results), encoding="utf-8")
    else:
        front_image(results, path)
    _logger.info("wrote the Pareto front of %s to %s", results.run_dir, path)
    return path
