"""The HTML report of a run: one self-contained page that opens offline.

Sections: the run's settings, the base model's metrics, the front (interactive chart and
table), the per-layer policy of one trial, the latency predictor's error per trial, and the
search history as hypervolume over trials. Everything is inline (CSS, the SVG pictures that
matplotlib draws, the charts' script from ``nas.results._plots``): no CDN, no external file.
The hypervolume is explained in ``nas.results._hypervolume``.
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

from nas._errors import RunError, UsageError
from nas._objectives import OBJECTIVES
from nas.results._hypervolume import hypervolume_history, hypervolume_reference
from nas.results._images import FRONT_COLOR, bar_chart_svg
from nas.results._plots import figure_html, front_figure, html_page, legend_html, line_figure
from nas.results._table import budget_text, columns, drift_line, flat_record, unit_of
from nas.searching._halving import halving_text
from nas.searching._run import Run, read_run
from nas.searching._trial_row import TrialRow

_logger = logging.getLogger(__name__)

# Costs a predictor estimates; memory is computed from the graph, the same number both ways.
PREDICTED_COSTS = ("latency_ms", "energy_mj")


# --- predictor error -----------------------------------------------------------------------


def predictor_errors(results: Run) -> list[dict[str, Any]]:
    """Predicted against measured latency and energy, per trial that has both.

    Returns:
        Records with ``trial``, ``metric``, ``predicted``, ``measured`` and ``error_pct``
        (signed: (predicted - measured) / measured, in %).
    """
    out = []
    for row in sorted(results.rows, key=lambda r: r.number):
        for name in PREDICTED_COSTS:
            pred, meas = row.cost(name)
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


def latency_errors(results: Run) -> list[dict[str, Any]]:
    """The latency predictor's error per trial, in trial order.

    From the search's own tracking (``predictor_tracking``) where the run has it, else from
    the trials that have both a predicted and a measured latency.

    Returns:
        Records with ``number``, ``predicted_ms``, ``measured_ms``, ``error_pct`` (signed,
        in %) and ``refit`` (the predictor was refitted after this trial).
    """
    tracked = [r for r in results.predictor_tracking if _is_number(r.get("error_pct"))]
    if tracked:
        return sorted(tracked, key=lambda r: r.get("number", 0))
    return [
        {
            "number": e["trial"],
            "predicted_ms": e["predicted"],
            "measured_ms": e["measured"],
            "error_pct": e["error_pct"],
            "refit": False,
        }
        for e in predictor_errors(results)
        if e["metric"] == "latency_ms"
    ]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def latency_error_figure(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The chart of :func:`latency_errors`: |error| per trial, refits as dotted lines.

    Where the search stored the device predictor's own estimate (``raw_ms``) beside the
    calibrated one it used, both are drawn.
    """

    def point(r: Mapping[str, Any], key: str, what: str) -> list[Any]:
        error = 100.0 * (r[key] - r["measured_ms"]) / r["measured_ms"]
        tip = (
            f"trial {r['number']}: {what} {r[key]:.4g} ms, measured {r['measured_ms']:.4g} ms, "
            f"error {error:+.1f} %"
        )
        return [r["number"], abs(error), tip]

    usable = [
        r
        for r in records
        if _is_number(r.get("predicted_ms"))
        and _is_number(r.get("measured_ms"))
        and r["measured_ms"] > 0
    ]
    series = [
        {
            "label": "as the search used it",
            "points": [point(r, "predicted_ms", "predicted") for r in usable],
            "markers": True,
        }
    ]
    raw = [r for r in usable if _is_number(r.get("raw_ms"))]
    if raw and any(r["raw_ms"] != r["predicted_ms"] for r in raw):
        series.append(
            {
                "label": "device predictor before calibration",
                "points": [point(r, "raw_ms", "uncalibrated") for r in raw],
                "markers": True,
                "color": "#a8a8a8",
            }
        )
    return line_figure(
        series,
        title="Latency predictor: |predicted - measured| / measured, per trial",
        xlabel="trial number",
        ylabel="|error| [%]",
        vlines=[
            {"x": r["number"], "label": f"refit after trial {r['number']}"}
            for r in usable
            if r.get("refit")
        ],
        hlines=[{"y": 10.0, "label": "10 %"}],
    )


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


def policy(results: Run, row: TrialRow) -> dict[str, Any]:
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


