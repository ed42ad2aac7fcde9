"""Objectives and budgets of a search.

An *objective* is a quantity the search optimises: ``accuracy`` (top-1 in %, maximised),
``latency_ms``, ``energy_mj`` and ``memory_mb`` (minimised). A *budget* is a set of limits,
``"latency_ms=1.5,memory_mb=2,accuracy_drop=1"``: cost limits on latency (ms), energy (mJ)
and memory (MB, weights plus peak activations), and a limit on the accuracy lost against the
base model (``accuracy_drop``, in points of top-1). A cost limit may be relative to the base
model, ``latency_ms=0.5x``: the search resolves it against the base model measured on the
device before the first trial (:meth:`Budget.resolve`). Each limit becomes one Optuna
constraint (``trial.set_constraint``, value > 0 means violated), so the Pareto front holds
only trials that meet the budget while infeasible trials still teach the sampler.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nas._errors import BudgetError
from nas._objectives import (  # the registry; importable from here as before
    BUDGET_KEYS,
    COST_OBJECTIVES,
    OBJECTIVES,
    Direction,
    Objective,
    canonical_objective,
    register_objective,
)


def _closest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def parse_objectives(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parse and check the objectives of a search.

    Args:
        spec: Names, as a sequence or one comma-separated string
            (``"accuracy,latency_ms,memory_mb"``). Short forms ``latency``, ``energy`` and
            ``memory`` are accepted.

    Returns:
        The canonical names, in the given order, without duplicates.

    Raises:
        BudgetError: an unknown name (listing the valid ones and the closest), or fewer than
            two objectives.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise BudgetError(f"objective names must be strings, got {part!r}.")
        if not part.strip():
            continue
        name = canonical_objective(part)
        if name not in names:
            names.append(name)
    if len(names) < 2:
        raise BudgetError(
            f"a search needs at least two objectives, got {names}. Add a cost to trade "
            f"accuracy against, e.g. objectives=('accuracy', 'latency_ms')."
        )
    return tuple(names)


def directions(objectives: Sequence[str]) -> list[Direction]:
    """The Optuna study directions of ``objectives`` (canonical names)."""
    return [OBJECTIVES[name].direction for name in objectives]


RELATIVE_SUFFIX = "x"
"""A cost limit written ``0.5x`` is that fraction of the base model's measured cost."""


def _parse_limit(key: str, value: object) -> tuple[float, bool]:
    """(number, relative) of one budget value: ``1.5``, ``"1.5"`` or ``"0.5x"``."""
    relative = isinstance(value, str) and value.strip().lower().endswith(RELATIVE_SUFFIX)
    text = value.strip()[:-1] if relative and isinstance(value, str) else value
    if relative and key not in COST_OBJECTIVES:
        raise BudgetError(
            f"budget {key}={value!r}: only latency_ms, energy_mj and memory_mb can be relative "
            f"to the base model. Write {key}=1 for at most one top-1 point lost."
        )
    try:
        if isinstance(text, bool):
            raise TypeError
        number = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BudgetError(
            f"budget {key} must be a number or a fraction of the base model such as 0.5x, "
            f"got {value!r}. Example: {key}=1.5 or {key}=0.5x."
        ) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and key != "accuracy_drop"):
        allowed = ">= 0" if key == "accuracy_drop" else "> 0"
        raise BudgetError(f"budget {key} must be finite and {allowed}, got {value!r}.")
    return number, relative


