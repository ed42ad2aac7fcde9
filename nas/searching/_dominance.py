"""Pareto dominance: the one comparison the run, the front table and the hypervolume share.

Values are compared as losses (every objective minimised): a maximised objective is negated
first. :func:`pareto_mask` is the pure filter behind every front of a run that is not read
from Optuna itself (``Study.best_trials`` is used where a study is at hand).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nas._objectives import OBJECTIVES


def direction_of(name: str) -> str:
    """``"maximize"`` or ``"minimize"`` for a registered objective; unknown ones minimise."""
    objective = OBJECTIVES.get(name)
    return objective.direction if objective is not None else "minimize"


def dominates(a: Sequence[float], b: Sequence[float], *, weakly: bool = False) -> bool:
    """Whether loss vector ``a`` dominates ``b`` (minimisation).

    ``a`` dominates when it is no worse everywhere and better somewhere; with ``weakly``,
    no worse everywhere is enough (a point weakly dominates itself).
    """
    pairs = list(zip(a, b, strict=True))
    if not all(x <= y for x, y in pairs):
        return False
    return weakly or any(x < y for x, y in pairs)


def as_losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    """``values`` with every maximised column negated, so that lower is better everywhere.

    Raises:
        ValueError: a direction is neither ``"maximize"`` nor ``"minimize"``.
    """
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    return [[s * float(v) for s, v in zip(signs, row, strict=False)] for row in values]


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
        One flag per point. Of several identical points, all are kept; points with a value
        that is not finite are never on the front.
    """
    loss = as_losses(values, directions)
    ok = [True] * len(loss) if feasible is None else [bool(f) for f in feasible]
    ok = [f and all(math.isfinite(x) for x in row) for f, row in zip(ok, loss, strict=False)]
    return [
        ok[i] and not any(ok[j] and dominates(b, a) for j, b in enumerate(loss) if j != i)
        for i, a in enumerate(loss)
    ]


__all__ = ["as_losses", "direction_of", "dominates", "pareto_mask"]
