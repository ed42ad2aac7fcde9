"""Reading a run folder and finding its Pareto front, without changing the run.

A run (see ``nas.searching._run``) keeps its trials in an Optuna storage, ``study.db`` by default.
:func:`read_run` opens that storage read-only (a SQLite file through a ``mode=ro`` URI), so
it works while a search is still writing, and turns each trial into a :class:`TrialRow`:
objectives as the search saw them (accuracy after recovery, predicted costs), the values
measured on the device where the search verified the trial, whether the budget is met, and
the one-line compression summary. :func:`pareto_mask` is the pure filtering step; the
formatting to a table, CSV or JSON lives in :func:`format_rows`.

This module imports neither torch, nor ray, nor onnxruntime: ``hwnas pareto`` answers in
well under two seconds on a run of a hundred trials.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._errors import RunError, UsageError
from nas._objectives import OBJECTIVES

_logger = logging.getLogger(__name__)

STUDY_NAME = "hwnas"
STORAGE_FILE = "study.db"
SETTINGS_FILE = "settings.json"


def direction_of(name: str) -> str:
    """``"maximize"`` or ``"minimize"`` for a registered objective; unknown ones minimise."""
    objective = OBJECTIVES.get(name)
    return objective.direction if objective is not None else "minimize"


def unit_of(name: str) -> str:
    """The unit of a registered objective ("" for unknown names)."""
    objective = OBJECTIVES.get(name)
    return objective.unit if objective is not None else ""


FORMATS = ("table", "csv", "json")


def objective_name(name: str) -> str:
    """The canonical name of an objective (``"latency"`` -> ``"latency_ms"``)."""
    return OBJECTIVES.aliases().get(name, name)


@dataclass(frozen=True)
class TrialRow:
    """One finished trial of a run, as the Pareto table shows it.

    Attributes:
        number: Optuna trial number.
        values: Objective name -> the value the search optimised (accuracy in %, latency in
            ms, energy in mJ, memory in MB): measured or predicted, as ``cost_source`` says.
        measured: Cost name -> value measured on the device (``user_attrs["measured"]``;
            empty for trials that were not measured).
        energy_source: How the energy value was obtained ("measured-predictor", "estimated",
            or the meter of the measurement, e.g. "rapl"); "" when energy is not tracked.
        budget_met: True when every budget constraint of the trial is satisfied.
        constraints: Constraint name -> value; a value > 0 means violated.
        summary: One line describing the compression.
        config: The stored ``CompressionConfig.to_dict()``, or None.
        params: The trial's Optuna parameters.
        pareto: True when the trial is on the feasible Pareto front.
        rejected_before_training: True when the search skipped training (predicted cost far
            outside the budget).
        predicted: Every predicted cost the search stored (``user_attrs["predicted"]``), also
            those that are not objectives.
        accuracy: Top-1 in % after recovery (the accuracy objective, or the stored value).
        cost_source: Where the costs in ``values`` come from: ``"measured"``, ``"predicted"``
            or ``"predicted (device unreachable)"``; runs that did not record it predicted.
    """

    number: int
    values: Mapping[str, float]
    measured: Mapping[str, float] = field(default_factory=dict)
    energy_source: str = ""
    budget_met: bool = True
    constraints: Mapping[str, float] = field(default_factory=dict)
    summary: str = ""
    config: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    pareto: bool = False
    rejected_before_training: bool = False
    predicted: Mapping[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    cost_source: str = "predicted"

    def cost(self, name: str) -> tuple[float | None, float | None]:
        """The (predicted, measured) value of cost ``name``; None where there is none."""
        predicted, measured = self.predicted.get(name), self.measured.get(name)
        if self.cost_source == "measured":
            measured = self.values.get(name) if measured is None else measured
        else:
            predicted = self.values.get(name) if predicted is None else predicted
        return predicted, measured


@dataclass(frozen=True)
class RunResults:
    """Everything :func:`read_run` learned from a run folder.

    Attributes:
        run_dir: The run folder.
        objectives: Canonical objective names, in the study's order.
        settings: The resolved search settings (``settings.json``), or {}.
        base: The base model's metrics (``study.user_attrs["base"]``), or {}.
        budget: The budget, e.g. ``{"latency_ms": 1.5, "accuracy_drop": 1.0}``.
        rows: Every completed trial, in trial-number order, each with its ``pareto`` flag.
        n_running: Trials still running (or left running by a killed search).
        n_failed: Trials that failed.
        failed: Trial number -> recorded error, for failed trials.
        user_attrs: All study user attributes.
        distributions: Parameter name -> Optuna distribution, merged over the trials.
    """

    run_dir: Path
    objectives: tuple[str, ...]
    settings: Mapping[str, Any]
    base: Mapping[str, Any]
    budget: Mapping[str, float]
    rows: tuple[TrialRow, ...]
    n_running: int = 0
    n_failed: int = 0
    failed: Mapping[int, str] = field(default_factory=dict)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    distributions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def directions(self) -> tuple[str, ...]:
        """``"maximize"`` or ``"minimize"`` per objective."""
        return tuple(direction_of(name) for name in self.objectives)

    @property
    def first_cost(self) -> str | None:
        """The first minimised objective: the table's sort key."""
        pairs = zip(self.objectives, self.directions, strict=True)
        return next((n for n, d in pairs if d == "minimize"), None)

    def front(self) -> list[TrialRow]:
        """The feasible Pareto-optimal trials, sorted by the first cost objective."""
        return sort_rows([r for r in self.rows if r.pareto], self.first_cost)

    def table_rows(self, *, include_all: bool = False) -> list[TrialRow]:
        """The front, or with ``include_all`` every completed trial, sorted for display."""
        rows = list(self.rows) if include_all else [r for r in self.rows if r.pareto]
        return sort_rows(rows, self.first_cost)

    def trial(self, number: int) -> TrialRow:
        """The completed trial ``number``.

        Raises:
            RunError: The trial is not in the run, failed, or has not finished.
        """
        for row in self.rows:
            if row.number == number:
                return row
        if number in self.failed:
            raise RunError(
                f"trial {number} of run {self.run_dir} failed ({self.failed[number]}); "
                f"choose a finished trial, e.g. one of {[r.number for r in self.front()][:10]}"
            )
        known = [r.number for r in self.rows]
        raise RunError(
            f"trial {number} is not a finished trial of run {self.run_dir}; finished trials: "
            f"{_ranges(known)}. See `hwnas pareto {self.run_dir} --all`."
        )

    def best_trial(self) -> TrialRow:
        """The most accurate trial that meets the budget (ties: the cheapest).

        Raises:
            RunError: No completed trial meets the budget, or none has an accuracy.
        """
        feasible = [
            r
            for r in self.rows
            if r.budget_met and r.accuracy is not None and not r.rejected_before_training
        ]
        if not feasible:
            raise RunError(
                f"no trial of run {self.run_dir} meets the budget {dict(self.budget)}; pick one "
                f"yourself with --trial N (see `hwnas pareto {self.run_dir} --all`)"
            )
        cost = self.first_cost
        return min(
            feasible,
            key=lambda r: (-(r.accuracy or 0.0), r.values.get(cost, 0.0) if cost else 0.0),
        )

    def base_value(self, name: str) -> tuple[float | None, float | None]:
        """The base model's (predicted, measured) value of objective ``name``."""
        return _base_value(self.base, name)

    def accuracy_floor(self) -> float | None:
        """The lowest accuracy the budget allows (in %), or None."""
        return accuracy_floor(self.budget, self.base_value("accuracy")[0])

    @property
    def predictor_tracking(self) -> list[dict[str, Any]]:
        """The latency predictor's error per measured trial, as the search tracked it, or [].

        Each record has ``number``, ``predicted_ms`` (what the search used), ``measured_ms``,
        ``error_pct`` (signed, in %), ``refit`` (the predictor was refitted after it), and
        ``raw_ms`` (the device predictor before calibration) where the search stored it.
        """
        tracking = self.user_attrs.get("predictor_tracking")
        if not isinstance(tracking, Mapping):
            return []
        records = [dict(r) for r in tracking.get("trials") or [] if isinstance(r, Mapping)]
        # Refits are stored apart, as the number of measurements they followed.
        for refit in tracking.get("refits") or []:
            after = refit.get("after") if isinstance(refit, Mapping) else None
            if isinstance(after, int) and 0 < after <= len(records):
                records[after - 1]["refit"] = True
        for r in records:
            r["refit"] = bool(r.get("refit", False))
        return records


