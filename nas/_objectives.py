"""The objectives a search can optimise: one registry read by every part that names one.

An :class:`Objective` says its name, direction, unit, short forms, and how its value is
obtained: ``evaluated`` (accuracy, from the recovered model), ``measured`` (on the device;
predicted by the device's predictors before the measurement), or ``computed`` (from the
candidate's ONNX graph by the objective's own ``compute`` function). Every cost objective
(minimised, not evaluated) is also a budget key of the same name. The trial, the budget, the
front, the report and the CLI all read :data:`OBJECTIVES`; a new objective is one
:func:`register_objective` call::

    def params_k(graph_path: str) -> float:
        return onnx_weight_count(graph_path) / 1e3

    nas.register_objective(
        nas.Objective("params_k", "minimize", "k", "weights in thousands", source="computed",
                      compute=params_k)
    )
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, overload

from nas._errors import BudgetError, UnknownNameError

Direction = Literal["maximize", "minimize"]
Source = Literal["evaluated", "measured", "computed"]


@dataclass(frozen=True)
class Objective:
    """One quantity a search can optimise.

    Attributes:
        name: Registry key, also the key in ``trial.user_attrs["predicted"]`` and, for a
            cost, the budget key (snake_case with its unit: ``latency_ms``).
        direction: ``"maximize"`` or ``"minimize"``.
        unit: Unit of the values ("%", "ms", "mJ", "MB").
        description: One line for help texts.
        source: How the value is obtained (see the module docstring).
        aliases: Short forms users may type (``"latency"``).
        compute: For ``computed`` objectives: the value of an ONNX graph, given its path.
            Must be a module-level function when trials run on Ray workers.
    """

    name: str
    direction: Direction
    unit: str
    description: str
    source: Source = "computed"
    aliases: tuple[str, ...] = ()
    compute: Callable[[str], float] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(
                f"Objective.name must be an identifier such as 'params_k', got {self.name!r}."
            )
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(
                f"Objective.direction must be 'maximize' or 'minimize', got {self.direction!r}."
            )
        if self.source not in ("evaluated", "measured", "computed"):
            raise ValueError(
                f"Objective.source must be 'evaluated', 'measured' or 'computed', got "
                f"{self.source!r}."
            )
        if self.source == "computed" and self.compute is None:
            raise ValueError(
                f"objective {self.name!r} is computed: give compute=FUNCTION(graph_path) -> float."
            )

    @property
    def is_cost(self) -> bool:
        """A cost of running the model (minimised, not evaluated): also a budget key."""
        return self.direction == "minimize" and self.source != "evaluated"


class ObjectiveRegistry(Mapping[str, Objective]):
    """Objectives by name, with their short forms; a duplicate name or alias is refused."""

    def __init__(self) -> None:
        self._items: dict[str, Objective] = {}
        self._aliases: dict[str, str] = {}

    def add(self, objective: Objective, *, replace: bool = False) -> Objective:
        """Register ``objective``; returns it.

        Raises:
            ValueError: the name or an alias is taken (pass ``replace=True`` for the name).
        """
        taken = objective.name in self._items or objective.name in self._aliases
        if taken and not (replace and objective.name in self._items):
            raise ValueError(
                f"objective {objective.name!r} is already registered; pass replace=True to "
                "replace it."
            )
        for alias in objective.aliases:
            owner = self._aliases.get(alias, alias if alias in self._items else None)
            if owner is not None and owner != objective.name:
                raise ValueError(f"alias {alias!r} already names objective {owner!r}.")
        if replace:
            self.remove(objective.name)
        self._items[objective.name] = objective
        self._aliases.update((alias, objective.name) for alias in objective.aliases)
        return objective

    def remove(self, name: str) -> None:
        """Forget objective ``name`` and its aliases (no error if absent)."""
        self._items.pop(name, None)
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    def canonical(self, name: str) -> str:
        """The registered name of ``name`` or its short form.

        Raises:
            UnknownNameError: listing the valid names and the closest one.
        """
        key = name.strip()
        key = self._aliases.get(key, key)
        if key not in self._items:
            valid = sorted(self._items)
            close = difflib.get_close_matches(key, [*valid, *self._aliases], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown objective {name!r}; valid objectives: {valid} (short forms: "
                f"{sorted(self._aliases)}).{hint}"
            )
        return key

    def aliases(self) -> dict[str, str]:
        """Short form -> name."""
        return dict(self._aliases)

    def costs(self) -> tuple[str, ...]:
        """Names of the cost objectives, in registration order."""
        return tuple(n for n, o in self._items.items() if o.is_cost)

    def __getitem__(self, name: str) -> Objective:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _memory_mb(graph_path: str) -> float:
    """Weights at their bit-widths plus the peak of live activations, in MB."""
    from latency_models import memory_footprint

    footprint = memory_footprint(graph_path)
    return (footprint.weight_bytes + footprint.peak_activation_bytes) / 1e6


OBJECTIVES = ObjectiveRegistry()
"""The objectives a search can optimise, by name."""
OBJECTIVES.add(
    Objective("accuracy", "maximize", "%", "top-1 accuracy on the validation set, or the "
              "task metric as a higher-is-better score (neg_mse for an MSE; the study "
              "attribute 'metric' names it)", source="evaluated", aliases=("acc", "top1"))
)  # fmt: skip
OBJECTIVES.add(
    Objective("latency_ms", "minimize", "ms", "latency on the device (measured; predicted "
              "before measurement)", source="measured", aliases=("latency",))
)  # fmt: skip
OBJECTIVES.add(
    Objective("energy_mj", "minimize", "mJ", "energy per inference (measured where the "
              "device has a meter, else estimated)", source="measured", aliases=("energy",))
)  # fmt: skip
OBJECTIVES.add(
    Objective("memory_mb", "minimize", "MB", "weights at their bit-widths plus peak "
              "activations", source="computed", aliases=("memory",), compute=_memory_mb)
)  # fmt: skip


def register_objective(objective: Objective, *, replace: bool = False) -> Objective:
    """Add ``objective`` to :data:`OBJECTIVES`: searches, budgets and reports then know it."""
    return OBJECTIVES.add(objective, replace=replace)


class _CostNames(Sequence[str]):
    """A live view of the registry's cost objective names (registered ones included)."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return OBJECTIVES.costs()[index]

    def __len__(self) -> int:
        return len(OBJECTIVES.costs())

    def __repr__(self) -> str:
        return repr(OBJECTIVES.costs())


