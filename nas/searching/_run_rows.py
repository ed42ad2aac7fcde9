"""The results of a run as rows: what one read of its study found, and the queries on it.

:class:`RunRows` is the part of :class:`~nas.searching._run.Run` that works on
:class:`~nas.searching._trial_row.TrialRow` values (the front, a trial by number, the best
trial, the base model and the budget); it needs only :meth:`RunRows._read`, so the same
queries answer for a run read from its storage and for one built in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError
from nas.searching._dominance import pareto_mask
from nas.searching._trial_row import (
    TrialRow,
    base_value,
    number_or_none,
    objective_name,
    trial_row,
)

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class RunData:
    """What one read of a run's storage found (or what :meth:`Run.from_rows` was given)."""

    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    rows: tuple[TrialRow, ...]
    base: Mapping[str, Any]
    budget: Mapping[str, float]
    n_running: int = 0
    failed: Mapping[int, str] = field(default_factory=dict)
    pruned: Mapping[int, str] = field(default_factory=dict)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    distributions: Mapping[str, Any] = field(default_factory=dict)


class RunRows:
    """Queries on a run's rows; subclasses say where the rows come from (:meth:`_read`)."""

    path: Path

    def _read(self) -> RunData:
        raise NotImplementedError

    @property
    def objectives(self) -> tuple[str, ...]:
        """Canonical objective names, in the order of ``trial.values``."""
        return self._read().objectives

    @property
    def directions(self) -> tuple[str, ...]:
        """``"maximize"`` or ``"minimize"`` per objective."""
        return self._read().directions

    @property
    def rows(self) -> tuple[TrialRow, ...]:
        """Every completed trial, in trial-number order, each with its ``pareto`` flag."""
        return self._read().rows

    @property
    def base(self) -> dict[str, Any]:
        """The base model's metrics (``accuracy``, ``latency_ms``, ``energy_mj``, ...)."""
        return dict(self._read().base)

    @property
    def budget(self) -> dict[str, float]:
        """Budget limits by key (empty for none), relative ones resolved as the search did."""
        return dict(self._read().budget)

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The study's user attributes (see the module docstring)."""
        return dict(self._read().user_attrs)

    @property
    def distributions(self) -> Mapping[str, Any]:
        """Parameter name -> Optuna distribution, merged over the completed trials."""
        return self._read().distributions

    @property
    def n_running(self) -> int:
        """Trials still running (or left running by a killed search)."""
        return self._read().n_running

    @property
    def failed(self) -> Mapping[int, str]:
        """Trial number -> recorded error, for failed trials."""
        return self._read().failed

    @property
    def pruned(self) -> Mapping[int, str]:
        """Trial number -> where successive halving stopped it, for pruned trials."""
        return self._read().pruned

    @property
    def n_failed(self) -> int:
        """Trials that failed."""
        return len(self.failed)

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
        """The completed trial ``number`` (:meth:`frozen_trial` gives Optuna's view).

        Raises:
            RunError: The trial is not in the run, failed, or has not finished.
        """
        for row in self.rows:
            if row.number == number:
                return row
        hint = f"choose a finished trial, e.g. one of {[r.number for r in self.front()][:10]}"
        if number in self.failed:
            raise RunError(
                f"trial {number} of run {self.path} failed ({self.failed[number]}); {hint}"
            )
        if number in self.pruned:
            raise RunError(
                f"trial {number} of run {self.path} was {self.pruned[number]} and has no "
                f"costs or final accuracy; {hint}"
            )
        known = [r.number for r in self.rows]
        raise RunError(
            f"trial {number} is not a finished trial of run {self.path}; finished trials: "
            f"{_ranges(known)}. See `hwnas pareto {self.path} --all`."
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
                f"no trial of run {self.path} meets the budget {self.budget}; pick one "
                f"yourself with --trial N (see `hwnas pareto {self.path} --all`)"
            )
        cost = self.first_cost
        return min(
            feasible,
            key=lambda r: (-(r.accuracy or 0.0), r.values.get(cost, 0.0) if cost else 0.0),
        )

    def base_value(self, name: str) -> tuple[float | None, float | None]:
        """The base model's (predicted, measured) value of objective ``name``."""
        return base_value(self.base, name)

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


def read_results(stored: Mapping[str, Any], study: optuna.Study) -> RunData:
    """Rows, Pareto flags, failures and attributes from one read of ``study``."""
    from optuna.trial import TrialState

    attrs = dict(study.user_attrs)
    directions = tuple(d.name.lower() for d in study.directions)
    names = attrs.get("objectives") or stored.get("objectives") or []
    objectives = tuple(objective_name(str(n)) for n in names)
    if len(objectives) != len(directions):
        objectives = tuple(f"objective_{i}" for i in range(len(directions)))
    raw: list[TrialRow] = []
    failed: dict[int, str] = {}
    pruned: dict[int, str] = {}
    n_running = 0
    distributions: dict[str, Any] = {}
    extra: Mapping[str, Mapping[str, Any]] = attrs.get("trial_user_attrs") or {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.values is not None:
            raw.append(trial_row(t, objectives, extra.get(str(t.number)) or {}))
            distributions.update(t.distributions)
        elif t.state == TrialState.FAIL:
            failed[t.number] = str(t.user_attrs.get("error", "no error recorded"))
        elif t.state == TrialState.PRUNED:
            pruned[t.number] = _pruned_text(t.user_attrs.get("rungs"))
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            n_running += 1
    mask = pareto_mask(
        [[r.values[n] for n in objectives] for r in raw], directions, [r.budget_met for r in raw]
    )
    return RunData(
        objectives=objectives,
        directions=directions,
        rows=tuple(replace(r, pareto=m) for r, m in zip(raw, mask, strict=True)),
        base=dict(attrs.get("base") or {}),
        budget=budget_of(attrs, stored),
        n_running=n_running,
        failed=failed,
        pruned=pruned,
        user_attrs=attrs,
        distributions=distributions,
    )


def _pruned_text(rungs: Any) -> str:
    """``"stopped by successive halving after 10 recovery steps"`` from a trial's rungs."""
    last = rungs[-1] if isinstance(rungs, list) and rungs else None
    steps = last.get("steps") if isinstance(last, Mapping) else None
    return "stopped by successive halving" + (
        f" after {steps} recovery steps" if steps is not None else ""
    )


def budget_of(attrs: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, float]:
    """The resolved budget the search stored, else the absolute limits of the settings."""
    given = attrs.get("budget") or stored.get("resolved_budget") or stored.get("budget") or {}
    out = {}
    for key, value in dict(given).items():
        number = number_or_none(value)
        if number is not None:
            out[str(key)] = number
    return out


def accuracy_floor(budget: Mapping[str, float], base_accuracy: float | None) -> float | None:
    """The lowest accuracy allowed by ``budget`` ("accuracy_drop" in points, or "accuracy")."""
    if "accuracy" in budget:
        return float(budget["accuracy"])
    if "accuracy_drop" in budget and base_accuracy is not None:
        return float(base_accuracy) - float(budget["accuracy_drop"])
    return None


def sort_rows(rows: Sequence[TrialRow], key: str | None) -> list[TrialRow]:
    """Rows sorted by objective ``key`` (ascending), then trial number."""
    if key is None:
        return sorted(rows, key=lambda r: r.number)
    return sorted(rows, key=lambda r: (r.values.get(key, math.inf), r.number))


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
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


__all__ = ["RunData", "RunRows", "accuracy_floor", "budget_of", "read_results", "sort_rows"]
