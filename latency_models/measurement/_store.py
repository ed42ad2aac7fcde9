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
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latency_models._errors import (
    IncompatibleArtifactError,
    LatencyModelsError,
    MeasurementError,
)
from latency_models._graph import GraphLike, graph_bytes
from latency_models._home import home_dir
from latency_models.devices import DeviceSpec, get_device
from latency_models.measurement._measure import Measurement, check_measurement, measure

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


@dataclass(frozen=True)
class StoredRecord:
    """One stored measurement of one graph.

    Attributes:
        id: Row id (increases with insertion).
        graph_hash: SHA-256 of the ONNX bytes.
        measurement: The measurement.
        runtime_version: Runtime on the measuring host.
        host: Host fingerprint.
        created: When it was stored (s since the epoch).
        source: ``"measured"`` or ``"imported:<file name>"``.
        features: The graph's features as given by the caller, or None.
        onnx: The ONNX bytes when loaded (``records(with_onnx=True)``), else None.
        onnx_path: Path of the ONNX file when the store keeps a path instead of bytes.
    """

    id: int
    graph_hash: str
    measurement: Measurement
    runtime_version: str
    host: str
    created: float
    source: str
    features: dict[str, Any] | None = field(default=None, compare=False)
    onnx: bytes | None = field(default=None, repr=False, compare=False)
    onnx_path: str | None = None

    def graph(self) -> bytes:
        """The ONNX bytes (read from :attr:`onnx_path` when the store keeps a path)."""
        if self.onnx is not None:
            return self.onnx
        if self.onnx_path is None:
            raise ValueError(f"record {self.id} holds no graph.")
        return Path(self.onnx_path).read_bytes()


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
        keep_path = keep_path or _too_big_to_keep(graph, len(data))
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
                out.append(_record(row))
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
                    rec = _record(row)
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
        """Write every readable record as one JSON line; the ONNX files go to ``<folder>/graphs/``.

        Each line has ``onnx`` (path relative to the JSONL's folder), ``graph_hash``,
        ``source``, ``features`` and the measurement's fields. Records that cannot be read
        (a damaged store) are left out with a warning naming them, so that what is readable
        can be saved. Returns the number of lines.
        """
        path = Path(path)
        graph_dir = path.parent / "graphs"
        graph_dir.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        skipped: list[str] = []
        for rec_id, _, problem in self.check(graphs=False):
            row, problem = (None, problem) if problem else self._row(rec_id, with_onnx=True)
            try:
                if problem:
                    raise ValueError(problem)
                rec = _record(row)
                data = rec.graph()
            except (ValueError, OSError) as exc:
                skipped.append(f"{rec_id} ({exc})")
                continue
            rel = Path("graphs") / f"{rec.graph_hash}.onnx"
            target = path.parent / rel
            if not target.exists():
                target.write_bytes(data)
            line: dict[str, Any] = {
                "onnx": rel.as_posix(),
                "graph_hash": rec.graph_hash,
                "source": rec.source,
            }
            line.update(_strip(rec.measurement.to_dict()))
            if rec.features is not None:
                line["features"] = rec.features
            lines.append(json.dumps(line, sort_keys=True))
        path.write_text("".join(line + "\n" for line in lines))
        if skipped:
            warnings.warn(
                f"left {len(skipped)} unreadable record(s) of {self.path} out of {path}: "
                f"{'; '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}.",
                UserWarning,
                stacklevel=2,
            )
        return len(lines)

    def import_jsonl(self, path: str | Path) -> int:
        """Add the measurements of a JSON Lines file; returns how many were new.

        Each line needs ``onnx`` (a path relative to the JSONL's folder, inside it) and
        ``latency_ms``; optional: ``energy_mj``, ``peak_memory_bytes``, ``features``, and any
        other :class:`Measurement` field, each checked (type, finite, sign). A line already
        stored (same graph, runtime, host and values) is skipped, so importing twice adds
        nothing.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: a line is not a JSON object, lacks a field, has a bad value, or names
                a file outside the JSONL's folder, missing, or not ONNX (the message gives
                the file and line number); nothing is imported then.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"JSONL file {str(path)!r} does not exist.")
        parsed = []
        try:
            text_lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not a UTF-8 text file of JSON lines ({exc}).") from exc
        for lineno, text in enumerate(text_lines, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: not JSON ({exc.msg} at column {exc.colno}); each line "
                    'must be one JSON object, e.g. {"onnx": "graphs/a.onnx", "latency_ms": 2.5}.'
                ) from exc
            try:
                parsed.append(self._parse_line(line, path))
            except (ValueError, TypeError, OSError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from exc
        existing = {
            (r.graph_hash, json.dumps(_comparable(r.measurement), sort_keys=True))
            for r in self.records(with_onnx=False)
        }
        added = 0
        for data, meas, features, source in parsed:
            import hashlib

            digest = hashlib.sha256(data).hexdigest()
            key = (digest, json.dumps(_comparable(meas), sort_keys=True))
            if key in existing:
                continue
            existing.add(key)
            self.put(data, meas, features=features, source=source, graph_hash=digest)
            added += 1
        return added

    def _parse_line(
        self, line: Any, path: Path
    ) -> tuple[bytes, Measurement, dict[str, Any] | None, str]:
        if not isinstance(line, dict):
            raise ValueError(
                'each line must be a JSON object, e.g. {"onnx": "graphs/a.onnx", '
                f'"latency_ms": 2.5}}; got {type(line).__name__}.'
            )
        line = dict(line)
        onnx_name = line.pop("onnx", None)
        if not isinstance(onnx_name, str) or not onnx_name:
            raise ValueError('missing "onnx": the path of the ONNX file (relative to the JSONL).')
        if "latency_ms" not in line:
            raise ValueError('missing "latency_ms".')
        data = _read_inside(onnx_name, path.parent)
        features = line.pop("features", None)
        if features is not None and not isinstance(features, dict):
            raise ValueError(f'"features" must be a JSON object or null, got {features!r}.')
        line.pop("graph_hash", None)
        source = line.pop("source", None) or f"imported:{path.name}"
        if not isinstance(source, str):
            raise ValueError(f'"source" must be a string, got {source!r}.')
        _check_fields(line)
        latency = float(line["latency_ms"])
        energy = line.get("energy_mj")
        defaults: dict[str, Any] = {
            "p10_ms": latency,
            "p90_ms": latency,
            "cv": math.nan,
            "n_runs": 0,
            "energy_mj": energy,
            "energy_source": "imported" if energy is not None else "not measured",
            "peak_memory_bytes": None,
            "memory_source": "imported"
            if line.get("peak_memory_bytes") is not None
            else ("not measured"),
            "runtime_version": "unknown",
            "host": "imported",
            "device": self.device_name,
            "timestamp": time.time(),
        }
        meas = Measurement.from_dict({**defaults, **line})
        return data, meas, features, source


def _record(row: Any) -> StoredRecord:
    """A :class:`StoredRecord` from a query row.

    Raises:
        ValueError: the row's measurement or features are not readable.
    """
    try:
        meas = Measurement.from_dict(json.loads(row[2]))
        feats = None if row[7] is None else json.loads(row[7])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable measurement: {exc}") from exc
    return StoredRecord(row[0], row[1], meas, row[3], row[4], row[5], row[6],
                        feats, row[8], row[9])  # fmt: skip


def _read_inside(name: str, folder: Path) -> bytes:
    """The ONNX model at ``name``, which must lie inside ``folder``.

    Raises:
        ValueError: the path leaves the folder, does not exist, or is not an ONNX model.
    """
    root = folder.resolve()
    target = (root / name).resolve()  # resolves ../ and symbolic links
    if Path(name).is_absolute() or not target.is_relative_to(root):
        raise ValueError(
            f'"onnx": {name!r} is outside the folder of the JSONL file ({root}); put the ONNX '
            "files in that folder (e.g. graphs/) and name them relative to it."
        )
    if not target.is_file():
        raise ValueError(f"ONNX file {str(root / name)!r} does not exist.")
    data = target.read_bytes()
    problem = onnx_problem(data)
    if problem:
        raise ValueError(f"{str(root / name)!r}: {problem}")
    return data


def onnx_problem(data: bytes) -> str:
    """Why ``data`` is not a self-contained ONNX model, or ``""``."""
    import onnx

    if not data:
        return "empty file; expected an ONNX model."
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        return f"not an ONNX model ({len(data)} bytes; {type(exc).__name__}: {exc})."
    if not model.graph.node and not model.graph.output:
        return f"not an ONNX model ({len(data)} bytes that decode to an empty graph)."
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return (
            "the model keeps its weights in external files; save it with the weights inside "
            "(onnx.save(model, path, save_as_external_data=False))."
        )
    return ""


_NUMBERS = {  # field: (lowest, whether it may be 0, whether a whole number, may be null)
    "latency_ms": (0.0, False, False, False),
    "p10_ms": (0.0, True, False, True),
    "p90_ms": (0.0, True, False, True),
    "cv": (0.0, True, False, True),
    "rse": (0.0, True, False, True),
    "energy_mj": (0.0, True, False, True),
    "peak_memory_bytes": (0.0, True, True, True),
    "weight_bytes": (0.0, True, True, True),
    "n_runs": (0.0, True, True, False),
    "n_samples": (0.0, True, True, False),
    "runs_per_sample": (1.0, True, True, False),
    "timestamp": (0.0, True, False, False),
}
_STRINGS = (
    "energy_source", "memory_source", "runtime_version", "host", "device", "energy_note",
)  # fmt: skip


def _check_fields(line: Mapping[str, Any]) -> None:
    """Check the types and ranges of an imported line's measurement fields.

    Raises:
        ValueError: a field has the wrong type or an out-of-range value (it is named).
    """
    for key, (low, zero_ok, whole, null_ok) in _NUMBERS.items():
        if key not in line:
            continue
        value = line[key]
        if value is None and null_ok:
            continue
        kind = "a whole number" if whole else "a number"
        bound = f">= {low:g}" if zero_ok else f"> {low:g}"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value >= low if zero_ok else value > low)
        ok = ok and (not whole or float(value).is_integer())
        if not ok:
            null = " or null" if null_ok else ""
            raise ValueError(f'"{key}" must be {kind} {bound}{null}, got {value!r}.')
    for key in _STRINGS:
        if key in line and not isinstance(line[key], str):
            raise ValueError(f'"{key}" must be a string, got {line[key]!r}.')
    info = line.get("host_info")
    if info is not None and not (
        isinstance(info, dict) and all(isinstance(v, str) for v in info.values())
    ):
        raise ValueError(f'"host_info" must be an object of strings, got {info!r}.')
    times = line.get("kernel_times")
    if times is not None and not (
        isinstance(times, list)
        and all(isinstance(t, dict) and _is_time(t.get("ms")) for t in times)
    ):
        raise ValueError('"kernel_times" must be a list of objects, each with "ms" >= 0.')


def _is_time(value: Any) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value) and value >= 0


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("_type", "version")}


def _comparable(m: Measurement) -> dict[str, Any]:
    """Measurement fields that identify a record (the import time is not one of them)."""
    return _strip(replace(m, timestamp=0.0).to_dict())


def measure_cached(
    graph: GraphLike,
    device: DeviceSpec | str = "local-cpu",
    *,
    store: MeasurementStore | None = None,
    remeasure: bool = False,
    features: Mapping[str, Any] | None = None,
    **measure_options: Any,
) -> Measurement:
    """Measure ``graph`` on ``device`` unless the store already holds it for this runtime and host.

    With ``kernel_times_s > 0`` among the options, a stored record counts only if it has
    per-kernel times.

    The target's runtime version and host come from this machine (local devices), the
    agent's ``/health`` (HTTP devices) or are not known beforehand (Ray devices: the newest
    record of the graph from any host counts).

    Args:
        graph: The graph.
        device: Device name or spec.
        store: Where to look and keep; default the device's store.
        remeasure: Measure even when a record exists (both are kept).
        features: Features to store with the graph.
        **measure_options: Passed to :func:`latency_models.measure`.
    """
    import hashlib

    spec = get_device(device)
    store = store if store is not None else MeasurementStore(spec.name)
    data = graph_bytes(graph)
    digest = hashlib.sha256(data).hexdigest()
    if not remeasure:
        runtime, host = _target_identity(spec)
        found = store.get(digest, runtime_version=runtime, host=host)
        if found is not None and measure_options.get("kernel_times_s", 0) > 0:
            found = next(
                (
                    r
                    for r in reversed(store.history(digest))
                    if r.measurement.kernel_times
                    and (runtime is None or r.measurement.runtime_version == runtime)
                    and (host is None or r.measurement.host == host)
                ),
                None,
            )
        if found is not None:
            if features is not None:
                store.set_features(digest, features)
            return found.measurement
    by_path = _too_big_to_keep(graph, len(data))  # refused here, before measuring
    result = measure(graph if isinstance(graph, (str, Path)) else data, spec, **measure_options)
    store.put(
        graph if by_path else data, result, features=features, graph_hash=digest,
        keep_path=by_path,
    )  # fmt: skip
    return result


MAX_STORED_GRAPH_BYTES = 900_000_000
"""Largest graph a store keeps inside itself (SQLite refuses values over 1e9 bytes); a
bigger one given as a file path is kept by its path."""


def _too_big_to_keep(graph: GraphLike, n_bytes: int) -> bool:
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


def _target_identity(spec: DeviceSpec) -> tuple[str | None, str | None]:
    if spec.kind == "local":
        from latency_models.measurement._bench import host_fingerprint, runtime_version

        return runtime_version(), host_fingerprint()
    if spec.kind == "http":
        from latency_models.measurement._agent_client import agent_health

        health = agent_health(spec)
        return health["runtime_version"], health["host"]
    return None, None
