"""Every measurement of a device, kept in one SQLite file.

The store lives at ``home_dir()/devices/<name>/measurements.sqlite``. Graphs are stored once
per content hash (their ONNX bytes, or a path when the caller prefers), with their features
(given by the caller, e.g. :func:`latency_models.graph_features`); each measurement is a row
with the runtime version, the host fingerprint and the time. Nothing is overwritten: a
re-measurement adds a row and :meth:`MeasurementStore.get` returns the newest.

Two processes may write at once: connections use WAL journaling and wait up to 60 s for a
lock. A new store is built aside and linked into place in one step, so a file at the path is
always a complete store: an empty or unreadable file raises :class:`StoreCorruptedError`
naming the path; it is never silently replaced. A record that cannot be read is skipped with
a warning naming it (:meth:`MeasurementStore.check` lists such records and
:meth:`MeasurementStore.remove` drops them); it does not block the others.

Imported measurements (:meth:`MeasurementStore.import_jsonl`) are checked field by field,
their ONNX files must lie inside the folder of the JSONL file, and each must be an ONNX model.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from latency_models._errors import (
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
)
from latency_models._graph import GraphLike, graph_bytes
from latency_models._home import home_dir
from latency_models.measurement._measure import Measurement, check_measurement
from latency_models.measurement._records import StoredRecord, onnx_problem, record_from_row

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graphs (
    graph_hash TEXT PRIMARY KEY,
    onnx BLOB,
    onnx_path TEXT,
    n_bytes INTEGER NOT NULL,
    features TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    graph_hash TEXT NOT NULL REFERENCES graphs(graph_hash),
    runtime_version TEXT NOT NULL,
    host TEXT NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL,
    measurement TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_key ON measurements (graph_hash, runtime_version, host);
"""


class StoreCorruptedError(LatencyModelsError, RuntimeError):
    """The store file exists but is not a readable measurement store."""


def default_store_path(device_name: str) -> Path:
    """``home_dir()/devices/<name>/measurements.sqlite``."""
    return home_dir() / "devices" / device_name / "measurements.sqlite"