def accuracy_floor(budget: Mapping[str, float], base_accuracy: float | None) -> float | None:
    """The lowest accuracy allowed by ``budget`` ("accuracy_drop" in points, or "accuracy")."""
    if "accuracy" in budget:
        return float(budget["accuracy"])
    if "accuracy_drop" in budget and base_accuracy is not None:
        return float(base_accuracy) - float(budget["accuracy_drop"])
    return None


def budget_text(budget: Mapping[str, float]) -> str:
    """The budget in words, e.g. ``"latency_ms <= 0.8, accuracy_drop <= 3"``, or ``"none"``."""
    if not budget:
        return "none"
    parts = []
    for name, limit in budget.items():
        op = ">=" if direction_of(name) == "maximize" else "<="
        parts.append(f"{name} {op} {limit:g}")
    return ", ".join(parts)


def pareto_mask(
    values: Sequence[Sequence[float]],
    directions: Sequence[str],
    feasible: Sequence[bool] | None = None,
) -> list[bool]:
    """Which points are feasible and not dominated by another feasible point.

    Args:
        values: One row per point, one column per objective.
        directions: ``"maximize"`` or ``"minimize"`` per column.
        feasible: Per point, whether it meets the constraints; infeasible points are never
            on the front and dominate nothing. None means all are feasible.

    Returns:
        One flag per point. Of several identical points, all are kept.
    """
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    loss = [[s * float(v) for s, v in zip(signs, row, strict=False)] for row in values]
    ok = [True] * len(loss) if feasible is None else [bool(f) for f in feasible]
    ok = [f and all(math.isfinite(x) for x in row) for f, row in zip(ok, loss, strict=False)]
    mask = []
    for i, a in enumerate(loss):
        if not ok[i]:
            mask.append(False)
            continue
        dominated = any(ok[j] and _dominates(b, a) for j, b in enumerate(loss) if j != i)
        mask.append(not dominated)
    return mask


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    pairs = list(zip(a, b, strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def sort_rows(rows: Sequence[TrialRow], key: str | None) -> list[TrialRow]:
    """Rows sorted by objective ``key`` (ascending), then trial number."""
    if key is None:
        return sorted(rows, key=lambda r: r.number)
    return sorted(rows, key=lambda r: (r.values.get(key, math.inf), r.number))


def run_path(run: Any) -> Path:
    """The folder of ``run``: a path, or an object with a ``run_dir``/``path`` attribute."""
    for attr in ("run_dir", "path", "directory"):
        value = getattr(run, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    if isinstance(run, (str, os.PathLike)):
        return Path(run)
    raise TypeError(f"run must be a run folder path or a nas Run, got {type(run).__name__}")


def read_run(run: Any, *, require_trials: bool = True) -> RunResults:
    """Read a run folder without changing it.

    Args:
        run: The run folder (``runs/NAME``) or a ``nas.Run``.
        require_trials: Raise when the run holds no completed trial.

    Returns:
        The run's trials with their Pareto flags, settings, base metrics and budget.

    Raises:
        RunError: The folder does not exist, is not a hwnas run, or holds no finished trial.
    """
    import optuna

    run_dir = run_path(run)
    if not run_dir.is_dir():
        raise RunError(
            f"run folder {str(run_dir)!r} does not exist; pass the folder given to "
            "`hwnas search --run` (e.g. runs/NAME)"
        )
    settings = _read_settings(run_dir)
    storage = _open_storage(run_dir, settings)
    try:
        study = optuna.load_study(study_name=_study_name(settings), storage=storage)
        trials = study.get_trials(deepcopy=False)
        attrs = dict(study.user_attrs)
    except KeyError as exc:
        raise RunError(
            f"{run_dir} holds no study named {_study_name(settings)!r}; is it a hwnas run folder?"
        ) from exc
    except Exception as exc:  # Optuna's StorageInternalError, sqlalchemy's errors
        from nas.searching._run import storage_error

        raise storage_error(run_dir / STORAGE_FILE, exc) from exc
    results = _results_from_trials(run_dir, settings, attrs, trials, len(study.directions))
    _dispose(storage)
    if require_trials and not results.rows:
        raise RunError(
            f"run {run_dir} holds no finished trial yet ({results.n_running} running, "
            f"{results.n_failed} failed); wait for the search or resume it with the same "
            "`hwnas search` command"
        )
    return results


def _results_from_trials(
    run_dir: Path,
    settings: Mapping[str, Any],
    attrs: Mapping[str, Any],
    trials: Sequence[Any],
    n_objectives: int,
) -> RunResults:
    from optuna.trial import TrialState

    names = attrs.get("objectives") or settings.get("objectives") or []
    objectives = tuple(objective_name(str(n)) for n in names)
    if len(objectives) != n_objectives:
        objectives = tuple(f"objective_{i}" for i in range(n_objectives))
    budget = {
        str(k): float(v)
        for k, v in dict(attrs.get("budget") or settings.get("budget") or {}).items()
    }
    raw: list[TrialRow] = []
    failed: dict[int, str] = {}
    n_running = 0
    distributions: dict[str, Any] = {}
    # Values added after a trial finished (e.g. "measured") live in the study's attributes.
    extra: Mapping[str, Mapping[str, Any]] = attrs.get("trial_user_attrs") or {}
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values is not None:
            raw.append(_row(t, objectives, extra.get(str(t.number)) or {}))
            distributions.update(t.distributions)
        elif t.state == TrialState.FAIL:
            failed[t.number] = str(t.user_attrs.get("error", "no error recorded"))
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            n_running += 1
    directions = [direction_of(n) for n in objectives]
    mask = pareto_mask(
        [[r.values[n] for n in objectives] for r in raw], directions, [r.budget_met for r in raw]
    )
    rows = tuple(_with_pareto(r, m) for r, m in zip(raw, mask, strict=False))
    return RunResults(
        run_dir=run_dir,
        objectives=objectives,
        settings=settings,
        base=dict(attrs.get("base") or {}),
        budget=budget,
        rows=rows,
        n_running=n_running,
        n_failed=len(failed),
        failed=failed,
        user_attrs=attrs,
        distributions=distributions,
    )


def _row(t: Any, objectives: Sequence[str], extra: Mapping[str, Any]) -> TrialRow:
    ua = {**t.user_attrs, **extra}
    measured = {
        objective_name(k): float(v)
        for k, v in dict(ua.get("measured") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    constraints = {str(k): float(v) for k, v in dict(t.constraints).items()}
    values = {n: float(v) for n, v in zip(objectives, t.values, strict=False)}
    predicted = {
        objective_name(k): float(v)
        for k, v in dict(ua.get("predicted") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    accuracy = values.get("accuracy", ua.get("accuracy"))
    return TrialRow(
        number=t.number,
        values=values,
        measured=measured,
        energy_source=str(ua.get("energy_source", "")),
        budget_met=all(v <= 0.0 for v in constraints.values()),
        constraints=constraints,
        summary=str(ua.get("summary", "")),
        config=ua.get("config"),
        params=dict(t.params),
        rejected_before_training=bool(ua.get("rejected_before_training", False)),
        predicted=predicted,
        accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        cost_source=str(ua.get("cost_source") or "predicted"),
    )


def _with_pareto(row: TrialRow, flag: bool) -> TrialRow:
    from dataclasses import replace

    return replace(row, pareto=flag)


def _base_value(base: Mapping[str, Any], name: str) -> tuple[float | None, float | None]:
    def num(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    value = base.get(name)
    if isinstance(value, Mapping):
        return num(value.get("predicted", value.get("value"))), num(value.get("measured"))
    pred = num(value)
    if pred is None:
        pred = num(dict(base.get("predicted") or {}).get(name))
    meas = num(dict(base.get("measured") or {}).get(name))
    if meas is None:
        meas = num(base.get(f"{name}_measured"))
    if pred is None:
        pred = num(base.get(f"{name}_predicted"))
    return pred, meas


def _read_settings(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}; the run folder is damaged") from exc
    return data if isinstance(data, dict) else {}


def _study_name(settings: Mapping[str, Any]) -> str:
    return str(settings.get("study_name", STUDY_NAME))


def _open_storage(run_dir: Path, settings: Mapping[str, Any]) -> Any:
    """An Optuna storage on the run that never writes (SQLite opened with ``mode=ro``)."""
    from optuna.storages import RDBStorage

    url = settings.get("storage")
    db = run_dir / STORAGE_FILE
    if isinstance(url, str) and url and not url.startswith("sqlite:"):
        # A server database (e.g. PostgreSQL): reading through Optuna issues no writes.
        return RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
    if isinstance(url, str) and url.startswith("sqlite:///"):
        candidate = Path(url[len("sqlite:///") :])
        db = candidate if candidate.is_absolute() else run_dir / candidate.name
    if not db.is_file():
        raise RunError(
            f"{run_dir} is not a hwnas run folder: it has no {STORAGE_FILE}; start a search "
            f"with `hwnas search TASK ... --run {run_dir}`"
        )
    from nas.searching._run import check_sqlite_file, storage_error

    check_sqlite_file(db)
    ro_url = f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"
    try:
        return RDBStorage(
            ro_url,
            engine_kwargs={"connect_args": {"timeout": 10.0}},
            skip_compatibility_check=True,
            skip_table_creation=True,
        )
    except Exception as exc:  # sqlalchemy raises many kinds for a damaged file
        raise storage_error(db, exc) from exc


def _dispose(storage: Any) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def _ranges(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    nums = sorted(numbers)
    parts, start, prev = [], nums[0], nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


# --- formatting ---------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v != 0 and abs(v) < 10 ** -(digits - 1):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.{max(digits - 2, 1)}f}"


def columns(results: RunResults, *, include_all: bool = False) -> list[str]:
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


def flat_record(row: TrialRow, results: RunResults) -> dict[str, Any]:
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


def format_rows(results: RunResults, *, include_all: bool = False, fmt: str = "table") -> str:
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


def _json_doc(results: RunResults, rows: Sequence[TrialRow]) -> dict[str, Any]:
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
    results: RunResults, cols: list[str], records: list[dict[str, Any]], *, include_all: bool
) -> str:
    def cell(col: str, v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return _fmt(v, 2 if col == "accuracy" else 3)
        return "-" if v is None else str(v)

    header = [_header(c) for c in cols]
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
    if results.first_cost:
        footer += f"; sorted by {results.first_cost}"
    if not records:
        footer += ". No trial meets the budget yet: see all trials with --all"
    return "\n".join(out) + "\n" + footer + "\n" + _tracking_line(results)


def _tracking_line(results: RunResults) -> str:
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


def pareto_table(run: Any, *, include_all: bool = False, fmt: str = "table") -> str:
    """Read ``run`` and format its Pareto front (or every trial) as table, CSV or JSON."""
    return format_rows(read_run(run), include_all=include_all, fmt=fmt)
