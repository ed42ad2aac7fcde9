"""A run folder: one search's settings, Optuna storage and results, read back as a :class:`Run`.

Layout (the contract between the search and the report/export tools)::

    run_dir/settings.json   the resolved SearchConfig (task, device, objectives, budget, ...)
    run_dir/study.db        Optuna SQLite storage (unless settings.storage names another URL),
                            one study named "hwnas"
    run_dir/.search.lock    held (flock) by the search process writing the folder

Study user attributes: ``task``, ``device``, ``objectives`` (list), ``budget_spec`` (the
budget as given, e.g. ``{"latency_ms": "0.5x"}``), ``budget`` (the resolved, absolute limits
the trials were judged by), ``costs`` (``auto``, ``measured`` or ``predicted``), ``base``
(the base model's ``accuracy``, predicted ``latency_ms``, ``energy_mj``, ``memory_mb``,
``energy_source``, ``measured`` (medians of interleaved rounds) and the cheapest config's
``smallest_predicted`` / ``smallest_measured``), ``hwnas_version``, ``predictor_tracking``
(predicted against measured latency per measured trial, the calibration's refits and the
median error by quarter of the run), ``last_session`` (timings, ``measure_s``), and after
the search ``verification`` and, if asked for, ``fidelity``. The study names its values
for optuna-dashboard (``study.metric_names``, e.g. ``"latency_ms (measured) [ms]"``).

Trial user attributes: ``config`` (``CompressionConfig.to_dict()``), ``summary`` (one line),
``predicted`` (``latency_ms`` as the search used it, calibrated; ``energy_mj``,
``memory_mb``), ``predicted_raw_latency_ms`` (the device predictor alone),
``energy_source`` (``"measured-predictor"`` or ``"estimated"``), ``accuracy`` (top-1 in %,
``None`` when rejected before training), ``rejected_before_training``, ``timings_s``
(seconds per phase: apply, export, predict, train, eval), ``measured`` (the latency and
energy measured on the device: every trained trial of a search with measured costs, and
front trials verified after a search on predictions), ``cost_source`` (``"measured"``,
``"predicted"`` or ``"predicted (device unreachable)"``: where the trial's values came
from), ``cost_sources`` (the same per objective) and ``error`` (on failed trials). The
budget is stored as Optuna constraints (``trial.constraints``; a value > 0 means violated).

:class:`Run` is the one model of a run's results: the Optuna study and its trials, and the
same trials as :class:`~nas.searching._trial_row.TrialRow` values with their Pareto flags,
budget and base model. It reads a folder without changing it, also while a search is writing
to it; :func:`read_run` opens the storage read-only. The storage itself (URLs, SQLite checks,
the lock) lives in ``nas.searching._storage``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError
from nas.searching._budget import COST_OBJECTIVES
from nas.searching._config import SETTINGS_FILE, SearchConfig
from nas.searching._dominance import direction_of, pareto_mask
from nas.searching._run_rows import (
    RunData,
    RunRows,
    accuracy_floor,
    budget_of,
    read_results,
    sort_rows,
)
from nas.searching._storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    LOCK_FILE,
    STUDY_DB,
    STUDY_NAME,
    check_run_dir_writable,
    check_sqlite_file,
    dispose_storage,
    is_local_sqlite,
    make_storage,
    open_read_only_storage,
    run_lock,
    set_finished_trial_user_attr,
    sqlite_path,
    storage_error,
    storage_url,
    with_late_user_attrs,
)
from nas.searching._trial_row import TrialRow

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


class Run(RunRows):
    """One search's results: its settings, Optuna study, trials and Pareto front.

    Open a folder with :func:`open_run` (or read-only with :func:`read_run`); ``nas.search``
    returns one too. Reading never changes the folder, and is safe while a search writes it.
    The trials (:meth:`trials`, :meth:`pareto_trials`) are read anew on every call; the rows
    (:attr:`rows`, :meth:`front`, :meth:`trial`) are read once, until :meth:`refresh`.

    Attributes:
        path: The run folder.
    """

    def __init__(
        self,
        path: str | Path,
        settings: SearchConfig | Mapping[str, Any] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self._config = settings if isinstance(settings, SearchConfig) else None
        stored = settings.to_dict() if isinstance(settings, SearchConfig) else settings
        self._stored: dict[str, Any] = dict(stored or {})
        self._read_only = read_only
        self._in_memory = False
        self._study: optuna.Study | None = None
        self._results: RunData | None = None

    @classmethod
    def from_rows(
        cls,
        run_dir: str | Path,
        *,
        objectives: Sequence[str],
        rows: Sequence[TrialRow],
        settings: Mapping[str, Any] | None = None,
        base: Mapping[str, Any] | None = None,
        budget: Mapping[str, float] | None = None,
        n_running: int = 0,
        failed: Mapping[int, str] | None = None,
        user_attrs: Mapping[str, Any] | None = None,
        distributions: Mapping[str, Any] | None = None,
    ) -> Run:
        """A run held in memory (no storage): rows with their ``pareto`` flags already set."""
        run = cls(run_dir, settings)
        run._in_memory = True
        run._results = RunData(
            objectives=tuple(objectives),
            directions=tuple(direction_of(n) for n in objectives),
            rows=tuple(rows),
            base=dict(base or {}),
            budget=dict(budget or {}),
            n_running=n_running,
            failed=dict(failed or {}),
            user_attrs=dict(user_attrs or {}),
            distributions=dict(distributions or {}),
        )
        return run

    def replace(self, **changes: Any) -> Run:
        """A copy held in memory, with ``settings`` or fields of its results changed.

        Args:
            changes: ``settings`` (a mapping), or ``rows``, ``budget``, ``base``,
                ``objectives``, ``n_running``, ``failed``, ``user_attrs``, ``distributions``.
        """
        settings = changes.pop("settings", self._stored)
        data = dataclasses.replace(self._read(), **changes)
        if "objectives" in changes:
            directions = tuple(direction_of(n) for n in data.objectives)
            data = dataclasses.replace(data, directions=directions)
        run = type(self)(self.path, settings)
        run._in_memory = True
        run._results = data
        return run

    def __repr__(self) -> str:
        task, device = self._stored.get("task"), self._stored.get("device")
        return f"Run({str(self.path)!r}, task={task!r}, device={device!r})"

    # -- settings ---------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The run folder (the same as :attr:`path`)."""
        return self.path

    @property
    def settings(self) -> SearchConfig:
        """The resolved settings of the search.

        Raises:
            RunError: the folder's ``settings.json`` does not describe a search.
        """
        if self._config is None:
            try:
                self._config = SearchConfig.from_dict(self._stored)
            except (TypeError, ValueError) as exc:
                raise RunError(f"cannot read the settings of run {self.path}: {exc}") from exc
        return self._config

    @property
    def stored_settings(self) -> dict[str, Any]:
        """The settings as stored in ``settings.json`` ({} where the run has none)."""
        return dict(self._stored)

    def setting(self, key: str, default: Any = None) -> Any:
        """A stored setting, else the study attribute of that name, else ``default``."""
        value = self._stored.get(key)
        if value is None:
            value = self.user_attrs.get(key)
        return default if value is None else value

    @property
    def task(self) -> str:
        """The task name or spec."""
        return str(self.setting("task", ""))

    @property
    def device(self) -> str:
        """The device name."""
        return str(self.setting("device", ""))

    # -- the study --------------------------------------------------------------------

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL of the run."""
        return storage_url(self.path, self._stored.get("storage"))

    @property
    def study(self) -> optuna.Study:
        """The run's Optuna study (loaded on first use; read-only for :func:`read_run`).

        Raises:
            RunError: the storage holds no ``hwnas`` study yet, or cannot be read.
        """
        if self._study is None:
            self._study = self._load_study()
        return self._study

    def _load_study(self) -> optuna.Study:
        import optuna

        name = str(self._stored.get("study_name", STUDY_NAME))
        if self._read_only:
            storage = open_read_only_storage(self.path, self._stored.get("storage"))
            where: str | Path = self.path / STUDY_DB
        else:
            path = sqlite_path(self.storage_url)
            if path is not None:
                check_sqlite_file(path)
            storage = make_storage(self.storage_url)
            where = path or self.storage_url
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            hint = (
                "is it a hwnas run folder?"
                if self._read_only
                else "start one with `hwnas search`."
            )
            raise RunError(
                f"run folder {str(self.path)!r} holds no search yet (no study {name!r} in "
                f"{self.storage_url}); {hint}"
            ) from None
        except Exception as exc:  # Optuna's StorageInternalError, sqlalchemy's errors
            raise storage_error(where, exc) from exc

    def refresh(self) -> None:
        """Forget what was read, so that the next read sees everything in the storage.

        Optuna caches finished trials; attributes added to them later (``measured``) show
        after a refresh.
        """
        self._study = None
        self._results = None

    # -- results: the trials as rows ------------------------------------------------

    def _read(self) -> RunData:
        if self._results is None:
            study = self.study
            try:
                self._results = read_results(self._stored, study)
            except Exception as exc:  # a damaged storage fails on the first query
                if isinstance(exc, RunError):
                    raise
                raise storage_error(self.path / STUDY_DB, exc) from exc
            if self._read_only:
                dispose_storage(getattr(study, "_storage", None))
        return self._results

    @property
    def _live(self) -> bool:
        """Whether study attributes are read anew (a run open for writing, not a snapshot)."""
        return not (self._read_only or self._in_memory)

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The study's user attributes (see the module docstring)."""
        return dict(self.study.user_attrs if self._live else self._read().user_attrs)

    @property
    def base(self) -> dict[str, Any]:
        """The base model's metrics (``accuracy``, ``latency_ms``, ``energy_mj``, ...)."""
        return dict(self.user_attrs.get("base") or {}) if self._live else dict(self._read().base)

    @property
    def budget(self) -> dict[str, float]:
        """Budget limits by key (empty for none), relative ones resolved as the search did."""
        if self._live:
            return budget_of(self.user_attrs, self._stored)
        return dict(self._read().budget)

    # -- trials: Optuna's view, read anew on every call -------------------------------

    def trials(self, states: Sequence[optuna.trial.TrialState] | None = None) -> list[FrozenTrial]:
        """All trials (or those in ``states``), in trial-number order.

        ``user_attrs`` include values that were added after a trial finished (``measured``).
        """
        study = self.study
        return with_late_user_attrs(study, study.get_trials(deepcopy=False, states=states))

    def completed_trials(self) -> list[FrozenTrial]:
        """Trials that finished with objective values.

        These include trials rejected before training, which carry worst-case accuracy.
        """
        from optuna.trial import TrialState

        return self.trials(states=(TrialState.COMPLETE,))

    def failed_trials(self) -> list[FrozenTrial]:
        """Trials that raised or were interrupted (``user_attrs["error"]`` says why)."""
        from optuna.trial import TrialState

        return self.trials(states=(TrialState.FAIL,))

    def frozen_trial(self, number: int) -> FrozenTrial:
        """Optuna's trial numbered ``number``, in any state.

        Raises:
            RunError: no such trial (the valid range is named).
        """
        trials = self.trials()
        for trial in trials:
            if trial.number == number:
                return trial
        span = f"0..{len(trials) - 1}" if trials else "none"
        raise RunError(f"run {str(self.path)!r} has no trial {number}; trials: {span}.")

    @staticmethod
    def is_feasible(trial: FrozenTrial) -> bool:
        """Whether ``trial`` meets every budget limit (no constraint value > 0)."""
        constraints = trial.constraints  # a dict (key -> value) since Optuna 5
        values = constraints.values() if isinstance(constraints, Mapping) else constraints
        return all(value <= 0 for value in values)

    def pareto_trials(self, *, feasible_only: bool = True) -> list[FrozenTrial]:
        """The Pareto-optimal completed trials, sorted by the first cost objective.

        Args:
            feasible_only: Only trials that meet the budget: Optuna's own front
                (``Study.best_trials``). Otherwise the front of all completed trials.
        """
        study = self.study
        if feasible_only:
            found = with_late_user_attrs(study, study.best_trials)
        else:
            found = [t for t in self.completed_trials() if t.values is not None]
            directions = [d.name.lower() for d in study.directions]
            mask = pareto_mask([t.values for t in found], directions)
            found = [t for t, on_front in zip(found, mask, strict=True) if on_front]
        found = [t for t in found if all(math.isfinite(v) for v in t.values)]
        key_index = next(
            (i for i, name in enumerate(self.objectives) if name in COST_OBJECTIVES), 0
        )
        return sorted(found, key=lambda t: (t.values[key_index], t.number))

    def counts(self) -> dict[str, int]:
        """Trials by state name (``COMPLETE``, ``FAIL``, ``RUNNING``, ...).

        The key ``rejected_before_training`` counts trials skipped for their predicted cost.
        """
        out: dict[str, int] = {}
        rejected = 0
        for trial in self.trials():
            out[trial.state.name] = out.get(trial.state.name, 0) + 1
            rejected += bool(trial.user_attrs.get("rejected_before_training"))
        out["rejected_before_training"] = rejected
        return out

    def summary(self) -> str:
        """A few lines: task, device, objectives, budget, trial counts and front size."""
        counts = self.counts()
        budget = ",".join(f"{k}={v:g}" for k, v in self.budget.items()) or "none"
        return (
            f"run {self.path}: task {self.task}, device {self.device}, objectives "
            f"{','.join(self.objectives)}, budget {budget}\n"
            f"trials: {counts.get('COMPLETE', 0)} complete "
            f"({counts['rejected_before_training']} rejected before training), "
            f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running"
            + (f", {counts['PRUNED']} stopped early" if counts.get("PRUNED") else "")
            + f"; Pareto front: {len(self.pareto_trials())} feasible trials"
        )