class MeasurementStore:
    """The measurements of one device.

    Args:
        device_name: The device the measurements belong to.
        path: The SQLite file; default :func:`default_store_path`.

    Raises:
        StoreCorruptedError: the file exists but is not a measurement store.
        IncompatibleArtifactError: it was written by a newer schema or for another device.
    """

    def __init__(self, device_name: str, *, path: str | Path | None = None) -> None:
        self.device_name = device_name
        self.path = Path(path) if path is not None else default_store_path(device_name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        elif self.path.is_file() and self.path.stat().st_size == 0:
            raise StoreCorruptedError(
                f"measurement store {self.path} is empty (0 bytes): it was truncated or "
                "overwritten. Restore it from a backup, or move it away to start a new store."
            )
        self._init()

    def _create(self) -> None:
        """Build a new store aside and link it into place: the path is never half a store."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{threading.get_ident()}.new")
        try:
            conn = sqlite3.connect(tmp)
            try:
                with conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    conn.execute(
                        "INSERT INTO meta VALUES (?, ?), (?, ?)",
                        ("schema_version", str(SCHEMA_VERSION), "device", self.device_name),
                    )
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError:  # a file system without hard links
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except sqlite3.Error as exc:
            raise StoreCorruptedError(
                f"cannot create measurement store {self.path}: {exc}"
            ) from exc
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"MeasurementStore({self.device_name!r}, path={str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=60.0)
        except sqlite3.Error as exc:
            raise StoreCorruptedError(f"cannot open measurement store {self.path}: {exc}") from exc
        try:
            with conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            if isinstance(exc, sqlite3.DataError):  # a value the store refused, not corruption
                raise ValueError(f"measurement store {self.path} refused a value: {exc}") from exc
            raise StoreCorruptedError(
                f"measurement store {self.path} is corrupted or not a store ({exc}). Move it "
                "away to start a new one; `sqlite3 FILE .recover | sqlite3 NEW` may save "
                "what is still readable."
            ) from exc
        finally:
            conn.close()

    def _init(self) -> None:
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?), (?, ?)",
                    ("schema_version", str(SCHEMA_VERSION), "device", self.device_name),
                )
                rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = int(rows.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise IncompatibleArtifactError(
                f"measurement store {self.path} has schema version {version}, newer than this "
                f"hwnas understands ({SCHEMA_VERSION}); upgrade hwnas."
            )
        if rows.get("device") != self.device_name:
            raise IncompatibleArtifactError(
                f"measurement store {self.path} belongs to device {rows.get('device')!r}, not "
                f"{self.device_name!r}; pass the matching device name or another path."
            )

    def put(
        self,
        graph: GraphLike,
        measurement: Measurement,
        *,
        features: Mapping[str, Any] | None = None,
        keep_path: bool = False,
        source: str = "measured",
        graph_hash: str | None = None,
    ) -> int:
        """Store ``measurement`` of ``graph``; returns the new record's id.

        Args:
            graph: The measured graph.
            measurement: Its measurement.
            features: JSON-able features of the graph (replace stored ones when given).
            keep_path: Store the file path instead of the bytes (``graph`` must be a path).
            source: Where the measurement came from.
            graph_hash: The graph's hash, when the caller already computed it.
        """
        import hashlib

        try:
            check_measurement(measurement, measurement.device)
        except MeasurementError as exc:
            raise MeasurementError(f"refusing to store a measurement: {exc}") from None
        data = graph_bytes(graph)
        digest = graph_hash or hashlib.sha256(data).hexdigest()
        keep_path = keep_path or too_big_to_keep(graph, len(data))
        if keep_path and not isinstance(graph, (str, Path)):
            raise ValueError("put(keep_path=True) needs the graph as a file path.")
        onnx = None if keep_path else data
        onnx_path = str(Path(graph).resolve()) if keep_path else None  # type: ignore[arg-type]
        feats = None if features is None else json.dumps(features, sort_keys=True)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO graphs (graph_hash, onnx, onnx_path, n_bytes, features) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(graph_hash) DO UPDATE SET "
                "features = COALESCE(excluded.features, graphs.features)",
                (digest, onnx, onnx_path, len(data), feats),
            )
            cur = conn.execute(
                "INSERT INTO measurements (graph_hash, runtime_version, host, created, source, "
                "measurement) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    digest,
                    measurement.runtime_version,
                    measurement.host,
                    time.time(),
                    source,
                    json.dumps(measurement.to_dict(), sort_keys=True),
                ),
            )
            return int(cur.lastrowid or 0)

    def set_features(self, graph_hash: str, features: Mapping[str, Any]) -> None:
        """Replace the stored features of a graph."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE graphs SET features = ? WHERE graph_hash = ?",
                (json.dumps(features, sort_keys=True), graph_hash),
            )

    def _query(self, where: str, params: tuple[Any, ...], with_onnx: bool) -> list[StoredRecord]:
        """Matching records, oldest first; unreadable ones are skipped with a warning."""
        onnx_col = "g.onnx" if with_onnx else "NULL"
        sql = (
            f"SELECT m.id, m.graph_hash, m.measurement, m.runtime_version, m.host, m.created, "
            f"m.source, g.features, {onnx_col}, g.onnx_path FROM measurements m "
            f"JOIN graphs g ON g.graph_hash = m.graph_hash {where} ORDER BY m.id"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        out, bad = [], []
        for row in rows:
            try:
                out.append(record_from_row(row))
            except ValueError as exc:
                bad.append(f"{row[0]} ({exc})")
        if bad:
            warnings.warn(
                f"measurement store {self.path}: skipped {len(bad)} unreadable record(s): "
                f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Remove them with "
                f"`hwnas device records {self.device_name} --remove ID,...`.",
                UserWarning,
                stacklevel=3,
            )
        return out

    def check(self, *, graphs: bool = True) -> list[tuple[int, str, str]]:
        """Every record as ``(id, graph hash, problem)``; problem is ``""`` when readable.

        Args:
            graphs: Also check that each stored graph is an ONNX model (reads them all).
        """
        with self._connect() as conn:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM measurements ORDER BY id")]
        out = []
        for rec_id in ids:
            row, problem = self._row(rec_id, with_onnx=graphs)
            digest = str(row[1]) if row is not None else "?"
            if row is not None and not problem:
                try:
                    rec = record_from_row(row)
                    if graphs:
                        problem = onnx_problem(rec.graph())
                except (ValueError, OSError) as exc:
                    problem = str(exc)
            out.append((rec_id, digest, problem))
        return out

    def _row(self, rec_id: int, *, with_onnx: bool) -> tuple[Any, str]:
        """One raw record row by id, or (None, why it cannot be read)."""
        onnx_col = "g.onnx" if with_onnx else "NULL"
        try:
            with self._connect() as conn:
                row = conn.execute(
                    f"SELECT m.id, m.graph_hash, m.measurement, m.runtime_version, m.host, "
                    f"m.created, m.source, g.features, {onnx_col}, g.onnx_path FROM "
                    f"measurements m LEFT JOIN graphs g ON g.graph_hash = m.graph_hash "
                    f"WHERE m.id = ?",
                    (rec_id,),
                ).fetchone()
        except StoreCorruptedError as exc:
            return None, f"unreadable ({exc.__cause__})"
        if row is None:
            return None, "missing"
        if row[8] is None and row[9] is None and with_onnx:
            return row, "its graph is missing from the store"
        return row, ""

    def remove(self, ids: Iterable[int]) -> int:
        """Delete the records ``ids`` (and graphs no other record uses); returns how many.

        Raises:
            ValueError: an id is not a record of this store (nothing is removed then).
        """
        wanted = sorted(set(ids))
        with self._connect() as conn:
            marks = ",".join("?" * len(wanted))
            found = {
                int(r[0])
                for r in conn.execute(f"SELECT id FROM measurements WHERE id IN ({marks})", wanted)
            }
            missing = [i for i in wanted if i not in found]
            if missing:
                raise ValueError(
                    f"no record {missing} in measurement store {self.path}; list them with "
                    f"`hwnas device records {self.device_name}`."
                )
            conn.execute(f"DELETE FROM measurements WHERE id IN ({marks})", wanted)
            conn.execute(
                "DELETE FROM graphs WHERE graph_hash NOT IN (SELECT graph_hash FROM measurements)"
            )
        return len(wanted)

    def get(
        self,
        graph_hash: str,
        *,
        runtime_version: str | None = None,
        host: str | None = None,
        with_onnx: bool = False,
    ) -> StoredRecord | None:
        """The newest record of ``graph_hash`` (optionally for one runtime and host), or None."""
        where, params = "WHERE m.graph_hash = ?", [graph_hash]
        if runtime_version is not None:
            where += " AND m.runtime_version = ?"
            params.append(runtime_version)
        if host is not None:
            where += " AND m.host = ?"
            params.append(host)
        found = self._query(where, tuple(params), with_onnx)
        return found[-1] if found else None

    def history(self, graph_hash: str) -> list[StoredRecord]:
        """Every record of ``graph_hash``, oldest first, without the ONNX bytes."""
        return self._query("WHERE m.graph_hash = ?", (graph_hash,), False)

    def records(self, *, with_onnx: bool = True) -> list[StoredRecord]:
        """All records, oldest first (with the ONNX bytes unless ``with_onnx=False``)."""
        return self._query("", (), with_onnx)

    def __len__(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def export_jsonl(self, path: str | Path) -> int:
        """Write every readable record as one JSON line (:func:`._jsonl.export_jsonl`)."""
        from latency_models.measurement._jsonl import export_jsonl

        return export_jsonl(self, path)

    def import_jsonl(self, path: str | Path) -> int:
        """Add the measurements of a JSON Lines file (:func:`._jsonl.import_jsonl`).

        Returns how many were new; raises ``FileNotFoundError`` or ``ValueError`` (naming the
        file and line) as that function does, importing nothing then.
        """
        from latency_models.measurement._jsonl import import_jsonl

        return import_jsonl(self, path)


MAX_STORED_GRAPH_BYTES = 900_000_000
"""Largest graph a store keeps inside itself (SQLite refuses values over 1e9 bytes); a
bigger one given as a file path is kept by its path."""


def too_big_to_keep(graph: GraphLike, n_bytes: int) -> bool:
    """Whether ``graph`` must be stored by path; raises if it is too big and has none."""
    if n_bytes <= MAX_STORED_GRAPH_BYTES:
        return False
    if isinstance(graph, (str, Path)):
        return True
    raise ValueError(
        f"this graph is {n_bytes / 1e6:.0f} MB, more than the "
        f"{MAX_STORED_GRAPH_BYTES / 1e6:.0f} MB a measurement store keeps inside itself "
        "(SQLite's limit on one value). Save it to a file and pass the path: the store then "
        "keeps the path."
    )