@dataclass(frozen=True)
class Budget:
    """Limits a compressed model must meet.

    Attributes:
        limits: Budget key -> limit (keys from :data:`BUDGET_KEYS`; costs in ms, mJ, MB;
            ``accuracy_drop`` in top-1 points). A cost limit may be given as a string
            ``"0.5x"``: a fraction of the base model's cost, kept in :attr:`relative` until
            :meth:`resolve` turns it into an absolute limit.
    """

    limits: Mapping[str, float] = field(default_factory=dict)
    relative: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked: dict[str, float] = {}
        relative: dict[str, float] = {}
        for key, value in [*dict(self.limits).items(), *dict(self.relative).items()]:
            if key not in BUDGET_KEYS:
                raise BudgetError(
                    f"unknown budget key {key!r}; valid keys: {sorted(BUDGET_KEYS)}."
                    f"{_closest(key, BUDGET_KEYS)}"
                )
            if key in checked or key in relative:
                raise BudgetError(f"budget key {key!r} is given twice.")
            number, is_relative = _parse_limit(key, value)
            if is_relative or key in dict(self.relative):
                relative[key] = number
            else:
                checked[key] = number
        object.__setattr__(self, "limits", MappingProxyType(checked))
        object.__setattr__(self, "relative", MappingProxyType(relative))

    def __bool__(self) -> bool:
        return bool(self.limits) or bool(self.relative)

    @property
    def is_resolved(self) -> bool:
        """Whether every limit is absolute (no ``0.5x`` left to resolve)."""
        return not self.relative

    @property
    def cost_limits(self) -> dict[str, float]:
        """The absolute latency, energy and memory limits (without ``accuracy_drop``)."""
        return {k: v for k, v in self.limits.items() if k in COST_OBJECTIVES}

    def to_dict(self) -> dict[str, float | str]:
        """JSON-able copy of the limits, relative ones as ``"0.5x"`` strings."""
        out: dict[str, float | str] = dict(self.limits)
        out.update({k: f"{v:g}{RELATIVE_SUFFIX}" for k, v in self.relative.items()})
        return out

    def __str__(self) -> str:
        items = [
            f"{k}={v}" if isinstance(v, str) else f"{k}={v:g}" for k, v in self.to_dict().items()
        ]
        return ",".join(items) or "none"

    def resolve(self, base: Mapping[str, float | None]) -> Budget:
        """This budget with every relative limit turned absolute against ``base``.

        Args:
            base: The base model's costs by objective name (measured where possible).

        Raises:
            BudgetError: ``base`` has no value for a relative key.
        """
        limits = dict(self.limits)
        for key, fraction in self.relative.items():
            value = base.get(key)
            if value is None or not math.isfinite(float(value)) or float(value) <= 0:
                raise BudgetError(
                    f"budget {key}={fraction:g}x needs the base model's {key}, which is not "
                    f"known on this device. Give an absolute limit ({key}=VALUE) instead."
                )
            limits[key] = fraction * float(value)
        return Budget(limits)

    def fraction_hints(self) -> list[str]:
        """Absolute cost limits at most 1 that may have been meant as fractions."""
        return [
            f"{key}={value:g} is read as an absolute limit of {value:g} "
            f"{OBJECTIVES[key].unit}; for {value:g} of the base model's cost write "
            f"{key}={value:g}x"
            for key, value in self.cost_limits.items()
            if value <= 1.0
        ]

    def violations(
        self, values: Mapping[str, float | None], *, base_accuracy: float | None = None
    ) -> dict[str, float]:
        """Constraint values for Optuna, one per limit (> 0 means violated).

        Cost violations are relative (``value / limit - 1``), so that limits in different units
        weigh alike in the samplers' summed violation; ``accuracy_drop`` is
        ``(base_accuracy - accuracy - limit) / max(limit, 1)``.

        Args:
            values: Measured or predicted values by objective name (``accuracy`` in %).
                A missing or ``None`` accuracy (a trial rejected before training) violates
                ``accuracy_drop`` by a full 100 points.
            base_accuracy: Top-1 of the base model in %, needed for ``accuracy_drop``.

        Returns:
            Budget key -> constraint value.
        """
        if not self.is_resolved:
            raise BudgetError(
                f"the relative limits {dict(self.relative)} must be resolved against the base "
                "model first (Budget.resolve)."
            )
        out: dict[str, float] = {}
        for key, limit in self.limits.items():
            if key == "accuracy_drop":
                accuracy = values.get("accuracy")
                if base_accuracy is None:
                    raise BudgetError("accuracy_drop needs the base model's accuracy.")
                drop = 100.0 if accuracy is None else base_accuracy - accuracy
                out[key] = (drop - limit) / max(limit, 1.0)
            else:
                value = values.get(key)
                if value is None:
                    raise BudgetError(f"no value for budget key {key!r} in {dict(values)}.")
                out[key] = value / limit - 1.0
        return out

    def far_outside(self, predicted: Mapping[str, float], *, factor: float = 1.5) -> list[str]:
        """Cost keys whose predicted value exceeds ``factor`` times their limit.

        A trial with any such key is rejected before training: even a generous predictor
        error would not bring it within the budget.
        """
        return [
            key
            for key, limit in self.cost_limits.items()
            if predicted.get(key) is not None and predicted[key] > factor * limit
        ]

    def unmet(self, predicted: Mapping[str, float]) -> list[str]:
        """Cost keys whose value exceeds its limit."""
        return [k for k, lim in self.cost_limits.items() if predicted.get(k, 0.0) > lim]


def parse_budget(spec: str | Mapping[str, Any] | Budget | None) -> Budget:
    """Parse a budget.

    Args:
        spec: ``"latency_ms=1.5,memory_mb=2,accuracy_drop=1"``, a mapping of the same, a
            :class:`Budget`, or ``None``/``""`` for no budget. Short forms ``latency``,
            ``energy`` and ``memory`` are accepted as keys.

    Returns:
        The checked budget.

    Raises:
        BudgetError: an unknown key (listing the valid ones and the closest), a malformed
            item, a repeated key or a value that is not a positive number (or fraction
            ``0.5x`` of a cost).
    """
    if spec is None:
        return Budget()
    if isinstance(spec, Budget):
        return spec
    items: list[tuple[str, object]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise BudgetError(
                    f"budget item {part!r} is not KEY=VALUE. Example: "
                    f"latency_ms=1.5,memory_mb=2,accuracy_drop=1 (keys: {sorted(BUDGET_KEYS)})."
                )
            items.append((key.strip(), value.strip()))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise BudgetError(
            f"budget must be a string, a mapping or None, got {type(spec).__name__}."
        )
    limits: dict[str, object] = {}
    for name, limit in items:
        aliases = OBJECTIVES.aliases()
        known = aliases.get(name, name)
        canonical = known if known in COST_OBJECTIVES else name
        if canonical in limits:
            raise BudgetError(f"budget key {canonical!r} is given twice.")
        limits[canonical] = limit
    return Budget(limits)  # type: ignore[arg-type]  # values are checked in __post_init__


__all__ = [
    "BUDGET_KEYS",
    "COST_OBJECTIVES",
    "OBJECTIVES",
    "Budget",
    "Direction",
    "Objective",
    "directions",
    "parse_budget",
    "parse_objectives",
    "register_objective",
]
