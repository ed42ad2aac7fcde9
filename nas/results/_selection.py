"""Which trial of a run to export, and which task a folder may load.

:func:`candidates` judges the trials by what was measured on the device where the search
measured them; :func:`trusted_task_spec` refuses to import a task that a folder names as
code unless the user names or trusts it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nas._errors import RunError, TaskError
from nas._objectives import OBJECTIVES
from nas.searching._run import Run
from nas.searching._trial_row import TrialRow

_logger = logging.getLogger(__name__)


def measured_within_budget(row: TrialRow, results: Run) -> bool | None:
    """Whether ``row`` meets the run's budget by measurement; None when a cost is unmeasured.

    Latency and energy limits are judged on the values measured on the device, computed
    objectives (memory) on their computed value, ``accuracy_drop`` on the search's accuracy.
    """
    if row.accuracy is None or row.rejected_before_training:
        return False
    for key, limit in results.budget.items():
        if key == "accuracy_drop":
            floor = results.accuracy_floor()
            if floor is not None and row.accuracy < floor:
                return False
            continue
        if key in OBJECTIVES and OBJECTIVES[key].source == "computed":
            value = row.predicted.get(key, row.values.get(key))
        else:
            value = row.measured.get(key)
        if value is None:
            return None
        if value > limit:
            return False
    return True


def candidates(results: Run) -> tuple[list[TrialRow], str]:
    """Trials to export, most accurate first, and how they were judged.

    The trials whose *measured* cost meets the budget (ties: the cheaper measured). A run
    with no measured trial (searched with ``--costs predicted``) falls back to the trials
    that meet the budget on their recorded values, and says so.
    """
    if not any(row.measured for row in results.rows):
        return [results.best_trial()], "predicted"
    cost = results.first_cost

    def order(row: TrialRow) -> tuple[float, float]:
        price = row.measured.get(cost, row.values.get(cost, 0.0)) if cost else 0.0
        return (-(row.accuracy or 0.0), price)

    within = [row for row in results.rows if measured_within_budget(row, results)]
    return sorted(within, key=order), "measured"


def choose_trial(results: Run, trial: int | None) -> tuple[TrialRow, str]:
    if trial is not None:
        row = results.trial(trial)
        return row, f"trial {row.number} as requested"
    rows, how = candidates(results)
    if not rows:
        raise RunError(
            f"no trial of run {results.run_dir} meets the budget {dict(results.budget)} by "
            f"measurement on the device; pick one yourself with --trial N (see `hwnas pareto "
            f"{results.run_dir} --all`), or run more trials"
        )
    row = rows[0]
    if how == "predicted":
        _logger.warning(
            "no trial of %s was measured on the device during the search (--costs predicted): "
            "choosing by predicted cost",
            results.run_dir,
        )
    why = (
        f"trial {row.number}: the most accurate trial whose {how} cost meets the budget "
        f"({_score_text(results, row.accuracy)} after the search's short recovery)"
    )
    return row, why


def _score_text(results: Run, score: float | None) -> str:
    """``"97.50%"`` for top-1, ``"neg_mse -0.0123"`` for a task metric's score."""
    metric = results.user_attrs.get("metric")
    name = metric.get("name", "top1") if isinstance(metric, Mapping) else "top1"
    if score is None:
        return f"{name} -"
    return f"{score:.2f}%" if name == "top1" else f"{name} {score:.4g}"


def trusted_task_spec(stored: Any, *, task: str | None, trust_task: bool, source: str) -> str:
    """The task to load for a model or run from elsewhere, without running untrusted code.

    A task named ``module:function`` or ``file.py:function`` inside a folder is code: loading
    it imports and runs that module. Bundled and registered task names are safe. Anything
    else runs only when the user names the task (``task``) or trusts the folder.

    Args:
        stored: The task spec written in the folder.
        task: The task the user names (used instead of ``stored``).
        trust_task: Load ``stored`` even when it is code.
        source: What ``stored`` comes from, for the message.

    Raises:
        TaskError: ``stored`` is code and neither ``task`` nor ``trust_task`` is given.
    """
    from nas.tasks._tasks import TASKS

    if task is not None:
        return task
    spec = str(stored or "")
    if not spec or trust_task or spec.strip() in TASKS:  # "": the caller reports no task
        return spec
    raise TaskError(
        f"{source} names the task {spec!r}: code that would be imported and run to rebuild "
        "the model. Name the task yourself if you know it (CLI: --task SPEC; task=SPEC), or, "
        "only if you trust where the folder came from, pass --trust-task (trust_task=True)."
    )


__all__ = ["candidates", "choose_trial", "measured_within_budget", "trusted_task_spec"]
