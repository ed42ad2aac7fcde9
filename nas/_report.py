"""The HTML report of a run: one self-contained page that opens offline.

Sections: the run's settings, the base model's metrics, the front (plot and table), the
per-layer policy of one trial, the predictor's error on the measured front, and the search
history as hypervolume over trials. Everything is inline (CSS, SVG, a few lines of script):
no CDN, no external file.

Hypervolume. Each objective is turned into a loss normalised against the base model, so
runs on different devices and tasks read on the same scale:

- a cost ``c`` (latency, energy, memory) becomes ``c / c_base`` (the base model is 1);
- accuracy becomes ``1 - accuracy / accuracy_base`` (the base model is 0, accuracy 0 is 1).

The reference point is 1 in every coordinate: the base model's cost and zero accuracy. A
trial counts only if it meets the budget and is cheaper than the base model in every cost,
so the hypervolume is the fraction of the unit box that trials dominate, between 0 and 1.
Where the base model's value of a cost is unknown, the largest value seen is used instead.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas._errors import UsageError
from nas._pareto import OBJECTIVES, RunResults, TrialRow, columns, flat_record, read_run
from nas._plots import (
    FRONT_COLOR,
    LEGEND_HTML,
    PLOT_CSS,
    PLOT_JS,
    front_svg,
    nice_ticks,
)

_logger = logging.getLogger(__name__)

# Costs a predictor estimates; memory is computed from the graph, the same number both ways.
PREDICTED_COSTS = ("latency_ms", "energy_mj")


# --- hypervolume ---------------------------------------------------------------------------


def normalised_losses(results: RunResults, rows: Sequence[TrialRow]) -> list[list[float]]:
    """Per row, the objectives as normalised losses (see the module docstring)."""
    scale: dict[str, float] = {}
    for name in results.objectives:
        base = results.base_value(name)[0]
        if base is None or base <= 0:
            seen = [abs(r.values[name]) for r in results.rows if name in r.values]
            base = max(seen, default=1.0) or 1.0
        scale[name] = base
    out = []
    for row in rows:
        point = []
        for name in results.objectives:
            v = row.values[name]
            if OBJECTIVES.get(name, ("minimize",))[0] == "maximize":
                point.append(1.0 - v / scale[name])
            else:
                point.append(v / scale[name])
        out.append(point)
    return out


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume (minimisation) dominated by ``points`` up to ``reference``.

    Points not strictly better than the reference in every coordinate are ignored.
    """
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    ref = np.asarray(reference, dtype=float)
    inside = [p for p in points if all(a < b for a, b in zip(p, ref, strict=False))]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.asarray(inside, dtype=float), ref))


def hypervolume_history(results: RunResults) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible trials finished so far), per trial."""
    rows = sorted(results.rows, key=lambda r: r.number)
    losses = normalised_losses(results, rows)
    ref = [1.0] * len(results.objectives)
    history: list[tuple[int, float]] = []
    kept: list[list[float]] = []
    hv = 0.0
    for row, point in zip(rows, losses, strict=False):
        inside = row.budget_met and all(math.isfinite(x) and x < 1.0 for x in point)
        if inside and not any(_weakly_dominates(k, point) for k in kept):
            kept = [k for k in kept if not _weakly_dominates(point, k)]
            kept.append(point)
            hv = hypervolume(kept, ref)
        history.append((row.number, hv))
    return history


def _weakly_dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


# --- predictor error -----------------------------------------------------------------------


def predictor_errors(results: RunResults) -> list[dict[str, Any]]:
    """Predicted against measured latency and energy, per verified trial.

    Returns:
        Records with ``trial``, ``metric``, ``predicted``, ``measured`` and ``error_pct``
        (signed: (predicted - measured) / measured, in %).
    """
    out = []
    for row in sorted(results.rows, key=lambda r: r.number):
        for name in PREDICTED_COSTS:
            pred = row.values.get(name, row.predicted.get(name))
            meas = row.measured.get(name)
            if pred is None or meas is None or meas == 0:
                continue
            out.append(
                {
                    "trial": row.number,
                    "metric": name,
                    "predicted": pred,
                    "measured": meas,
                    "error_pct": (pred - meas) / meas * 100.0,
                }
            )
    return out


def error_summary(errors: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: n, MAPE (%), largest absolute error (%), share within 10 % (%)."""
    by_metric: dict[str, list[float]] = {}
    for rec in errors:
        by_metric.setdefault(rec["metric"], []).append(abs(rec["error_pct"]))
    return {
        m: {
            "n": float(len(errs)),
            "mape": sum(errs) / len(errs),
            "max_abs": max(errs),
            "within_10": 100.0 * sum(e <= 10 for e in errs) / len(errs),
        }
        for m, errs in by_metric.items()
    }


