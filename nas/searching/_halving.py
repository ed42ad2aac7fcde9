"""Successive halving over recovery steps, across the trials of a search (asynchronous, ASHA).

With ``halving_eta`` η >= 2 and ``halving_rungs`` K, a candidate's recovery runs in rungs of
``recovery_steps // η**(K-1-k)`` steps in all (k = 0 .. K-1; the last is ``recovery_steps``).
After every rung but the last, the driver ranks the candidate among the run's trials that
reached the same rung so far and sends it on only when it is in the top ``max(1, n // η)``
of those ``n`` (a rung's first trials, fewer than η, go on when they rank first, as in
Optuna's ``SuccessiveHalvingPruner``). Workers never wait: the decision uses what has
arrived, so it works alike with one worker or many. A promoted candidate continues from its
own weights, optimizer state and batch order, shipped back to a worker with the next
payload: its recovery is the one uninterrupted recovery of ``recovery_steps``.

Ranking (MO-ASHA, Schmucker et al. 2021, with NSGA-II's selection): the rung's accuracy and
the candidate's predicted costs are ordered by budget violation of the costs first (costs
do not change with recovery, so a candidate over a cost limit cannot reach the front), then
by non-domination rank on accuracy and the search's cost objectives, then by crowding
distance. Accuracy alone would stop every cheap candidate early, since cheap candidates
are the least accurate, and starve the cheap end of the front.

Trials stopped early are Optuna ``PRUNED`` trials, in Optuna's meaning: stopped on an
intermediate result, without objective values. The front, ``hwnas pareto``, the report,
export and the fidelity check read ``COMPLETE`` trials only, so every trial there was
recovered for the full ``recovery_steps``. TPE counts pruned trials among its worse group
(after the complete ones; multi-objective trials report no intermediate values); NSGA-II and
GP ignore them. A pruned trial keeps its ``config``, ``predicted`` costs (cost constraints
too), ``rungs`` (one ``{"steps", "trained", "accuracy"}`` per rung reached: steps in all,
steps taken in that rung, accuracy after it) and ``halving`` (where it stopped and its place
in that rung); it counts toward ``n_trials``.

``study.user_attrs["halving"]`` holds the schedule, the trials that reached and stopped at
each rung, the recovery steps spent, and Kendall's tau between the accuracies of the trials
at consecutive rungs (``rank_agreement``): near 1, the short rungs rank candidates as the
full recovery does. The search logs it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nas.searching._dominance import as_losses, direction_of, dominates

if TYPE_CHECKING:
    import optuna

    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)


def rung_steps(recovery_steps: int, eta: int, rungs: int) -> tuple[int, ...]:
    """Total recovery steps at the end of each rung, e.g. ``(5, 16, 50)`` for 50, 3, 3."""
    return tuple(recovery_steps // eta ** (rungs - 1 - k) for k in range(rungs))


def halving_error(recovery_steps: int, eta: int, rungs: int) -> str | None:
    """Why ``eta`` and ``rungs`` cannot halve ``recovery_steps``, or None when they can."""
    if isinstance(eta, bool) or not isinstance(eta, int) or eta == 1 or eta < 0:
        return (
            f"halving_eta must be 0 (off) or an integer >= 2, got {eta!r}. 3 keeps the top "
            "third of each rung."
        )
    if isinstance(rungs, bool) or not isinstance(rungs, int) or rungs < 2:
        return f"halving_rungs must be an integer >= 2, got {rungs!r}. 3 is a common choice."
    if eta and recovery_steps < eta ** (rungs - 1):
        return (
            f"halving_eta={eta} with {rungs} rungs gives the first rung "
            f"{recovery_steps} // {eta}**{rungs - 1} = 0 recovery steps; use recovery_steps "
            f">= {eta ** (rungs - 1)}, fewer halving_rungs or a smaller halving_eta."
        )
    return None


# -- ranking within a rung ------------------------------------------------------------


def rank_order(
    values: Sequence[Sequence[float]], directions: Sequence[str], violations: Sequence[float]
) -> list[int]:
    """Indices of ``values`` from most to least promising (see the module docstring).

    Args:
        values: One row per candidate: accuracy first, then its costs.
        directions: ``"maximize"`` or ``"minimize"`` per column.
        violations: Per candidate, its summed cost-budget violation (0 when within).
    """
    losses = as_losses(values, directions)
    ranks = _nondomination_ranks(losses)
    crowding = [0.0] * len(losses)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, distance in zip(members, _crowding([losses[i] for i in members]), strict=True):
            crowding[i] = distance
    return sorted(
        range(len(losses)),
        key=lambda i: (violations[i], ranks[i], -crowding[i], losses[i][0], i),
    )


def _nondomination_ranks(losses: Sequence[Sequence[float]]) -> list[int]:
    """0 for the non-dominated points, 1 for those dominated only by rank 0, and so on."""
    ranks = [-1] * len(losses)
    rank, left = 0, set(range(len(losses)))
    while left:
        front = {i for i in left if not any(dominates(losses[j], losses[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def _crowding(losses: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front (boundaries: inf)."""
    n = len(losses)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(losses[0])):
        order = sorted(range(n), key=lambda i: losses[i][m])
        low, high = losses[order[0]][m], losses[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for prev, i, nxt in zip(order, order[1:], order[2:], strict=False):
            distance[i] += (losses[nxt][m] - losses[prev][m]) / (high - low)
    return distance


# -- the driver's side ----------------------------------------------------------------


class SuccessiveHalving:
    """Decides, after each rung of a trial's recovery, whether it goes on (driver side).

    The driver passes every new trial's payload through :meth:`first_payload` and every
    result through :meth:`resolve`, which either resubmits the trial to the executor for its
    next rung (and returns None), or returns what the driver records: the final rung's
    result (with the first rung's costs and graph), a failure, or a stopped trial
    (``{"pruned": True, ...}``, told with :func:`tell_pruned`).

    Args:
        study: The run's study (the rung records of its trials decide).
        ctx: The search's trial context (objectives, budget).
        eta: Keep the top ``1/eta`` of each rung.
        steps: Total recovery steps at the end of each rung (:func:`rung_steps`).
    """

    def __init__(
        self, study: optuna.Study, ctx: TrialContext, *, eta: int, steps: Sequence[int]
    ) -> None:
        self.study = study
        self.ctx = ctx
        self.eta = eta
        self.steps = tuple(steps)
        self._payloads: dict[int, dict[str, Any]] = {}
        self._first: dict[int, dict[str, Any]] = {}

    def first_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A new trial's payload, asking for the first rung's steps and the state to go on."""
        self._payloads[int(payload["number"])] = payload
        return {**payload, "steps": self.steps[0], "keep_state": True}

    def resolve(self, trial: Any, outcome: Any, executor: Any) -> Any:
        """Record a rung's result; resubmit the trial (None) or return the outcome to record."""
        number = trial.number
        first = self._first.pop(number, None)
        if isinstance(outcome, BaseException) or "error" in outcome or "steps" not in outcome:
            self._payloads.pop(number, None)
            return outcome if first is None else _failed_after_rungs(first, outcome)
        state = outcome.pop("state", None)
        if first is None:
            first = outcome
            first["user_attrs"]["rungs"] = []
        else:
            _add_timings(first["user_attrs"]["timings_s"], outcome["user_attrs"]["timings_s"])
        attrs = first["user_attrs"]
        accuracy = float(outcome["user_attrs"]["accuracy"])
        attrs["rungs"].append(
            {
                "steps": int(outcome["steps"]),
                "trained": int(outcome["trained"]),
                "accuracy": accuracy,
            }
        )
        attrs["recovery_steps"] = int(outcome["steps"])
        rung = len(attrs["rungs"]) - 1
        if rung == len(self.steps) - 1:
            self._payloads.pop(number, None)
            return self._final(first, accuracy)
        place, n = self._place(number, int(outcome["steps"]), accuracy, attrs["predicted"])
        quota = max(1, n // self.eta)
        attrs["halving"] = {"rung": rung, "place": place + 1, "of": n, "kept": quota}
        trial.set_user_attr("rungs", attrs["rungs"])
        trial.set_user_attr("predicted", attrs["predicted"])
        if place < quota:
            self._first[number] = first
            payload = self._payloads[number]
            executor.submit(
                number,
                {
                    "number": number,
                    "config": payload["config"],
                    "steps": self.steps[rung + 1],
                    "keep_state": rung + 1 < len(self.steps) - 1,
                    "resume": state,
                },
            )
            return None
        self._payloads.pop(number, None)
        return self._stopped(first)

    def summarize(self) -> dict[str, Any]:
        """Store and log the rungs' counts and rank agreement (:func:`halving_summary`)."""
        return halving_summary(self.study, eta=self.eta, steps=self.steps)

    def _final(self, first: dict[str, Any], accuracy: float) -> dict[str, Any]:
        """The trial's result at the full recovery, with the first rung's costs and graph."""
        from nas.searching._trial import objective_values

        ctx, attrs = self.ctx, first["user_attrs"]
        attrs["accuracy"] = accuracy
        attrs.pop("halving", None)
        costs = attrs["predicted"]
        first["values"] = objective_values(
            ctx.objectives, accuracy, costs, missing=ctx.missing_accuracy
        )
        first["constraints"] = ctx.budget.violations(
            {**costs, "accuracy": accuracy}, base_accuracy=ctx.base_accuracy
        )
        first.pop("steps", None)
        first.pop("trained", None)
        return first

    def _stopped(self, first: dict[str, Any]) -> dict[str, Any]:
        """A trial that stops at this rung: its costs and rungs, no objective values."""
        attrs = first["user_attrs"]
        attrs.pop("accuracy", None)  # a rung's accuracy is in "rungs", never the trial's
        attrs["cost_source"] = "predicted"
        return {
            "number": first["number"],
            "pruned": True,
            "user_attrs": attrs,
            "constraints": self._cost_violations(attrs["predicted"]),
        }

    def _cost_violations(self, costs: Mapping[str, float]) -> dict[str, float]:
        limits = self.ctx.budget.cost_limits
        return {key: float(costs[key]) / limit - 1.0 for key, limit in limits.items()}

    def _ranked(self, accuracy: float, costs: Mapping[str, float]) -> tuple[list[float], float]:
        """The ranking row (accuracy, then the search's costs) and the cost violation."""
        names = [n for n in self.ctx.objectives if n != "accuracy"]
        violation = sum(max(0.0, v) for v in self._cost_violations(costs).values())
        return [accuracy, *(float(costs[n]) for n in names)], violation

    def _place(
        self, number: int, steps: int, accuracy: float, costs: Mapping[str, float]
    ) -> tuple[int, int]:
        """This trial's place (0 = best) among the run's trials at ``steps``, and their count."""
        rows, violations = [], []
        for trial in self.study.get_trials(deepcopy=False):
            record = _record_at(trial.user_attrs, steps)
            if trial.number == number or record is None:
                continue
            row, violation = self._ranked(record, trial.user_attrs["predicted"])
            rows.append(row)
            violations.append(violation)
        row, violation = self._ranked(accuracy, costs)
        rows.append(row)
        violations.append(violation)
        names = ["accuracy", *(n for n in self.ctx.objectives if n != "accuracy")]
        order = rank_order(rows, [direction_of(n) for n in names], violations)
        return order.index(len(rows) - 1), len(rows)


def _record_at(attrs: Mapping[str, Any], steps: int) -> float | None:
    """A trial's accuracy after ``steps`` recovery steps, from its ``rungs``, or None."""
    if "predicted" not in attrs:
        return None
    for record in attrs.get("rungs") or []:
        if isinstance(record, Mapping) and record.get("steps") == steps:
            return float(record["accuracy"])
    return None


def _add_timings(total: dict[str, float], more: Mapping[str, float]) -> None:
    for phase, seconds in more.items():
        total[phase] = round(total.get(phase, 0.0) + seconds, 4)


def _failed_after_rungs(first: dict[str, Any], outcome: Any) -> Any:
    """A failure in a later rung, recorded with what the earlier rungs found."""
    attrs = first["user_attrs"]
    attrs.pop("accuracy", None)
    if isinstance(outcome, BaseException):  # a lost Ray worker
        error = f"{type(outcome).__name__}: {outcome}"
        return {"number": first["number"], "error": error, "user_attrs": attrs}
    _add_timings(attrs["timings_s"], outcome["user_attrs"].get("timings_s", {}))
    return {**outcome, "user_attrs": attrs}


def tell_pruned(study: optuna.Study, trial: Any, outcome: Mapping[str, Any]) -> None:
    """Tell ``study`` that ``trial`` stopped early, with its rungs, and log one line."""
    from optuna.trial import TrialState

    attrs = outcome["user_attrs"]
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for key, value in outcome["constraints"].items():
        trial.set_constraint(key, value)
    study.tell(trial, state=TrialState.PRUNED)
    last, where = attrs["rungs"][-1], attrs["halving"]
    metric = attrs.get("metric", "top1")
    accuracy = last["accuracy"]
    score = f"top1={accuracy:.2f}%" if metric == "top1" else f"{metric}={accuracy:.4g}"
    _logger.info(
        "trial %d: stopped after %d recovery steps (%s; place %d of %d at this rung, %d go on)",
        trial.number,
        last["steps"],
        score,
        where["place"],
        where["of"],
        where["kept"],
    )


def count_pruned(study: optuna.Study) -> int:
    """Trials stopped early by successive halving; they count toward ``n_trials``."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))


# -- the report ----------------------------------------------------------------------


def halving_summary(study: optuna.Study, *, eta: int, steps: Sequence[int]) -> dict[str, Any]:
    """The rungs' counts and rank agreement, stored as ``study.user_attrs["halving"]`` and logged.

    ``rank_agreement`` has one entry per pair of consecutive rungs: Kendall's tau between the
    accuracies after ``short_steps`` and after ``long_steps`` of the trials that reached
    both (promoted trials only, so the range is narrower than the whole rung's: read a low
    tau with that in mind); ``kendall_tau`` is None with fewer than three such trials.
    """
    from optuna.trial import TrialState

    from nas.searching._fidelity import rank_agreement

    trials = study.get_trials(deepcopy=False)
    curves = [{r["steps"]: r["accuracy"] for r in t.user_attrs.get("rungs") or []} for t in trials]
    stopped = [
        (t.user_attrs.get("rungs") or [{}])[-1].get("steps")
        for t in trials
        if t.state == TrialState.PRUNED
    ]
    agreement = []
    for short, long in itertools.pairwise(steps):
        pairs = [(c[short], c[long]) for c in curves if short in c and long in c]
        tau, p_value = rank_agreement([a for a, _ in pairs], [b for _, b in pairs])
        ok = len(pairs) >= 3 and math.isfinite(tau)
        agreement.append(
            {
                "short_steps": short,
                "long_steps": long,
                "n": len(pairs),
                "kendall_tau": tau if ok else None,
                "p_value": p_value if ok else None,
            }
        )
    spent = sum(max(c) for c in curves if c)
    summary = {
        "eta": eta,
        "rung_steps": list(steps),
        "reached": [sum(s in c for c in curves) for s in steps],
        "stopped": [stopped.count(s) for s in steps[:-1]],
        "recovery_steps_spent": spent,
        "recovery_steps_without_halving": steps[-1] * sum(bool(c) for c in curves),
        "rank_agreement": agreement,
    }
    study.set_user_attr("halving", summary)
    _logger.info("%s", halving_text(summary))
    return summary


def halving_text(summary: Mapping[str, Any]) -> str:
    """One sentence on a search's successive halving: rungs, steps spent, rank agreement."""
    steps, reached = summary["rung_steps"], summary["reached"]
    taus = "; ".join(
        f"{a['short_steps']}->{a['long_steps']} steps: "
        + (f"{a['kendall_tau']:.2f} over {a['n']} trials" if a["kendall_tau"] is not None
           else f"too few trials ({a['n']})")
        for a in summary["rank_agreement"]
    )  # fmt: skip
    full = summary["recovery_steps_without_halving"]
    spent = summary["recovery_steps_spent"]
    return (
        f"successive halving (eta {summary['eta']}): rungs of {'/'.join(map(str, steps))} "
        f"recovery steps reached by {'/'.join(map(str, reached))} trials; {spent} of {full} "
        f"steps spent ({100.0 * spent / full if full else 100.0:.0f}%); Kendall tau between "
        f"rungs: {taus}"
    )


def make_halving(
    study: optuna.Study, ctx: TrialContext, *, eta: int, rungs: int, recovery_steps: int
) -> SuccessiveHalving | None:
    """The search's successive halving, or None when ``eta`` is 0 (off)."""
    if not eta:
        return None
    return SuccessiveHalving(study, ctx, eta=eta, steps=rung_steps(recovery_steps, eta, rungs))


__all__ = [
    "SuccessiveHalving",
    "count_pruned",
    "halving_error",
    "halving_summary",
    "make_halving",
    "rank_order",
    "rung_steps",
    "tell_pruned",
]
