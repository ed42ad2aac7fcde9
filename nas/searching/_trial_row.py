"""One finished trial of a run as plain data: :class:`TrialRow`, built from a FrozenTrial.

The row names every value (``values["latency_ms"]``), keeps the predicted and measured
costs apart, and says whether the trial met the budget, so the front table, the plots, the
report and the export read trials without knowing Optuna's storage layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nas._objectives import OBJECTIVES


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


def number_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _numbers(mapping: Any) -> dict[str, float]:
    """The numeric entries of a stored mapping, keyed by canonical objective name."""
    out = {}
    for key, value in dict(mapping or {}).items():
        number = number_or_none(value)
        if number is not None:
            out[objective_name(key)] = number
    return out


def trial_row(trial: Any, objectives: Sequence[str], extra: Mapping[str, Any]) -> TrialRow:
    """The row of a completed FrozenTrial (its ``pareto`` flag is left False).

    Args:
        trial: A completed ``optuna.trial.FrozenTrial``.
        objectives: Canonical objective names, in the order of ``trial.values``.
        extra: User attributes stored after the trial finished (they win).
    """
    ua = {**trial.user_attrs, **extra}
    constraints = {str(k): float(v) for k, v in dict(trial.constraints).items()}
    values = {n: float(v) for n, v in zip(objectives, trial.values, strict=False)}
    accuracy = values.get("accuracy", ua.get("accuracy"))
    return TrialRow(
        number=trial.number,
        values=values,
        measured=_numbers(ua.get("measured")),
        energy_source=str(ua.get("energy_source", "")),
        budget_met=all(v <= 0.0 for v in constraints.values()),
        constraints=constraints,
        summary=str(ua.get("summary", "")),
        config=ua.get("config"),
        params=dict(trial.params),
        rejected_before_training=bool(ua.get("rejected_before_training", False)),
        predicted=_numbers(ua.get("predicted")),
        accuracy=number_or_none(accuracy),
        cost_source=str(ua.get("cost_source") or "predicted"),
    )


def base_value(base: Mapping[str, Any], name: str) -> tuple[float | None, float | None]:
    """The base model's (predicted, measured) value of objective ``name``.

    Reads the layouts the search has stored: ``{name: value}`` with ``measured`` beside it,
    ``{name: {"predicted", "measured"}}`` and ``{name}_predicted`` / ``{name}_measured``.
    """
    num = number_or_none
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


__all__ = ["TrialRow", "base_value", "number_or_none", "objective_name", "trial_row"]
