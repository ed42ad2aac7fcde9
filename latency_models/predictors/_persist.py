"""Where a device's predictors live, and fitting one on its measurements."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models._errors import LatencyModelsError
from latency_models._home import home_dir
from latency_models.features._features import FEATURE_VERSION, GraphFeatures, graph_features
from latency_models.predictors._base import (
    PREDICTORS,
    TARGETS,
    BaseLatencyPredictor,
    featurize,
    load_predictor,
)
from latency_models.predictors._metrics import prediction_metrics

if TYPE_CHECKING:
    from latency_models._graph import GraphLike

_logger = logging.getLogger(__name__)


class PredictorNotFoundError(LatencyModelsError, FileNotFoundError):
    """No fitted predictor is saved for a device and target."""


DEFAULT_PREDICTOR = "additive"
"""Registry name of the predictor :func:`fit_predictor` fits without per-kernel times."""
KERNEL_PREDICTOR = "combined"
"""Registry name of the predictor :func:`fit_predictor` fits with per-kernel times."""


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


def fit_predictor(
    graphs: Sequence[GraphLike | GraphFeatures],
    y: Any,
    *,
    target: str = "latency_ms",
    device: str | None = None,
    name: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
) -> BaseLatencyPredictor:
    """Fit the default predictor, recording its held-out accuracy.

    The default is ``"combined"`` (kernel-level and kernel-additive models averaged) when
    per-kernel times are given for a latency target, else ``"additive"``: see
    ``experiments/README.md`` for how each did on held-out graphs of other families.

    With at least 10 graphs, ``holdout`` of them are kept aside first to measure the
    accuracy (stored as ``metrics_``, written into ``meta.json`` on save); the returned
    predictor is then refit on all graphs.

    Args:
        graphs: Graphs or their features, length n.
        y: Measured values, shape (n,), in ms (latency) or mJ (energy).
        target: ``"latency_ms"`` or ``"energy_mj"``.
        device: Device name recorded with the predictor.
        name: Registry name of the predictor class (default: see above).
        holdout: Share of graphs for the held-out metrics (0 to skip).
        seed: Seed of the split.
        kernel_times: Per graph, its :attr:`Measurement.kernel_times` or None
            (:func:`training_kernel_times` reads them from a store).

    Returns:
        The fitted predictor, with ``device_``, ``target_`` and ``metrics_`` set.

    Raises:
        ValueError: bad target, holdout or data (see :meth:`BaseLatencyPredictor.fit`).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}.")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout!r}. Try 0.2.")
    feats = featurize(graphs)
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    if kernel_times is not None and len(kernel_times) != len(feats):
        raise ValueError(
            f"got {len(feats)} graphs but {len(kernel_times)} kernel_times entries; pass one "
            f"per graph (None where a graph has none)."
        )
    if name is None:
        with_times = kernel_times is not None and any(kernel_times)
        name = KERNEL_PREDICTOR if with_times and target == "latency_ms" else DEFAULT_PREDICTOR
    cls = PREDICTORS.get(name)
    metrics: dict[str, float] = {}
    n_test = round(holdout * len(feats))
    if len(feats) >= 10 and n_test >= 2:
        order = np.random.default_rng(seed).permutation(len(feats))
        test, train = order[:n_test], order[n_test:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            held = cls().fit(
                [feats[i] for i in train],
                y_arr[train],
                kernel_times=None if kernel_times is None else [kernel_times[i] for i in train],
            )
            pred = held.predict_features([feats[i] for i in test])
        metrics = prediction_metrics(y_arr[test], pred)
        _logger.info(
            "%s held-out on %d graphs: within_10=%.2f mape=%.1f%% kendall=%.3f",
            name, n_test, metrics["within_10"], metrics["mape"], metrics["kendall"],
        )  # fmt: skip
    predictor = cls().fit(feats, y_arr, kernel_times=kernel_times)
    predictor.device_ = device
    predictor.target_ = target
    predictor.metrics_ = metrics
    return predictor


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
        ValueError: ``target`` is not one of :data:`TARGETS`.
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
        if value is None or not math.isfinite(float(value)) or float(value) <= 0:
            continue
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
