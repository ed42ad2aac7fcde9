"""Where a device's predictors live, and a device's training data from its store.

:func:`fit_predictor` (in :mod:`._fit`) is re-exported here, its public home.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latency_models._errors import LatencyModelsError
from latency_models._home import home_dir
from latency_models.features._features import FEATURE_VERSION, GraphFeatures, graph_features
from latency_models.predictors._base import (
    TARGETS,
    BaseLatencyPredictor,
    load_predictor,
)
from latency_models.predictors._fit import (
    DEFAULT_PREDICTOR,
    FEATURE_SETS,
    KERNEL_PREDICTOR,
    OPLEVEL_PREDICTOR,
    fit_predictor,
)

__all__ = [
    "DEFAULT_PREDICTOR",
    "FEATURE_SETS",
    "KERNEL_PREDICTOR",
    "OPLEVEL_PREDICTOR",
    "PredictorNotFoundError",
    "device_feature_set",
    "device_predictor",
    "fit_predictor",
    "measured_nchwc_block",
    "predictor_path",
    "reference_predictors",
    "training_data",
    "training_graphs",
    "training_kernel_times",
    "training_oplevel",
]

_logger = logging.getLogger(__name__)


class PredictorNotFoundError(LatencyModelsError, FileNotFoundError):
    """No fitted predictor is saved for a device and target."""


def predictor_path(device_name: str, target: str = "latency_ms") -> Path:
    """Where the fitted predictor of ``device_name`` for ``target`` is kept.

    ``<hwnas home>/devices/<device_name>/predictors/<target>/`` (a folder).

    Raises:
        ValueError: ``target`` is not one of :data:`TARGETS`.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}.")
    if not device_name or "/" in device_name or device_name.startswith("."):
        raise ValueError(
            f"device name must be a plain name like 'local-cpu', got {device_name!r}."
        )
    return home_dir() / "devices" / device_name / "predictors" / target


def device_predictor(device_name: str, target: str = "latency_ms") -> BaseLatencyPredictor:
    """The fitted predictor of a device, from :func:`predictor_path`.

    Raises:
        PredictorNotFoundError: none saved; the message says to run ``hwnas device profile``.
        IncompatibleArtifactError: saved by an incompatible hwnas or for another device.
    """
    path = predictor_path(device_name, target)
    if not (path / "meta.json").is_file():
        raise PredictorNotFoundError(
            f"no {target} predictor for device {device_name!r} (looked in {str(path)!r}). "
            f"Run `hwnas device profile {device_name}` to measure the device and fit one."
        )
    return load_predictor(path, device=device_name)


def training_data(
    records: Any, *, target: str = "latency_ms"
) -> tuple[list[GraphFeatures], Any, list[str]]:
    """Features and targets of stored measurements, ready for ``fit``.

    Stored features are reused when their feature version matches; otherwise (or when
    absent) they are recomputed from the stored graph. Records without the target (no
    energy measured, failed runs) are skipped.

    A graph measured in several sessions gets the lowest value of the sessions that share
    its newest record's runtime version and host: other processes on the device only ever
    add time, so the best session is the least disturbed one. (On the 2-thread device of a
    shared 2-vCPU VM, the newest of a graph's sessions was over 1.1x its best for 17% of
    664 graphs and over 1.5x for 7%; on the 1-thread device, pinned, 6% and none.)
    Sessions from an older runtime or another host are not mixed in. Features are laid out
    for the NCHWc block of the host that measured the graph (its ``host_info``), not this
    machine's: a device behind an agent may be another kind of CPU.

    Args:
        records: A ``MeasurementStore`` (its ``records()``) or an iterable of its records.
        target: ``"latency_ms"`` or ``"energy_mj"``.

    Returns:
        (features, y as an array of shape (n,), graph hashes), in record order.

    Raises:
        ValueError: ``target`` is not one of :data:`TARGETS`, or a stored value of it is
            not finite > 0 (naming the record).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}.")
    device = getattr(records, "device_name", "DEVICE")
    if hasattr(records, "records"):
        records = records.records()
    bad: list[str] = []
    feats: list[GraphFeatures] = []
    ys: list[float] = []
    hashes: list[str] = []
    position: dict[str, int] = {}
    identity: list[tuple[str, str]] = []
    for rec in records:  # oldest first
        value = getattr(rec.measurement, target, None)
        if value is None:
            continue
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(
                f"stored record {getattr(rec, 'id', '?')} (graph {rec.graph_hash[:16]}) of "
                f"{device} has {target} {value!r}; values must be finite and > 0. Remove it "
                f"with `hwnas device records {device} --remove {getattr(rec, 'id', 'ID')}`."
            )
        ident = (rec.measurement.runtime_version, rec.measurement.host)
        block = measured_nchwc_block(rec.measurement)
        idx = position.get(rec.graph_hash)
        if idx is not None:  # measured again: the best session of the newest runtime and host
            same = identity[idx] == ident
            ys[idx] = min(ys[idx], float(value)) if same else float(value)
            identity[idx] = ident
            if block is not None and feats[idx].totals.get("nchwc_block") != block:
                feats[idx] = _features_or_note(rec, block, bad) or feats[idx]  # another layout
            continue
        f = _features_or_note(rec, block, bad)
        if f is None:
            continue
        position[rec.graph_hash] = len(hashes)
        identity.append(ident)
        feats.append(f)
        ys.append(float(value))
        hashes.append(rec.graph_hash)
    if bad:
        warnings.warn(
            f"left out {len(bad)} stored record(s) whose graph cannot be read: "
            f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Remove them with "
            f"`hwnas device records {device} --remove ID,...`.",
            UserWarning,
            stacklevel=2,
        )
    return feats, np.asarray(ys, dtype=np.float64), hashes


def _features_or_note(rec: Any, block: int | None, bad: list[str]) -> GraphFeatures | None:
    """:func:`_stored_features`, or None after noting in ``bad`` why the graph is unreadable."""
    try:
        return _stored_features(rec, block)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        bad.append(f"record {getattr(rec, 'id', '?')} ({exc})")
        return None


def measured_nchwc_block(m: Any) -> int | None:
    """The NCHWc block of the host that took measurement ``m``.

    None when it was not recorded (measurements from before it was, imported ones) or is
    not one the features know (:data:`~latency_models.measurement._host.NCHWC_BLOCKS`).
    """
    from latency_models.measurement._host import NCHWC_BLOCKS

    block = str((getattr(m, "host_info", None) or {}).get("nchwc_block"))
    return int(block) if block in {str(b) for b in NCHWC_BLOCKS} else None


def _stored_features(rec: Any, block: int | None) -> GraphFeatures:
    """``rec``'s stored features when they are of this version and ``block``, else computed."""
    if rec.features and rec.features.get("feature_version") == FEATURE_VERSION:
        try:
            f = GraphFeatures.from_dict(rec.features)
        except (KeyError, TypeError, ValueError):
            pass
        else:
            if block is None or f.totals.get("nchwc_block") == block:
                return f
    return graph_features(rec.graph(), nchwc_block=block)