# --- per-layer policy ----------------------------------------------------------------------


def _max_choice(distributions: Mapping[str, Any], param: str) -> float | None:
    """The largest numeric choice of the Optuna parameter ``param`` (e.g. ``width.stem``)."""
    dist = distributions.get(param)
    if dist is None:
        return None
    choices = getattr(dist, "choices", None)
    values = list(choices) if choices is not None else [getattr(dist, "high", None)]
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(nums) if nums else None


def policy(results: RunResults, row: TrialRow) -> dict[str, Any]:
    """The per-layer decisions of ``row`` from its stored config.

    Returns:
        ``{"widths": [(group, kept, full|None)], "layers": [(layer, bits|None, rank|None)],
        "dropped_blocks": [...]}``; ``full`` is the largest width the search offered.
    """
    cfg = dict(row.config or {})
    dists = results.distributions
    widths = [
        (str(g), int(k), _max_choice(dists, f"width.{g}"))
        for g, k in dict(cfg.get("widths") or {}).items()
    ]
    bits = {str(k): v for k, v in dict(cfg.get("bits") or {}).items()}
    ranks = {str(k): v for k, v in dict(cfg.get("ranks") or {}).items()}
    layers = [(name, bits.get(name), ranks.get(name)) for name in sorted(set(bits) | set(ranks))]
    return {
        "widths": widths,
        "layers": layers,
        "dropped_blocks": sorted(str(b) for b in cfg.get("dropped_blocks") or []),
    }


def policy_svg(results: RunResults, row: TrialRow) -> str:
    """Per-layer policy as two bar charts: channels kept per group, bits and rank per layer."""
    pol = policy(results, row)
    parts = []
    if pol["widths"]:
        bars = []
        for group, kept, full in pol["widths"]:
            frac = kept / full if full else None
            label = f"{kept}/{int(full)}" if full else str(kept)
            bars.append((group, frac, label, FRONT_COLOR))
        if all(b[1] is None for b in bars):
            top = max(k for _, k, _ in pol["widths"]) or 1
            bars = [(g, int(lbl) / top, lbl, c) for g, _, lbl, c in bars]
        parts.append(_bar_chart("Channels kept per group", bars))
    if pol["layers"]:
        bars = []
        for name, bits, rank in pol["layers"]:
            b = int(bits) if isinstance(bits, (int, float)) else 32
            color = {32: "#9e9e9e", 16: "#7e57c2", 8: FRONT_COLOR, 4: "#2ca02c"}.get(b, "#555")
            label = f"{b}-bit" + (f", low-rank r={rank}" if rank is not None else "")
            bars.append((name, b / 32, label, color))
        parts.append(_bar_chart("Bits per layer (bar: bits/32; rank where factorized)", bars))
    if pol["dropped_blocks"]:
        items = "".join(f"<li>{html.escape(b)}</li>" for b in pol["dropped_blocks"])
        parts.append(f"<p>Blocks dropped:</p><ul>{items}</ul>")
    if not parts:
        return "<p>This trial stored no per-layer config.</p>"
    return "\n".join(parts)