def policy_svg(results: Run, row: TrialRow) -> str:
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
        parts.append(bar_chart_svg("Channels kept per group", bars))
    if pol["layers"]:
        bars = []
        for name, bits, rank in pol["layers"]:
            b = int(bits) if isinstance(bits, (int, float)) else 32
            color = {32: "#9e9e9e", 16: "#7e57c2", 8: FRONT_COLOR, 4: "#2ca02c"}.get(b, "#555")
            label = f"{b}-bit" + (f", low-rank r={rank}" if rank is not None else "")
            bars.append((name, b / 32, label, color))
        parts.append(bar_chart_svg("Bits per layer (bar: bits/32; rank where factorized)", bars))
    if pol["dropped_blocks"]:
        items = "".join(f"<li>{html.escape(b)}</li>" for b in pol["dropped_blocks"])
        parts.append(f"<p>Blocks dropped:</p><ul>{items}</ul>")
    if not parts:
        return "<p>This trial stored no per-layer config.</p>"
    return "\n".join(parts)


# --- charts and tables ---------------------------------------------------------------------


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
            return html.escape(json.dumps(v)) if v else "none"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _front_table(results: Run) -> str:
    cols = columns(results, include_all=False)
    rows = [[flat_record(r, results).get(c) for c in cols] for r in results.front()]
    return html_table(cols, rows, cls="front")


def _base_table(results: Run) -> str:
    rows = []
    for name in results.objectives + tuple(n for n in OBJECTIVES if n not in results.objectives):
        pred, meas = results.base_value(name)
        if pred is not None or meas is not None:
            rows.append([name, unit_of(name), pred, meas])
    extra = {
        k: v for k, v in results.base.items() if k not in OBJECTIVES and not isinstance(v, Mapping)
    }
    rows += [[k, "", v, None] for k, v in extra.items()]
    if not rows:
        return "<p>The run stored no base-model metrics.</p>"
    return html_table(["metric", "unit", "value (predicted)", "measured"], rows)


def _settings_table(results: Run) -> str:
    settings = results.stored_settings or {
        k: v for k, v in results.user_attrs.items() if k not in ("base",)
    }
    rows = [[k, budget_text(v) if k == "budget" else v] for k, v in settings.items()]
    table = html_table(["setting", "value"], rows, cls="settings")
    return f"<details><summary>{len(rows)} settings</summary>{table}</details>"


def _errors_section(results: Run) -> str:
    errors = predictor_errors(results)
    tracked = latency_errors(results)
    drift = drift_line(results).strip()
    drift_note = (
        f'<p class="note">The {html.escape(drift)} (drift of the device; the search warns '
        "beyond 20%).</p>"
        if drift
        else ""
    )
    if not errors and not tracked:
        return (
            "<p>No trial of this run has both a predicted and a measured cost, so the "
            "predictor's error cannot be shown.</p>"
        )
    parts = [drift_note] if drift_note else []
    if tracked:
        parts.append(figure_html(latency_error_figure(tracked)))
        refits = sum(bool(r.get("refit")) for r in tracked)
        source = "the search's tracking" if results.predictor_tracking else "the measured trials"
        parts.append(
            f'<p class="note">From {source}; {refits} refit(s) of the predictor, drawn as '
            "dotted lines. Hover a point for its numbers.</p>"
        )
    if errors:
        summary = error_summary(errors)
        parts.append(
            html_table(
                ["metric", "trials", "MAPE %", "max |error| %", "within 10 %"],
                [
                    [m, int(s["n"]), s["mape"], s["max_abs"], f"{s['within_10']:.0f}%"]
                    for m, s in summary.items()
                ],
            )
        )
        detail = html_table(
            ["trial", "metric", "predicted", "measured", "error %"],
            [
                [e["trial"], e["metric"], e["predicted"], e["measured"], e["error_pct"]]
                for e in errors
            ],
        )
        parts.append(f"<details><summary>per trial</summary>{detail}</details>")
    parts.append(
        '<p class="note">Error = (predicted - measured) / measured. Memory is computed from '
        "the graph (weights at their bit-widths plus peak activations), not predicted.</p>"
    )
    return "".join(parts)


def _history_section(results: Run) -> str:
    history = hypervolume_history(results)
    if not history:
        return "<p>No trial yet.</p>"
    chart = line_figure(
        [{"points": [[n, hv] for n, hv in history], "step": True}],
        title=f"Hypervolume of the feasible trials so far (final {history[-1][1]:.4f})",
        xlabel="trial number",
        ylabel="hypervolume",
    )
    ref = ", ".join(
        f"{n} {r:.3g}"
        for n, r in zip(results.objectives, hypervolume_reference(results), strict=True)
    )
    return figure_html(chart) + (
        '<p class="note">Objectives normalised against the base model: each cost as '
        "cost / base cost, accuracy as 1 - accuracy / base accuracy. Reference point: the "
        f"worst of the base model and all trials, plus a tenth of the range ({html.escape(ref)}"
        "). Only trials that meet the budget count.</p>"
    )


