"""A run's trials as text: the table, CSV and JSON of ``hwnas pareto``.

:func:`format_rows` formats what :func:`~nas.searching._run.read_run` returned; the flat
form (:func:`columns`, :func:`flat_record`) is shared with the report's front table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from nas._errors import UsageError
from nas._objectives import OBJECTIVES
from nas.searching._dominance import direction_of
from nas.searching._run import Run
from nas.searching._trial_row import TrialRow

FORMATS = ("table", "csv", "json")


def unit_of(name: str) -> str:
    """The unit of a registered objective ("" for unknown names)."""
    objective = OBJECTIVES.get(name)
    return objective.unit if objective is not None else ""


def budget_text(budget: Mapping[str, float]) -> str:
    """The budget in words, e.g. ``"latency_ms <= 0.8, accuracy_drop <= 3"``, or ``"none"``."""
    if not budget:
        return "none"
    parts = []
    for name, limit in budget.items():
        op = ">=" if direction_of(name) == "maximize" else "<="
        parts.append(f"{name} {op} {limit:g}")
    return ", ".join(parts)


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v != 0 and abs(v) < 10 ** -(digits - 1):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.{max(digits - 2, 1)}f}"


def columns(results: Run, *, include_all: bool = False) -> list[str]:
    """Column names of the flat (CSV / table) form of ``results``."""
    cols = ["trial"]
    for name in results.objectives:
        if direction_of(name) == "maximize":
            cols.append(name)
        else:
            cols += [f"{name}_predicted", f"{name}_measured"]
        if name == "energy_mj":
            cols.append("energy_source")
    cols += ["budget_met", "pareto"] if include_all else ["budget_met"]
    cols.append("summary")
    return cols


def flat_record(row: TrialRow, results: Run) -> dict[str, Any]:
    """One row as a flat dict keyed by :func:`columns` (None where there is no value)."""
    rec: dict[str, Any] = {"trial": row.number}
    for name in results.objectives:
        if direction_of(name) == "maximize":
            rec[name] = row.values.get(name)
        else:
            rec[f"{name}_predicted"], rec[f"{name}_measured"] = row.cost(name)
        if name == "energy_mj":
            rec["energy_source"] = energy_label(row)
    rec["budget_met"] = row.budget_met
    rec["pareto"] = row.pareto
    rec["summary"] = row.summary
    return rec


def energy_label(row: TrialRow) -> str:
    """How the trial's energy number came about, in words a reader understands."""
    if "energy_mj" in row.measured:
        return "measured"
    return {"measured-predictor": "predicted from measurements", "estimated": "estimated"}.get(
        row.energy_source, row.energy_source or "estimated"
    )


def format_rows(results: Run, *, include_all: bool = False, fmt: str = "table") -> str:
    """The front (or every completed trial) as a text table, CSV or JSON.

    Args:
        results: What :func:`read_run` returned.
        include_all: Include dominated and infeasible trials (with a ``pareto`` column).
        fmt: ``"table"``, ``"csv"`` or ``"json"``.

    Returns:
        The formatted text, ending with a newline.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    rows = results.table_rows(include_all=include_all)
    if fmt == "json":
        return json.dumps(_json_doc(results, rows), indent=2, allow_nan=False) + "\n"
    cols = columns(results, include_all=include_all)
    records = [flat_record(r, results) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        return buf.getvalue()
    return _text_table(results, cols, records, include_all=include_all)


def _json_doc(results: Run, rows: Sequence[TrialRow]) -> dict[str, Any]:
    def clean(m: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in m.items()
        }

    return {
        "run": str(results.run_dir),
        "objectives": [
            {"name": n, "direction": d, "unit": unit_of(n)}
            for n, d in zip(results.objectives, results.directions, strict=False)
        ],
        "metric": results.user_attrs.get("metric"),
        "budget": dict(results.budget),
        "base": json.loads(json.dumps(results.base, default=str)),
        "n_complete": len(results.rows),
        "n_running": results.n_running,
        "n_failed": results.n_failed,
        "trials": [
            {
                "number": r.number,
                "values": clean(r.values),
                "measured": clean(r.measured),
                "cost_source": r.cost_source,
                "energy_source": energy_label(r) if "energy_mj" in results.objectives else None,
                "budget_met": r.budget_met,
                "constraints": clean(r.constraints),
                "pareto": r.pareto,
                "rejected_before_training": r.rejected_before_training,
                "summary": r.summary,
                "config": r.config,
            }
            for r in rows
        ],
    }


def _text_table(
    results: Run, cols: list[str], records: list[dict[str, Any]], *, include_all: bool
) -> str:
    metric = task_metric(results)

    def cell(col: str, v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return _fmt(v, 2 if col == "accuracy" and metric is None else 3)
        return "-" if v is None else str(v)

    header = [f"accuracy = {metric}" if c == "accuracy" and metric else _header(c) for c in cols]
    body = [[cell(c, rec.get(c)) for c in cols] for rec in records]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    numeric = [c not in ("summary", "energy_source") for c in cols]

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in cols]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    what = "trials" if include_all else "Pareto-optimal trials that meet the budget"
    footer = f"{len(records)} {what}; {len(results.rows)} complete"
    footer += f", {results.n_running} running, {results.n_failed} failed"
    if results.pruned:
        footer += f", {len(results.pruned)} stopped early by successive halving"
    if results.first_cost:
        footer += f"; sorted by {results.first_cost}"
    if not records:
        footer += ". No trial meets the budget yet: see all trials with --all"
    return "\n".join(out) + "\n" + footer + "\n" + _tracking_line(results) + drift_line(results)


def drift_line(results: Run) -> str:
    """The base model measured again during the search, against its latency at the start."""
    drift = results.user_attrs.get("base_drift")
    ratios = [e["ratio"] for e in drift or [] if isinstance(e, Mapping) and "ratio" in e]
    if not ratios:
        return ""
    return (
        f"base model measured again {len(ratios)} times during the search: "
        f"{min(ratios):.2f}x to {max(ratios):.2f}x of its latency at the start\n"
    )


def _tracking_line(results: Run) -> str:
    """The latency predictor's error on the search's own candidates, by quarter of the run."""
    tracking = results.user_attrs.get("predictor_tracking")
    if not isinstance(tracking, Mapping) or not tracking.get("trials"):
        return ""
    quarters = tracking.get("quarters_median_error_pct") or []
    shown = " / ".join("-" if q is None else f"{q:.1f}%" for q in quarters)
    refits = len(tracking.get("refits") or [])
    return (
        f"latency predictor on this search's {len(tracking['trials'])} measured candidates: "
        f"median error {shown} by quarter of the run ({refits} recalibrations)\n"
    )


def task_metric(results: Run) -> str | None:
    """The score the ``accuracy`` objective holds when it is not top-1 (``"neg_mse"``)."""
    metric = results.user_attrs.get("metric")
    name = metric.get("name") if isinstance(metric, Mapping) else None
    return None if name in (None, "top1") else str(name)


def _header(col: str) -> str:
    for name in OBJECTIVES:
        unit = unit_of(name)
        if col == name:
            return f"{name} [{unit}]"
        if col.startswith(name + "_"):
            return f"{name} {col[len(name) + 1 :]}".replace("predicted", "pred").replace(
                "measured", "meas"
            )
    return {"budget_met": "budget", "energy_source": "energy source"}.get(col, col)


__all__ = [
    "FORMATS",
    "budget_text",
    "columns",
    "drift_line",
    "energy_label",
    "flat_record",
    "format_rows",
    "task_metric",
    "unit_of",
]