def _bar_chart(title: str, bars: Sequence[tuple[str, float | None, str, str]]) -> str:
    row_h, label_w, bar_w = 18, 220, 360
    height = 26 + row_h * len(bars)
    width = label_w + bar_w + 110
    out = [
        f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (name, frac, label, color) in enumerate(bars):
        y = 22 + i * row_h
        w = bar_w * min(max(frac or 0.0, 0.0), 1.0)
        short = name if len(name) <= 34 else "…" + name[-33:]
        out.append(
            f"<g><title>{html.escape(name)}: {html.escape(label)}</title>"
            f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
            f"{html.escape(short)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{bar_w}" height="{row_h - 5}" fill="#eee"/>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
            f'fill="{color}"/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 12}" font-size="11">'
            f"{html.escape(label)}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out)


# --- charts and tables ---------------------------------------------------------------------


def line_svg(
    points: Sequence[tuple[float, float]], *, xlabel: str, ylabel: str, title: str
) -> str:
    """A small step-line chart (e.g. hypervolume against trial number)."""
    width, height, ml, mr, mt, mb = 640, 280, 62, 16, 28, 44
    if not points:
        return "<p>No trial yet.</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = 0.0, max(max(ys) * 1.1, 1e-9)

    def px(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * (width - ml - mr)

    def py(v: float) -> float:
        return height - mb - (v - y0) / (y1 - y0) * (height - mt - mb)

    path = []
    for i, (x, y) in enumerate(points):
        if i:
            path.append(f"L{px(x):.1f},{py(points[i - 1][1]):.1f}")
        path.append(f"{'M' if not i else 'L'}{px(x):.1f},{py(y):.1f}")
    out = [
        f'<svg class="line" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<rect x="{ml}" y="{mt}" width="{width - ml - mr}" height="{height - mt - mb}" '
        'fill="#fff" stroke="#888"/>',
        f'<text x="{ml}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in nice_ticks(x0, x1):
        out.append(
            f'<text x="{px(t):.1f}" y="{height - mb + 16}" font-size="11" '
            f'text-anchor="middle">{t:g}</text>'
        )
    for t in nice_ticks(y0, y1):
        out.append(
            f'<line x1="{ml}" y1="{py(t):.1f}" x2="{width - mr}" y2="{py(t):.1f}" '
            f'stroke="#eee"/><text x="{ml - 6}" y="{py(t) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{t:.3g}</text>'
        )
    out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{FRONT_COLOR}" stroke-width="2"/>')
    out.append(
        f'<text x="{(ml + width) / 2:.1f}" y="{height - 8}" font-size="12" '
        f'text-anchor="middle">{html.escape(xlabel)}</text>'
        f'<text x="14" y="{(mt + height - mb) / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {(mt + height - mb) / 2:.1f})">{html.escape(ylabel)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    """A plain HTML table; floats get 4 significant digits, None shows as a dash."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (dict, list)):
            return html.escape(json.dumps(v))
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _front_table(results: RunResults) -> str:
    cols = columns(results, include_all=False)
    rows = [[flat_record(r, results).get(c) for c in cols] for r in results.front()]
    return html_table(cols, rows, cls="front")


def _base_table(results: RunResults) -> str:
    rows = []
    for name in results.objectives + tuple(n for n in OBJECTIVES if n not in results.objectives):
        pred, meas = results.base_value(name)
        if pred is not None or meas is not None:
            rows.append([name, OBJECTIVES.get(name, ("", ""))[1], pred, meas])
    extra = {
        k: v for k, v in results.base.items() if k not in OBJECTIVES and not isinstance(v, Mapping)
    }
    rows += [[k, "", v, None] for k, v in extra.items()]
    if not rows:
        return "<p>The run stored no base-model metrics.</p>"
    return html_table(["metric", "unit", "value (predicted)", "measured"], rows)


def _settings_table(results: RunResults) -> str:
    settings = dict(results.settings) or {
        k: v for k, v in results.user_attrs.items() if k not in ("base",)
    }
    return html_table(["setting", "value"], [[k, v] for k, v in settings.items()])


def _errors_section(results: RunResults) -> str:
    errors = predictor_errors(results)
    if not errors:
        return (
            "<p>No trial of this run was measured on the device yet (the search measures the "
            "front when it finishes), so the predictor's error cannot be shown.</p>"
        )
    summary = error_summary(errors)
    head = html_table(
        ["metric", "trials", "MAPE %", "max |error| %", "within 10 %"],
        [
            [m, int(s["n"]), s["mape"], s["max_abs"], f"{s['within_10']:.0f}%"]
            for m, s in summary.items()
        ],
    )
    detail = html_table(
        ["trial", "metric", "predicted", "measured", "error %"],
        [[e["trial"], e["metric"], e["predicted"], e["measured"], e["error_pct"]] for e in errors],
    )
    note = (
        '<p class="note">Error = (predicted - measured) / measured. Memory is computed from '
        "the graph (weights at their bit-widths plus peak activations), not predicted.</p>"
    )
    return f"{head}{note}<details><summary>per trial</summary>{detail}</details>"


REPORT_CSS = """
body { font-family: sans-serif; margin: 20px auto; max-width: 1400px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td:last-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 13px; }
"""


def report_html(results: RunResults, *, trial: int | None = None) -> str:
    """The whole report as one HTML string (see :func:`write_report`)."""
    name = results.run_dir.name
    chosen: TrialRow | None
    if trial is not None:
        chosen = results.trial(trial)
        why = f"trial {trial}, as requested"
    else:
        try:
            chosen = results.best_trial()
            why = f"trial {chosen.number}: the most accurate trial that meets the budget"
        except Exception:  # no feasible trial: show the most accurate one instead
            chosen = max(results.rows, key=lambda r: r.accuracy or 0.0, default=None)
            why = "no trial meets the budget; showing the most accurate trial"
    history = hypervolume_history(results)
    settings = results.settings
    title = f"hwnas report: {name}"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = (
        f"task <b>{html.escape(str(settings.get('task', results.user_attrs.get('task', '?'))))}"
        f"</b> on device <b>"
        f"{html.escape(str(settings.get('device', results.user_attrs.get('device', '?'))))}</b>; "
        f"objectives {html.escape(', '.join(results.objectives))}; budget "
        f"{html.escape(json.dumps(dict(results.budget)))}; {len(results.rows)} complete, "
        f"{results.n_running} running, {results.n_failed} failed trials; "
        f"{sum(r.pareto for r in results.rows)} on the front."
    )
    policy_html = "<p>No trial to show.</p>"
    if chosen is not None:
        policy_html = f"<p>{html.escape(why)}. {html.escape(chosen.summary)}</p>" + policy_svg(
            results, chosen
        )
    hv_final = history[-1][1] if history else 0.0
    sections = [
        f"<h1>{html.escape(title)}</h1><p>{summary}</p>"
        f'<p class="note">Generated {generated} from {html.escape(str(results.run_dir))}. '
        "Costs are predicted for the device unless marked measured.</p>",
        "<h2>Settings</h2>" + _settings_table(results),
        "<h2>Base model</h2>" + _base_table(results),
        "<h2>Pareto front</h2>"
        + LEGEND_HTML
        + f'<div class="panels">{front_svg(results, panel_width=420, panel_height=320)}</div>'
        + _front_table(results),
        "<h2>Per-layer policy</h2>" + policy_html,
        "<h2>Predictor error on the measured front</h2>" + _errors_section(results),
        "<h2>Search history</h2>"
        + line_svg(
            [(float(n), hv) for n, hv in history],
            xlabel="trial number",
            ylabel="hypervolume",
            title=f"Hypervolume of the feasible trials so far (final {hv_final:.4f})",
        )
        + '<p class="note">Objectives normalised against the base model: each cost as '
        "cost / base cost, accuracy as 1 - accuracy / base accuracy; reference point 1 in "
        "every coordinate (the base model's cost at zero accuracy). Only trials that meet "
        "the budget count.</p>",
    ]
    if results.failed:
        items = "".join(
            f"<li>trial {n}: {html.escape(err)}</li>" for n, err in sorted(results.failed.items())
        )
        sections.append(f"<h2>Failed trials</h2><ul>{items}</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}{PLOT_CSS}</style></head><body>"
        + "\n".join(f"<section>{s}</section>" for s in sections)
        + f"<script>{PLOT_JS}</script></body></html>\n"
    )


def write_report(run: Any, out: str | Path, *, trial: int | None = None) -> Path:
    """Write the self-contained HTML report of ``run``.

    Args:
        run: The run folder, a ``nas.Run``, or :class:`~nas._pareto.RunResults`.
        out: Output file (``.html``); its folder is created if needed.
        trial: Trial whose per-layer policy to show; default: the most accurate trial that
            meets the budget.

    Returns:
        The written path.

    Raises:
        RunError: The run is missing or empty, or ``trial`` is not a finished trial of it.
        UsageError: ``out`` does not end in ``.html``/``.htm``.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {str(out)!r}: the report is HTML, name it e.g. report.html")
    results = run if isinstance(run, RunResults) else read_run(run)
    page = report_html(results, trial=trial)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    _logger.info("wrote the report of %s to %s", results.run_dir, out)
    return out
