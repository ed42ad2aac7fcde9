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

:class:`Run` reads a folder without changing it, also while a search is writing to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError
from nas.searching._budget import COST_OBJECTIVES, OBJECTIVES
from nas.searching._config import SETTINGS_FILE, SearchConfig

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

_logger = logging.getLogger(__name__)

STUDY_NAME = "hwnas"
"""Name of the Optuna study inside every run's storage."""
STUDY_DB = "study.db"
LOCK_FILE = ".search.lock"
HEARTBEAT_INTERVAL_S = 15
"""Seconds between heartbeats of running trials (shared storages only)."""
GRACE_PERIOD_S = 60
"""A running trial without a heartbeat for this long is failed by the next driver."""


def storage_url(run_dir: str | Path, storage: str | None = None) -> str:
    """The Optuna storage URL of a run: ``storage`` or SQLite at ``run_dir/study.db``."""
    if storage:
        return storage
    return f"sqlite:///{(Path(run_dir) / STUDY_DB).resolve()}"


def is_local_sqlite(run_dir: str | Path, url: str) -> bool:
    """Whether ``url`` is the run folder's own SQLite file (one driver per folder)."""
    return url == storage_url(run_dir)


def make_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for ``url``, with heartbeats when ``heartbeat``.

    SQLite gets a 60 s busy timeout so that a reader (``hwnas pareto``) and the writing
    search wait for each other instead of failing.

    Raises:
        RunError: the URL is malformed, or its SQLite file is damaged or not a database.
    """
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
        path = sqlite_path(url)
        if path is not None:
            check_sqlite_file(path, allow_empty=True)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": GRACE_PERIOD_S}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as exc:  # sqlalchemy raises many kinds for a bad URL or file
        raise storage_error(url, exc) from exc


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :]
    if rest.startswith("file:"):
        rest = rest[len("file:") :].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_sqlite_file(path: Path, *, allow_empty: bool = False) -> None:
    """Refuse a file at ``path`` that cannot be an SQLite database (before SQL is sent).

    Args:
        path: The database file; a missing one passes (it will be created, or reported).
        allow_empty: Let a file shorter than the SQLite header pass (a search may be
            creating it this moment); readers pass False.

    Raises:
        RunError: naming the file, what is wrong and what to do.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunError(f"cannot read the run's Optuna database {str(path)!r}: {exc}") from exc
    if not head and allow_empty:
        return
    if not head:
        raise RunError(
            f"the run's Optuna database {str(path)!r} is empty (0 bytes): it was truncated. "
            f"Restore it from a backup, or start a new run in another folder."
        )
    if head != _SQLITE_MAGIC:
        raise RunError(
            f"{str(path)!r} is not an SQLite database (it starts with {head[:8]!r}): the run's "
            f"Optuna database was overwritten. Restore it from a backup, or start a new run "
            f"in another folder."
        )


def storage_error(where: str | Path, exc: BaseException) -> RunError:
    """A one-line :class:`RunError` for a storage that failed to open or read.

    Optuna wraps SQLite's own reason ("database disk image is malformed") in a message about
    "exceeding max length" and the failed SQL; the reason is dug out of the exception chain.
    """
    reason = _root_reason(exc)
    if any(word in reason for word in ("malformed", "not a database", "corrupt")):
        return RunError(
            f"the run's Optuna database {str(where)!r} is damaged ({reason}). Restore it from "
            f"a backup, or start a new run in another folder; `sqlite3 FILE .recover` may "
            f"save the finished trials."
        )
    return RunError(f"cannot open the Optuna storage {str(where)!r}: {reason}")


def _root_reason(exc: BaseException) -> str:
    """The innermost database error's own message (no SQL, no parameters)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in reversed(seen):
        orig = getattr(err, "orig", None)  # sqlalchemy keeps the driver's error here
        if orig is not None:
            return str(orig).splitlines()[0]
        if type(err).__module__ == "sqlite3":
            return str(err).splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_run_dir_writable(run_dir: str | Path) -> None:
    """Fail fast when a run folder cannot be written (before any task is loaded).

    Creates the folder if needed, then writes, syncs and removes a small probe file, so a
    read-only folder or file system, missing permissions or a full disk are reported now
    rather than after the task was trained and the device measured.

    Raises:
        RunError: naming the folder, the reason and the fix.
    """
    path = Path(run_dir)
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        hint = (
            "free some space"
            if exc.errno == errno.ENOSPC
            else "choose a folder you may write to (--run), or change its permissions"
        )
        raise RunError(
            f"cannot write to the run folder {str(path)!r}: {exc.strerror or exc}; {hint}."
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir/.search.lock`` so that one search at a time writes the folder.

    Raises:
        RunError: another live process holds the lock (its pid is named).
    """
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise RunError(
                f"another hwnas search (pid {pid}) is writing the run folder {str(run_dir)!r}. "
                f"Wait for it to finish, stop it, or use another --run folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_finished_trial_user_attr(
    study: optuna.Study, trial: FrozenTrial, key: str, value: Any
) -> None:
    """Set a user attribute on a trial that is already finished.

    Optuna refuses to change finished trials through its public API; verification adds
    ``measured`` values to Pareto trials after the search, so this writes the row directly
    in RDB storages (``trial_user_attributes``, a table unchanged since Optuna 1.x). Other
    storages keep the value under the study attribute ``"trial_user_attrs"``, which
    :class:`Run` merges back into the trials it returns.
    """
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # unwrap optuna's _CachedStorage
    from optuna.storages import RDBStorage

    if isinstance(backend, RDBStorage):
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(backend.scoped_session, True) as session:
            row = (
                session.query(models.TrialUserAttributeModel)
                .filter_by(trial_id=trial._trial_id, key=key)
                .one_or_none()
            )
            if row is None:
                session.add(
                    models.TrialUserAttributeModel(
                        trial_id=trial._trial_id, key=key, value_json=json.dumps(value)
                    )
                )
            else:
                row.value_json = json.dumps(value)
        return
    extra = dict(study.user_attrs.get("trial_user_attrs", {}))
    attrs = dict(extra.get(str(trial.number), {}))
    attrs[key] = value
    extra[str(trial.number)] = attrs
    study.set_user_attr("trial_user_attrs", extra)


