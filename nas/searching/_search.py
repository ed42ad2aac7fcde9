"""The search: a multi-objective Optuna study over a model's compression space.

:func:`search` checks its inputs before any training, opens (or resumes) the run folder,
then one driver asks Optuna for candidates and evaluates them, in this process or as Ray
tasks (see ``_parallel``), telling each result as it comes back. At the end the feasible
Pareto front is measured on the device (``_verify``) and, if asked, the fidelity of the
short recovery is checked (``_fidelity``).

Stopping and resuming: the run folder's storage keeps every finished trial. Re-running the
same search resumes it; finished trials (completed, failed with an error, or stopped early
by successive halving: ``_halving``) count toward ``n_trials``. Ctrl-C fails the trials in
flight (``user_attrs["interrupted"]``), then re-raises. After a hard kill, the next search
on the folder marks the trials the dead process left RUNNING as failed and interrupted (the
folder's lock proves no one else runs them; shared storages rely on Optuna's heartbeats
instead) and runs replacements. A ``timeout_s`` ends the trial loop early the same clean
way: the running trials finish, the front is verified, and re-running resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError
from nas.searching._base import (
    base_metrics,
    check_budget,
    check_budget_device,
    previous_resolution,
)
from nas.searching._budget import COST_OBJECTIVES, Budget, parse_budget
from nas.searching._config import SETTINGS_FILE, SearchConfig
from nas.searching._driver import drive, record
from nas.searching._halving import count_pruned
from nas.searching._run import (
    STUDY_DB,
    Run,
    check_run_dir_writable,
    check_sqlite_file,
    run_lock,
)
from nas.searching._study import count_finished, fail_interrupted_trials, metric_names, open_study
from nas.searching._trial import TrialContext, fail_trials_from_env

if TYPE_CHECKING:
    from nas.tasks._tasks import Task

_logger = logging.getLogger(__name__)


def search(
    task: Task | str,
    *,
    device: Any,
    objectives: str | Sequence[str] = ("accuracy", "latency_ms"),
    budget: str | dict[str, float] | Budget | None = None,
    n_trials: int = 50,
    workers: int = 1,
    sampler: str = "tpe",
    run_dir: str | Path,
    seed: int | None = None,
    recovery_steps: int = 50,
    warm_start: bool = True,
    ray_address: str | None = None,
    show_progress_bar: bool = False,
    storage: str | None = None,
    **settings: Any,
) -> Run:
    """Find the Pareto-optimal compressed versions of a task's model for a device.

    Args:
        task: A :class:`nas.Task`, or a task name or spec for :func:`nas.load_task`.
        device: A device name (``"local-cpu"``) or a ``latency_models.DeviceSpec``.
        objectives: Two or more of ``accuracy`` (top-1 %, maximised), ``latency_ms``,
            ``energy_mj`` and ``memory_mb`` (minimised).
        budget: Limits, e.g. ``"latency_ms=1.5,memory_mb=2,accuracy_drop=1"``.
        n_trials: Trials the run holds when done (earlier finished trials of the same run
            folder count).
        workers: Trials at once; more than one runs them as Ray tasks.
        sampler: A name from :data:`nas.SAMPLERS`.
        run_dir: The run folder (created; resumed if it holds this search already).
        seed: Seed of the sampler and the recovery fine-tunes.
        recovery_steps: Distillation steps that recover each candidate.
        warm_start: Enqueue a few configs informed by a per-layer sensitivity scan.
        ray_address: A Ray cluster to run on instead of a local Ray.
        show_progress_bar: Show a tqdm progress bar.
        storage: An Optuna storage URL; default SQLite at ``run_dir/study.db``.
        **settings: Further :class:`nas.SearchConfig` fields (``reject_factor``,
            ``fidelity_trials``, ``verify``, ``timeout_s``, ...).

    Returns:
        The run, for :meth:`nas.Run.pareto_trials` and friends.

    Raises:
        BudgetError: an unknown objective or budget key, fewer than two objectives, a budget
            the base model already meets, or one no config in the space can meet.
        RunError: ``run_dir`` holds another search (a different task, device, objectives or
            budget), or another process is writing it.
        KeyboardInterrupt: after recording what finished, when interrupted.
    """
    from nas.tasks._tasks import Task

    task_obj = task if isinstance(task, Task) else None
    device_name = device if isinstance(device, str) else getattr(device, "name", None)
    config = SearchConfig(
        task=task_obj.name if task_obj is not None else task,  # type: ignore[arg-type]
        device=device_name,  # type: ignore[arg-type]
        objectives=tuple(objectives.split(","))
        if isinstance(objectives, str)
        else tuple(objectives),
        budget=parse_budget(budget).to_dict(),
        n_trials=n_trials,
        workers=workers,
        sampler=sampler,
        seed=seed,
        run_dir=str(run_dir),
        storage=storage,
        recovery_steps=recovery_steps,
        warm_start=warm_start,
        ray_address=ray_address,
        show_progress_bar=show_progress_bar,
        **settings,
    )
    return run_search(config, task=task_obj, device=None if isinstance(device, str) else device)


def run_search(config: SearchConfig, *, task: Task | None = None, device: Any = None) -> Run:
    """Run (or resume) the search that ``config`` describes; see :func:`search`.

    Args:
        config: Resolved settings; ``config.run_dir`` is required.
        task: The task object, if not to be loaded from ``config.task``.
        device: The ``DeviceSpec``, if not to be looked up from ``config.device``.
    """
    from nas.logging import get_logger
    from nas.tasks._evaluate import metric_info

    get_logger("nas")  # the nas logger's handler, so that trial lines show (optuna-style)
    if not config.run_dir:
        raise RunError("a search needs a run folder: pass run_dir (--run runs/NAME).")
    run_dir = Path(config.run_dir)
    check_run_folder(config)
    check_budget_device(config, device)
    check_run_dir_writable(run_dir)  # a read-only folder or full disk, before any work
    if (run_dir / SETTINGS_FILE).is_file() and config.storage is None:
        check_sqlite_file(run_dir / STUDY_DB)  # a resumed run's database, emptied or damaged
    ctx, base, base_graph = prepare(config, task=task, device=device)
    config = config.replace(
        resolved_budget=ctx.budget.to_dict(), base_measured=base.get("measured_runs")
    )
    with run_lock(run_dir):
        check_run_folder(config)  # again, now that no one else can write it
        study = open_study(config, base)
        study.set_user_attr("metric", metric_info(ctx.task))  # what "accuracy" holds
        config.save(run_dir)
        stale = fail_interrupted_trials(study, run_dir, config)
        if stale:
            _logger.warning(
                "marked %d trial(s) left running by a stopped search as failed: %s",
                len(stale),
                stale,
            )
        done = count_finished(study) + count_pruned(study)
        if done:
            _logger.info(
                "resuming %s: %d of %d trials already finished", run_dir, done, config.n_trials
            )
        if config.warm_start and not study.trials:
            from nas.searching._warmstart import enqueue_warm_start

            enqueue_warm_start(study, ctx)
        try:
            drive(study, ctx, config, n_new=max(0, config.n_trials - done), base_graph=base_graph)
        except KeyboardInterrupt:
            fail_interrupted_trials(study, run_dir, config)  # one caught inside study.ask
            raise
        run = Run(run_dir, config)
        _logger.info("%s", run.summary())
        if config.verify:
            from nas.searching._verify import verify_front

            verify_front(run, ctx)
        if config.fidelity_trials:
            from nas.searching._fidelity import fidelity_check

            fidelity_check(run, ctx, n_trials=config.fidelity_trials, steps=config.fidelity_steps)
    return run


# -- before any training ----------------------------------------------------------------


def check_run_folder(config: SearchConfig) -> None:
    """Refuse a run folder that holds a different search (naming each difference)."""
    run_dir = Path(str(config.run_dir))
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run folder {str(run_dir)!r} exists and is not a folder.")
    if not (run_dir / SETTINGS_FILE).is_file():
        return
    previous = SearchConfig.load(run_dir)
    differences = config.identity_differences(previous)
    if previous.storage != config.storage:
        differences.append(f"storage: {previous.storage!r} in the run vs {config.storage!r} now")
    if differences:
        raise RunError(
            f"run folder {str(run_dir)!r} holds a different search ("
            + "; ".join(differences)
            + "). Use another --run folder, or the run's settings to resume it."
        )


def load_predictors(
    device: Any,
    *,
    profile_minutes: float = 5.0,
    task: str | None = None,
    profile_if_missing: bool = False,
) -> tuple[dict[str, Any], str]:
    """The device's fitted predictors by target, and the energy source label.

    Args:
        device: The ``DeviceSpec``.
        profile_minutes: Budget of the profile taken when ``profile_if_missing``.
        task: Task whose compressed variants the profile includes.
        profile_if_missing: Profile a device without a latency predictor first (measuring
            graphs on it and fitting its predictors, with a log line saying so) instead of
            raising.

    Raises:
        PredictorNotFoundError: no latency predictor and not ``profile_if_missing``; the
            message names the command that makes one.
    """
    from latency_models import PredictorNotFoundError, device_predictor

    try:
        latency = _stored_predictor(device.name, "latency_ms")
    except PredictorNotFoundError:
        if not profile_if_missing:
            raise
        _logger.warning(
            "device %s has no latency predictor yet; profiling it first for about %.1f "
            "minute(s), as `hwnas device profile %s` would",
            device.name,
            profile_minutes,
            device.name,
        )
        from nas.searching._profile import profile_device

        profile_device(
            device.name,
            task=task,
            budget_minutes=profile_minutes,
            # about a hundred graphs fit in the budget, at most a second each
            max_seconds_per_graph=max(0.05, min(1.0, profile_minutes * 60 / 100)),
            progress=lambda line: _logger.info("profile: %s", line),
        )
        latency = device_predictor(device.name, "latency_ms")
    warn_if_poor(latency, device.name)
    predictors = {"latency_ms": latency}
    try:
        predictors["energy_mj"] = _stored_predictor(device.name, "energy_mj")
        source = "measured-predictor"
    except PredictorNotFoundError:  # no energy meter on the device: estimate, and say so
        source = "estimated"
    return predictors, source


def _stored_predictor(device: str, target: str) -> Any:
    """The device's saved predictor; one fit on an older feature version is refit first.

    The refit takes seconds from the measurements the device already stored (what
    ``hwnas device fit`` does); where it cannot run, the original error names the fix.
    """
    from latency_models import StaleFeaturesError, device_predictor

    try:
        return device_predictor(device, target)
    except StaleFeaturesError as exc:
        from latency_models.profiling._fit import fit_device

        _logger.warning(
            "the %s predictor of %s was fit on an older feature version; refitting it from "
            "the device's stored measurements, as `hwnas device fit %s` would",
            target, device, device,
        )  # fmt: skip
        try:
            fit_device(device, target=target)
        except Exception as fit_exc:  # too few stored graphs, a bad record
            raise exc from fit_exc
        return device_predictor(device, target)


def warn_if_poor(predictor: Any, device: str) -> str | None:
    """Log a WARNING, with the figure and the fix, when ``predictor`` is poor for ``device``."""
    from latency_models import MeasurementStore
    from nas.searching._costs import predictor_warning, session_noise_pct

    metrics = dict(getattr(predictor, "metrics_", {}) or {})
    try:
        noise = session_noise_pct(MeasurementStore(device).records(with_onnx=False))
    except Exception:  # an unreadable store: judge by the error alone
        noise = None
    message = predictor_warning(metrics, device, noise_pct=noise)
    if message and (device, message) not in _WARNED:
        _WARNED.add((device, message))
        _logger.warning("%s", message)
    return message


_WARNED: set[tuple[str, str]] = set()  # a poor predictor is named once per process


def build_context(
    config: SearchConfig,
    *,
    task: Task | None = None,
    device: Any = None,
    with_predictors: bool = True,
    profile_if_missing: bool = False,
) -> TrialContext:
    """Load the task, device, predictors and compression space into a trial context.

    A device without a latency predictor raises ``PredictorNotFoundError`` (naming
    ``hwnas device profile``) unless ``profile_if_missing``, which profiles it for
    ``config.profile_minutes`` first.
    """
    from latency_models import get_device
    from nas.tasks._evaluate import task_score
    from nas.tasks._loaders import first_inputs
    from nas.tasks._tasks import load_task
    from search_spaces import analyze

    task = task if task is not None else load_task(config.task)
    base_accuracy = task_score(task.model, task)  # a broken metric stops before profiling
    device = device if device is not None else get_device(config.device)
    predictors, energy_source = (
        load_predictors(
            device,
            profile_minutes=config.profile_minutes,
            task=config.task,
            profile_if_missing=profile_if_missing,
        )
        if with_predictors
        else ({}, "")
    )
    space = analyze(
        task.model,
        task.example_input,
        align=getattr(device, "align", 8),
        bits=tuple(getattr(device, "precisions", (32, 8))),
    )
    _logger.info("search space of %s: %r", task.name, space)
    return TrialContext(
        task=task,
        space=space,
        device=device,
        predictors=predictors,
        energy_source=energy_source,
        objectives=config.objectives,
        budget=parse_budget(config.budget),
        base_accuracy=base_accuracy,
        recovery_steps=config.recovery_steps,
        recovery_batch_size=config.recovery_batch_size,
        recovery_lr=config.recovery_lr,
        reject_factor=config.reject_factor,
        calibration=first_inputs(
            task.train if task.calibration is None else task.calibration,
            config.calibration_samples,
        ),
        seed=config.seed or 0,
        fail_trials=fail_trials_from_env(),
        measure_costs=config.costs != "predicted",
        missing_accuracy=0.0 if task.metric == "top1" else float("-inf"),
    )


def prepare(
    config: SearchConfig, *, task: Task | None = None, device: Any = None
) -> tuple[TrialContext, dict[str, Any], bytes]:
    """Build the trial context, the base model's metrics and graph; check the budget.

    Raises:
        BudgetError: the base model already meets the cost budget, or the cheapest config
            of the space does not.
    """
    # a search profiles a device that has no predictor yet (config.profile_minutes)
    ctx = build_context(config, task=task, device=device, profile_if_missing=True)
    base, base_graph = base_metrics(ctx, require_measured=config.costs == "measured")
    previous = previous_resolution(config)
    if previous is not None:
        ctx.budget = Budget(previous)
    else:
        measured = {k: v for k, v in base["measured"].items() if v is not None}
        ctx.budget = ctx.budget.resolve({**_predicted_only(base), **measured})
        if ctx.budget.to_dict() != dict(config.budget):
            _logger.info(
                "budget %s resolved against the base model measured on %s: %s",
                parse_budget(config.budget),
                ctx.device.name,
                ctx.budget,
            )
    for hint in parse_budget(config.budget).fraction_hints():
        _logger.info("budget: %s", hint)
    check_budget(ctx, base, resumed=previous is not None)
    return ctx, base, base_graph


def _predicted_only(base: dict[str, Any]) -> dict[str, float]:
    return {k: float(base[k]) for k in COST_OBJECTIVES if isinstance(base.get(k), (int, float))}


def fidelity(
    run: Run | str | Path, *, task: Task | None = None, n_trials: int = 8, steps: int = 0
) -> dict[str, Any]:
    """Kendall's tau between short- and long-recovery accuracy on a sample of a run's trials.

    Args:
        run: A run or its folder.
        task: The task object, if the run's task name cannot be loaded by name.
        n_trials: Trials to re-train with the longer recovery.
        steps: Steps of the longer recovery (0: ten times the run's ``recovery_steps``).

    Returns:
        The report of :func:`nas.searching._fidelity.fidelity_check` (also stored in the study).
    """
    from nas.searching._fidelity import fidelity_check
    from nas.searching._run import open_run

    run = run if isinstance(run, Run) else open_run(run)
    ctx = build_context(run.settings, task=task, with_predictors=False)
    return fidelity_check(run, ctx, n_trials=n_trials, steps=steps)


__all__ = [
    "base_metrics",
    "build_context",
    "check_budget",
    "check_run_folder",
    "count_finished",
    "drive",
    "fail_interrupted_trials",
    "fidelity",
    "load_predictors",
    "metric_names",
    "open_study",
    "prepare",
    "record",
    "run_search",
    "search",
]