RunResults = Run
"""The name :func:`read_run`'s results had before they and :class:`Run` became one model."""


def open_run(run_dir: str | Path) -> Run:
    """Open an existing run folder for reading (and for the search to add to).

    Raises:
        RunError: the folder or its ``settings.json`` does not exist.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run folder {str(path)!r} does not exist.")
    if not (path / SETTINGS_FILE).is_file():
        raise RunError(
            f"{str(path)!r} is not a run folder (no {SETTINGS_FILE}). Pass the folder given "
            f"to `hwnas search --run`."
        )
    return Run(path, SearchConfig.load(path))


def run_path(run: Any) -> Path:
    """The folder of ``run``: a path, or an object with a ``run_dir``/``path`` attribute."""
    for attr in ("run_dir", "path", "directory"):
        value = getattr(run, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    if isinstance(run, (str, os.PathLike)):
        return Path(run)
    raise TypeError(f"run must be a run folder path or a nas Run, got {type(run).__name__}")


def read_run(run: Any, *, require_trials: bool = True) -> Run:
    """Read a run folder without changing it (its storage opened read-only).

    Args:
        run: The run folder (``runs/NAME``) or a ``nas.Run``.
        require_trials: Raise when the run holds no completed trial.

    Returns:
        The run, its trials read once with their Pareto flags.

    Raises:
        RunError: The folder does not exist, is not a hwnas run, or holds no finished trial.
    """
    run_dir = run_path(run)
    if not run_dir.is_dir():
        raise RunError(
            f"run folder {str(run_dir)!r} does not exist; pass the folder given to "
            "`hwnas search --run` (e.g. runs/NAME)"
        )
    result = Run(run_dir, _read_settings(run_dir), read_only=True)
    if require_trials and not result.rows:
        raise RunError(
            f"run {run_dir} holds no finished trial yet ({result.n_running} running, "
            f"{result.n_failed} failed); wait for the search or resume it with the same "
            "`hwnas search` command"
        )
    return result


def _read_settings(run_dir: Path) -> dict[str, Any]:
    """``settings.json`` as stored, or {} where the folder has none."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}; the run folder is damaged") from exc
    return data if isinstance(data, dict) else {}


__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "LOCK_FILE",
    "STUDY_DB",
    "STUDY_NAME",
    "Run",
    "RunResults",
    "TrialRow",
    "accuracy_floor",
    "check_run_dir_writable",
    "check_sqlite_file",
    "is_local_sqlite",
    "make_storage",
    "open_run",
    "read_run",
    "run_lock",
    "run_path",
    "set_finished_trial_user_attr",
    "sort_rows",
    "storage_error",
    "storage_url",
]
