"""The Optuna storage of a run folder: its URL, opening it, and the lock of the writer.

The storage opens read-write for the search and read-only for the tools that look at a run;
the lock keeps one search writing a folder at a time. SQLite files are checked before SQL
is sent, and storage errors become one-line :class:`~nas._errors.RunError` messages that
name the file and the fix.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import RunError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

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
    :class:`~nas.searching._run.Run` merges back into the trials it returns.
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


def with_late_user_attrs(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` with the user attributes added after they finished merged in.

    :func:`set_finished_trial_user_attr` keeps those in a study attribute for storages
    other than RDB.
    """
    extra: Mapping[str, Mapping[str, Any]] = study.user_attrs.get("trial_user_attrs", {})
    if not extra:
        return trials
    merged = []
    for trial in trials:
        more = extra.get(str(trial.number))
        if more:
            trial = copy.copy(trial)
            trial.user_attrs = {**trial.user_attrs, **more}
        merged.append(trial)
    return merged


def open_read_only_storage(run_dir: Path, url: str | None) -> Any:
    """An Optuna storage on the run that never writes (SQLite opened with ``mode=ro``).

    Args:
        run_dir: The run folder.
        url: The storage URL of the run's settings, or None for ``run_dir/study.db``.

    Raises:
        RunError: the run has no database, or it is damaged.
    """
    from optuna.storages import RDBStorage

    db = Path(run_dir) / STUDY_DB
    if url and not url.startswith("sqlite:"):
        # A server database (e.g. PostgreSQL): reading through Optuna issues no writes.
        return RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
    if url and url.startswith("sqlite:///"):
        candidate = Path(url[len("sqlite:///") :])
        db = candidate if candidate.is_absolute() else Path(run_dir) / candidate.name
    if not db.is_file():
        raise RunError(
            f"{run_dir} is not a hwnas run folder: it has no {STUDY_DB}; start a search "
            f"with `hwnas search TASK ... --run {run_dir}`"
        )
    check_sqlite_file(db)
    ro_url = f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"
    try:
        return RDBStorage(
            ro_url,
            engine_kwargs={"connect_args": {"timeout": 10.0}},
            skip_compatibility_check=True,
            skip_table_creation=True,
        )
    except Exception as exc:  # sqlalchemy raises many kinds for a damaged file
        raise storage_error(db, exc) from exc


def dispose_storage(storage: Any) -> None:
    """Close the database connections of an RDB storage (a no-op for other storages)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "LOCK_FILE",
    "STUDY_DB",
    "STUDY_NAME",
    "check_run_dir_writable",
    "check_sqlite_file",
    "dispose_storage",
    "is_local_sqlite",
    "make_storage",
    "open_read_only_storage",
    "run_lock",
    "set_finished_trial_user_attr",
    "sqlite_path",
    "storage_error",
    "storage_url",
    "with_late_user_attrs",
]
