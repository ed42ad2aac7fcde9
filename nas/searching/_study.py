"""The run's Optuna study: created or loaded with its attributes checked, and its trials.

:func:`open_study` names the study's values for optuna-dashboard, keeps the budget as given
and as resolved, and refuses a storage that holds a different search;
:func:`fail_interrupted_trials` marks what a dead search left running as failed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError
from nas._version import __version__
from nas.searching._budget import OBJECTIVES, directions
from nas.searching._config import SearchConfig
from nas.searching._run import (
    STUDY_NAME,
    is_local_sqlite,
    make_storage,
    storage_error,
    storage_url,
)
from nas.searching._samplers import make_sampler

if TYPE_CHECKING:
    import optuna


def metric_names(objectives: Sequence[str], costs: str) -> list[str]:
    """Names of a study's values with units, as optuna-dashboard shows them.

    ``"accuracy [%]"``, ``"latency_ms (measured) [ms]"``, ``"memory_mb (computed) [MB]"``.
    """
    names = []
    for name in objectives:
        objective = OBJECTIVES[name]
        how = {"evaluated": "", "computed": "computed", "measured": "measured"}[objective.source]
        if how == "measured" and costs == "predicted":
            how = "predicted"
        elif how == "measured" and name == "energy_mj":
            how = "measured where metered"
        label = f"{name} ({how})" if how else name
        names.append(f"{label} [{objective.unit}]")
    return names


def open_study(config: SearchConfig, base: dict[str, Any]) -> optuna.Study:
    """Create or load the run's study, checking its attributes against ``config``.

    The study attribute ``budget`` holds the resolved (absolute) limits the trials were
    judged by, ``budget_spec`` the budget as given (``latency_ms=0.5x``).
    """
    import optuna

    url = storage_url(str(config.run_dir), config.storage)
    storage = make_storage(url, heartbeat=not is_local_sqlite(str(config.run_dir), url))
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            directions=directions(config.objectives),
            sampler=make_sampler(config.sampler, config.seed),
            load_if_exists=True,
        )
    except Exception as exc:  # a damaged database: SQLite's reason, in one line
        raise storage_error(url, exc) from exc
    attrs = study.user_attrs
    expected = {
        "task": config.task,
        "device": config.device,
        "objectives": list(config.objectives),
        "budget_spec": dict(config.budget),
    }
    if "task" in attrs:
        stored = {**attrs, "budget_spec": attrs.get("budget_spec", attrs.get("budget"))}
        differences = [
            f"{key}: {stored.get(key)!r} in the storage vs {value!r} now"
            for key, value in expected.items()
            if stored.get(key) != value
        ]
        if differences:
            raise RunError(
                f"the storage {url} holds a different search (" + "; ".join(differences) + "). "
                "Use another --run folder or storage."
            )
    else:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        study.set_user_attr("hwnas_version", __version__)
        with warnings.catch_warnings():  # experimental in Optuna, stable since 3.2
            warnings.simplefilter("ignore")
            study.set_metric_names(metric_names(config.objectives, config.costs))
    study.set_user_attr("budget", dict(config.resolved_budget or config.budget))
    study.set_user_attr("costs", config.costs)
    study.set_user_attr("base", base)
    return study


def fail_interrupted_trials(study: optuna.Study, run_dir: Path, config: SearchConfig) -> list[int]:
    """Mark trials left RUNNING by a dead search as failed; return their numbers.

    With the run folder's own SQLite storage the caller holds the folder's lock, so every
    RUNNING trial is an orphan. Shared storages fail only trials whose heartbeat stopped.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    url = storage_url(str(run_dir), config.storage)
    if not is_local_sqlite(run_dir, url):
        before = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
        fail_stale_trials(study)
        after = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
        return sorted(before - after)
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_user_attr(
            trial._trial_id, "error", "interrupted: the search process stopped during this trial"
        )
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        failed.append(trial.number)
    return failed


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: completed, or failed by their own error."""
    from optuna.trial import TrialState

    def counts(trial: optuna.trial.FrozenTrial) -> bool:
        if trial.state == TrialState.COMPLETE:
            return True
        raised = bool(trial.user_attrs.get("error")) and not trial.user_attrs.get("interrupted")
        return trial.state == TrialState.FAIL and raised

    return sum(counts(t) for t in study.get_trials(deepcopy=False))


__all__ = ["count_finished", "fail_interrupted_trials", "metric_names", "open_study"]