def training_kernel_times(
    records: Any, hashes: Sequence[str]
) -> list[list[dict[str, Any]] | None]:
    """The newest per-kernel times stored for each graph of ``hashes`` (None where none).

    Args:
        records: A ``MeasurementStore`` (its ``records()``) or an iterable of its records.
        hashes: Graph hashes, as :func:`training_data` returns them.

    Returns:
        One :attr:`Measurement.kernel_times` (or None) per hash, in the order of ``hashes``.
    """
    if hasattr(records, "records"):
        records = records.records(with_onnx=False)
    newest: dict[str, list[dict[str, Any]]] = {}
    for rec in records:  # oldest first: later records overwrite
        if rec.measurement.kernel_times:
            newest[rec.graph_hash] = rec.measurement.kernel_times
    return [newest.get(h) for h in hashes]


def training_oplevel(records: Any, hashes: Sequence[str]) -> tuple[Any, list[str]]:
    """Op-level rows of the newest stored graph of each hash, and why any could not be read.

    Args:
        records: A ``MeasurementStore`` (its ``records()``) or an iterable of its records.
        hashes: Graph hashes, as :func:`training_data` returns them.

    Returns:
        (rows of shape (n, len(OPLEVEL_FEATURES)) with a row of NaN where a graph cannot be
        featurized, one ``"graph HASH: reason"`` line per such graph).
    """
    from latency_models.features._oplevel import OPLEVEL_FEATURES, FeatureError
    from latency_models.predictors._oplevel_predictor import oplevel_rows

    if hasattr(records, "records"):
        records = records.records()
    newest = {rec.graph_hash: rec for rec in records}
    rows = np.full((len(hashes), len(OPLEVEL_FEATURES)), np.nan)
    bad: list[str] = []
    for i, h in enumerate(hashes):
        label = f"graph {h[:16]}"
        try:
            rows[i] = oplevel_rows([newest[h].graph()], [label])[0]
        except (FeatureError, KeyError, OSError, ValueError, TypeError) as exc:
            bad.append(f"{label}: {exc}")
    return rows, bad


def device_feature_set(spec: Any, records: Any) -> str:
    """``"onnxruntime-x86"`` where a device is onnxruntime on x86, else ``"oplevel"``.

    The x86 kernel features describe a device only when its runtime is onnxruntime and
    its measurements come from an x86 host that named its NCHWc block (imported
    measurements do not, so imported devices get op-level features).

    Args:
        spec: The device's :class:`DeviceSpec` (its ``runtime``).
        records: A ``MeasurementStore`` or an iterable of its records.
    """
    if getattr(spec, "runtime", "onnxruntime") != "onnxruntime":
        return "oplevel"
    if hasattr(records, "records"):
        records = records.records(with_onnx=False)
    x86 = any(_measured_on_x86(rec.measurement) for rec in records)
    return "onnxruntime-x86" if x86 else "oplevel"


def _measured_on_x86(m: Any) -> bool:
    machine = str((getattr(m, "host_info", None) or {}).get("machine", "x86_64")).lower()
    x86 = machine in ("x86_64", "amd64", "x86", "i686", "i386")
    return x86 and measured_nchwc_block(m) is not None


def training_graphs(records: Any, hashes: Sequence[str]) -> list[bytes]:
    """The newest stored ONNX bytes of each graph of ``hashes``, in their order.

    Raises:
        KeyError: a hash has no stored record.
    """
    if hasattr(records, "records"):
        records = records.records()
    newest = {rec.graph_hash: rec for rec in records}
    return [newest[h].graph() for h in hashes]


def reference_predictors(device: str, target: str = "latency_ms") -> list[BaseLatencyPredictor]:
    """The saved ``target`` predictors of every other device, for a few-shot start.

    Predictors that cannot be loaded here (another feature version, a damaged file) and
    few-shot ones (no chains of references) are passed over.
    """
    from latency_models._errors import IncompatibleArtifactError

    root = home_dir() / "devices"
    found: list[BaseLatencyPredictor] = []
    for meta in sorted(root.glob(f"*/predictors/{target}/meta.json")):
        other = meta.parents[2].name
        if other == device:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                p = load_predictor(meta.parent, device=other)
        except (IncompatibleArtifactError, OSError, LatencyModelsError) as exc:
            _logger.info("not using %s's predictor as a reference: %s", other, exc)
            continue
        if not getattr(p, "needs_references", False):
            found.append(p)
    return found
