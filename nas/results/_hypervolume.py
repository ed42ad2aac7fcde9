"""Hypervolume of a run's feasible trials, trial after trial.

Each objective is turned into a loss normalised against the base model, so
runs on different devices and tasks read on the same scale:

- a cost ``c`` (latency, energy, memory) becomes ``c / c_base`` (the base model is 1);
- accuracy becomes ``1 - accuracy / accuracy_base`` (the base model is 0, accuracy 0 is 1).

The reference point is, per objective, the worst loss among the base model and all
completed trials, pushed out by a tenth of the observed range so that the worst trials still
count. It does not depend on the budget, so a run without one grows from its first trial.
Only trials that meet the budget count. The base model's costs are the measured ones where
the search used measured costs; where the base model's value of a cost is unknown, the
largest value seen is used instead.

The volume is computed here (exactly, by slicing): Optuna keeps its own implementation in a
private module, ``optuna._hypervolume``, which is not part of its API. The functions are
public as ``nas.results.hypervolume`` and friends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nas.searching._dominance import direction_of, dominates
from nas.searching._run import Run
from nas.searching._trial_row import TrialRow


def normalised_losses(results: Run, rows: Sequence[TrialRow]) -> list[list[float]]:
    """Per row, the objectives as normalised losses (see the module docstring)."""
    measured = any(r.cost_source == "measured" for r in results.rows)
    scale: dict[str, float] = {}
    for name in results.objectives:
        pred, meas = results.base_value(name)
        base = meas if measured and meas is not None else pred
        if base is None or base <= 0:
            values = (r.values.get(name, math.nan) for r in results.rows)
            seen = [abs(v) for v in values if math.isfinite(v)]  # -inf: rejected, no score
            base = max(seen, default=1.0) or 1.0
        scale[name] = base
    out = []
    for row in rows:
        point = []
        for name in results.objectives:
            v = row.values[name]
            if direction_of(name) == "maximize":
                point.append(1.0 - v / scale[name])
            else:
                point.append(v / scale[name])
        out.append(point)
    return out


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume (minimisation) dominated by ``points`` up to ``reference``.

    Exact, by slicing along the last objective (HSO): fine for the fronts of a search, a few
    dozen points in two to four objectives. Points not strictly better than the reference in
    every coordinate are ignored.
    """
    ref = tuple(float(r) for r in reference)
    inside = [
        tuple(map(float, p)) for p in points if all(a < b for a, b in zip(p, ref, strict=True))
    ]
    return _slice_volume(_nondominated(inside), ref)


def _slice_volume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    points = sorted(points, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(points):
        upper = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        if upper > p[-1]:
            below = _nondominated([q[:-1] for q in points[: i + 1]])
            total += (upper - p[-1]) * _slice_volume(below, ref[:-1])
    return total


def _nondominated(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    unique = list(dict.fromkeys(points))
    return [p for p in unique if not any(dominates(q, p) for q in unique)]


def hypervolume_reference(results: Run) -> list[float]:
    """The reference point of :func:`hypervolume_history` (see the module docstring)."""
    seen = [p for p in normalised_losses(results, results.rows) if all(map(math.isfinite, p))]
    base = [0.0 if direction_of(n) == "maximize" else 1.0 for n in results.objectives]
    ref = []
    for i, b in enumerate(base):
        values = [b] + [p[i] for p in seen]
        worst, best = max(values), min(values)
        ref.append(worst + (0.1 * (worst - best) or 0.1))
    return ref


def hypervolume_history(results: Run) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible trials finished so far), per trial."""
    rows = sorted(results.rows, key=lambda r: r.number)
    losses = normalised_losses(results, rows)
    ref = hypervolume_reference(results)
    history: list[tuple[int, float]] = []
    kept: list[list[float]] = []
    hv = 0.0
    for row, point in zip(rows, losses, strict=False):
        inside = row.budget_met and all(math.isfinite(x) for x in point)
        if inside and not any(dominates(k, point, weakly=True) for k in kept):
            kept = [k for k in kept if not dominates(point, k, weakly=True)]
            kept.append(point)
            hv = hypervolume(kept, ref)
        history.append((row.number, hv))
    return history


__all__ = ["hypervolume", "hypervolume_history", "hypervolume_reference", "normalised_losses"]