class _BudgetKeys(Mapping[str, str]):
    """A live view of the budget keys: every cost objective, and ``accuracy_drop``."""

    def _items(self) -> dict[str, str]:
        out = {n: f"{OBJECTIVES[n].description} limit in {OBJECTIVES[n].unit}"
               for n in OBJECTIVES.costs()}  # fmt: skip
        out["accuracy_drop"] = (
            "most the task's metric may lose against the base model (top-1 points by default)"
        )
        return out

    def __getitem__(self, key: str) -> str:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


COST_OBJECTIVES: Sequence[str] = _CostNames()
"""Objectives that are costs of running the model (measured or computed, minimised)."""

BUDGET_KEYS: Mapping[str, str] = _BudgetKeys()
"""Valid budget keys and what each limits."""


def canonical_objective(name: str) -> str:
    """The registered name of an objective or its short form (:class:`BudgetError` if none)."""
    try:
        return OBJECTIVES.canonical(name)
    except UnknownNameError as exc:
        raise BudgetError(str(exc.args[0])) from None


__all__ = [
    "BUDGET_KEYS",
    "COST_OBJECTIVES",
    "OBJECTIVES",
    "Direction",
    "Objective",
    "ObjectiveRegistry",
    "canonical_objective",
    "register_objective",
]