class Run:
    """One search's results, read from its run folder.

    Open with :func:`open_run`; ``nas.search`` returns one too. Reading never changes the
    folder, and is safe while a search writes it (each call re-reads the storage).

    Attributes:
        path: The run folder.
        settings: The resolved settings of the search.
    """

    def __init__(self, path: str | Path, settings: SearchConfig) -> None:
        self.path = Path(path)
        self.settings = settings
        self._study: optuna.Study | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.task!r}, device={self.device!r})"

    # -- the study --------------------------------------------------------------------

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL of the run."""
        return storage_url(self.path, self.settings.storage)

    @property
    def study(self) -> optuna.Study:
        """The run's Optuna study (loaded on first use).

        Raises:
            RunError: the storage holds no ``hwnas`` study yet.
        """
        if self._study is None:
            import optuna

            path = sqlite_path(self.storage_url)
            if path is not None:
                check_sqlite_file(path)
            storage = make_storage(self.storage_url)
            try:
                self._study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
            except KeyError:
                raise RunError(
                    f"run folder {str(self.path)!r} holds no search yet (no study "
                    f"{STUDY_NAME!r} in {self.storage_url}). Start one with `hwnas search`."
                ) from None
            except Exception as exc:  # Optuna's StorageInternalError, sqlalchemy's errors
                raise storage_error(path or self.storage_url, exc) from exc
        return self._study

    def refresh(self) -> None:
        """Forget the loaded study, so that the next read sees everything in the storage.

        Optuna caches finished trials; attributes added to them later (``measured``) show
        after a refresh.
        """
        self._study = None

    @property
    def task(self) -> str:
        """The task name or spec."""
        return self.settings.task

    @property
    def device(self) -> str:
        """The device name."""
        return self.settings.device

    @property
    def objectives(self) -> tuple[str, ...]:
        """Objective names, in the order of ``trial.values``."""
        return self.settings.objectives

    @property
    def budget(self) -> dict[str, float]:
        """Budget limits by key (empty for none), relative ones resolved as the search did."""
        if self.settings.resolved_budget is not None:
            return dict(self.settings.resolved_budget)
        return {k: float(v) for k, v in self.settings.budget.items() if not isinstance(v, str)}

    @property
    def base(self) -> dict[str, Any]:
        """The base model's metrics (``accuracy``, ``latency_ms``, ``energy_mj``, ...)."""
        return dict(self.study.user_attrs.get("base", {}))

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The study's user attributes (see the module docstring)."""
        return dict(self.study.user_attrs)

    # -- trials -----------------------------------------------------------------------

    def trials(self, states: Sequence[optuna.trial.TrialState] | None = None) -> list[FrozenTrial]:
        """All trials (or those in ``states``), in trial-number order.

        ``user_attrs`` include values that were added after a trial finished (``measured``).
        """
        study = self.study
        found = study.get_trials(deepcopy=False, states=states)
        extra: Mapping[str, Mapping[str, Any]] = study.user_attrs.get("trial_user_attrs", {})
        if not extra:
            return found
        import copy

        merged = []
        for trial in found:
            more = extra.get(str(trial.number))
            if more:
                trial = copy.copy(trial)
                trial.user_attrs = {**trial.user_attrs, **more}
            merged.append(trial)
        return merged

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

    def trial(self, number: int) -> FrozenTrial:
        """The trial numbered ``number``.

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
            feasible_only: Only trials that meet the budget (Optuna's ``best_trials``).
        """
        completed = [t for t in self.completed_trials() if t.values is not None]
        if feasible_only:
            completed = [t for t in completed if self.is_feasible(t)]
        if not completed:
            return []
        directions = [OBJECTIVES[name].direction for name in self.objectives]
        signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
        points = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in completed]
        front = [
            t
            for t, p in zip(completed, points, strict=True)
            if not any(_dominates(q, p) for q in points if q is not p)
        ]
        key_index = next(
            (i for i, name in enumerate(self.objectives) if name in COST_OBJECTIVES), 0
        )
        return sorted(front, key=lambda t: (t.values[key_index], t.number))

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
            f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running; "
            f"Pareto front: {len(self.pareto_trials())} feasible trials"
        )


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    pairs = list(zip(a, b, strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def open_run(run_dir: str | Path) -> Run:
    """Open an existing run folder for reading.

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


__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "LOCK_FILE",
    "STUDY_DB",
    "STUDY_NAME",
    "Run",
    "is_local_sqlite",
    "make_storage",
    "open_run",
    "run_lock",
    "set_finished_trial_user_attr",
    "storage_url",
]