def _halving_section(results: Run, halving: Mapping[str, Any]) -> str:
    try:
        text = halving_text(halving)
    except (KeyError, TypeError, ValueError):  # written by another version: show it raw
        text = json.dumps(halving, sort_keys=True)
    return (
        f'<p>{html.escape(text[0].upper() + text[1:])}.</p><p class="note">'
        f"{len(results.pruned)} trials stopped early: they have predicted costs and rung "
        "accuracies (trial attribute <code>rungs</code>) but no objective values, so they "
        "are not on the front. Kendall tau compares a rung's accuracies with the next "
        "rung's over the trials promoted to both.</p>"
    )


def _chosen_trial(results: Run, trial: int | None) -> tuple[TrialRow | None, str]:
    if trial is not None:
        return results.trial(trial), f"trial {trial}, as requested"
    try:
        best = results.best_trial()
    except RunError:  # no feasible trial: show the most accurate one instead
        chosen = max(results.rows, key=lambda r: r.accuracy or 0.0, default=None)
        return chosen, "no trial meets the budget; showing the most accurate trial"
    return best, f"trial {best.number}: the most accurate trial that meets the budget"


def _summary(results: Run) -> str:
    def setting(key: str) -> str:
        return html.escape(str(results.setting(key, "?")))

    sources = sorted({r.cost_source for r in results.rows})
    return (
        f"task <b>{setting('task')}</b> on device <b>{setting('device')}</b>; objectives "
        f"{html.escape(', '.join(results.objectives))}; budget "
        f"{html.escape(budget_text(results.budget))}; {len(results.rows)} complete, "
        f"{results.n_running} running, {results.n_failed} failed, "
        f"{len(results.pruned)} stopped early trials; "
        f"{sum(r.pareto for r in results.rows)} on the front. Costs the search used: "
        f"{html.escape(', '.join(sources) or 'none')}."
    )


REPORT_CSS = """
body { margin: 20px auto; max-width: 1400px; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td:last-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 13px; }
.settings td:last-child { max-width: 900px; overflow-wrap: anywhere; }
"""


def report_html(results: Run, *, trial: int | None = None) -> str:
    """The whole report as one HTML string (see :func:`write_report`)."""
    chosen, why = _chosen_trial(results, trial)
    title = f"hwnas report: {results.run_dir.name}"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    policy_html = "<p>No trial to show.</p>"
    if chosen is not None:
        policy_html = f"<p>{html.escape(why)}. {html.escape(chosen.summary)}</p>" + policy_svg(
            results, chosen
        )
    sections = [
        f"<h1>{html.escape(title)}</h1><p>{_summary(results)}</p>"
        f'<p class="note">Generated {generated} from {html.escape(str(results.run_dir))}.</p>',
        "<h2>Settings</h2>" + _settings_table(results),
        "<h2>Base model</h2>" + _base_table(results),
        "<h2>Pareto front</h2>"
        + legend_html()
        + figure_html(front_figure(results))
        + _front_table(results),
        "<h2>Per-layer policy</h2>" + policy_html,
        "<h2>Predictor error</h2>" + _errors_section(results),
        "<h2>Search history</h2>" + _history_section(results),
    ]
    halving = results.user_attrs.get("halving")
    if isinstance(halving, dict):
        sections.append("<h2>Multi-fidelity recovery</h2>" + _halving_section(results, halving))
    if results.failed:
        items = "".join(
            f"<li>trial {n}: {html.escape(err)}</li>" for n, err in sorted(results.failed.items())
        )
        sections.append(f"<h2>Failed trials</h2><ul>{items}</ul>")
    body = "\n".join(f"<section>{s}</section>" for s in sections)
    return html_page(title, body, css=REPORT_CSS)


def write_report(run: Any, out: str | Path, *, trial: int | None = None) -> Path:
    """Write the self-contained HTML report of ``run``.

    Args:
        run: The run folder, a ``nas.Run``, or ``nas.RunResults``.
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
    results = run if isinstance(run, Run) else read_run(run)
    page = report_html(results, trial=trial)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    _logger.info("wrote the report of %s to %s", results.run_dir, out)
    return out
