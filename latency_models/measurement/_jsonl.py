"""Measurements to and from JSON Lines files: the exchange format of ``hwnas device import``.

Imported lines are checked field by field, their ONNX files must lie inside the folder of the
JSONL file, and each must be an ONNX model.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latency_models.measurement._measure import Measurement
from latency_models.measurement._records import onnx_problem, record_from_row

if TYPE_CHECKING:
    from latency_models.measurement._store import MeasurementStore


def export_jsonl(store: MeasurementStore, path: str | Path) -> int:
    """Write every readable record of ``store`` as a JSON line; ONNX files go to ``graphs/``.

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
    for rec_id, _, problem in store.check(graphs=False):
        row, problem = (None, problem) if problem else store._row(rec_id, with_onnx=True)
        try:
            if problem:
                raise ValueError(problem)
            rec = record_from_row(row)
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
            f"left {len(skipped)} unreadable record(s) of {store.path} out of {path}: "
            f"{'; '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}.",
            UserWarning,
            stacklevel=2,
        )
    return len(lines)


def import_jsonl(store: MeasurementStore, path: str | Path) -> int:
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
            parsed.append(_parse_line(store, line, path))
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from exc
    existing = {
        (r.graph_hash, json.dumps(_comparable(r.measurement), sort_keys=True))
        for r in store.records(with_onnx=False)
    }
    added = 0
    for data, meas, features, source in parsed:
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        key = (digest, json.dumps(_comparable(meas), sort_keys=True))
        if key in existing:
            continue
        existing.add(key)
        store.put(data, meas, features=features, source=source, graph_hash=digest)
        added += 1
    return added


def _parse_line(
    store: MeasurementStore, line: Any, path: Path
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
        "device": store.device_name,
        "timestamp": time.time(),
    }
    meas = Measurement.from_dict({**defaults, **line})
    return data, meas, features, source


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
