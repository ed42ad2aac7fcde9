"""Saving, loading and locating fitted predictors: plain JSON, never pickle.

A saved predictor is a folder with two files:

- ``meta.json``: ``format`` (``"hwnas-predictor"``), ``format_version``, ``class`` (registry
  name), ``params`` (``get_params()``), ``target``, ``device``, ``runtime_version``
  (onnxruntime), ``feature_version``, ``n_train``, held-out ``metrics`` and ``created``.
- ``state.json``: the fitted state as JSON numbers and arrays (boosted trees as node
  arrays), restored by the class's ``set_state``.

Loading parses JSON only: a file cannot run code, and it survives scikit-learn upgrades
because predictions never call scikit-learn.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models._errors import IncompatibleArtifactError, LatencyModelsError
from latency_models._features import FEATURE_VERSION, GraphFeatures, graph_features
from latency_models._home import home_dir
from latency_models._metrics import prediction_metrics
from latency_models._predictors import (
    DEFAULT_PREDICTOR,
    KERNEL_PREDICTOR,
    PREDICTORS,
    TARGETS,
    BaseLatencyPredictor,
    featurize,
)

if TYPE_CHECKING:
    from latency_models._graph import GraphLike

_logger = logging.getLogger(__name__)

FORMAT = "hwnas-predictor"
FORMAT_VERSION = 1
"""Version of the on-disk layout; a newer file is refused with the versions named."""


class PredictorNotFoundError(LatencyModelsError, FileNotFoundError):
    """No fitted predictor is saved for a device and target."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_predictor(
    predictor: BaseLatencyPredictor,
    path: str | Path,
    *,
    device: str | None = None,
    target: str = "latency_ms",
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a fitted predictor to the folder ``path`` (see the module docstring).

    Args:
        predictor: A fitted predictor.
        path: Folder, created if needed; existing files in it are replaced.
        device: Device the measurements came from.
        target: ``"latency_ms"`` or ``"energy_mj"``.
        metrics: Held-out metrics to record.

    Returns:
        The folder.

    Raises:
        sklearn.exceptions.NotFittedError: ``predictor`` is not fitted.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(predictor, "n_train_")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": predictor.name,
        "params": predictor.get_params(deep=False),
        "target": target,
        "device": device if device is not None else getattr(predictor, "device_", None),
        "runtime_version": predictor.runtime_version_,
        "feature_version": predictor.feature_version_,
        "nchwc_block": getattr(predictor, "nchwc_block_", None),
        "n_train": predictor.n_train_,
        "metrics": dict(metrics or getattr(predictor, "metrics_", {}) or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Write state first, meta last: a folder with a meta.json is complete.
    tmp_state = folder / "state.json.tmp"
    tmp_state.write_text(json.dumps(_clean(predictor.get_state()), allow_nan=False))
    tmp_state.replace(folder / "state.json")
    tmp_meta = folder / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(_clean(meta), indent=2, sort_keys=True, allow_nan=False))
    tmp_meta.replace(folder / "meta.json")
    return folder


def _not_finite(text: str) -> float:
    raise ValueError(f"{text} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _not_finite(text)


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; NaN, Infinity and numbers too large for a float are refused."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist: a saved predictor is a folder with meta.json and "
            f"state.json, written by predictor.save(folder)."
        )
    try:
        return json.loads(path.read_text(), parse_constant=_not_finite, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IncompatibleArtifactError(
            f"{str(path)!r} is not a hwnas predictor file (invalid JSON: {exc}). Re-save the "
            f"predictor, or refit it with `hwnas device profile DEVICE`."
        ) from exc


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a saved predictor (``meta.json``) without loading its state."""
    meta = _read_json(Path(path) / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IncompatibleArtifactError(
            f"{str(Path(path) / 'meta.json')!r} is not a hwnas predictor file (format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})."
        )
    return meta


def load_predictor(path: str | Path, *, device: str | None = None) -> BaseLatencyPredictor:
    """Load a predictor saved by :meth:`BaseLatencyPredictor.save`.

    Args:
        path: The folder.
        device: If given, the device the predictor must have been fit for.

    Returns:
        The fitted predictor; its ``device_``, ``target_`` and ``metrics_`` come from the file.

    Raises:
        FileNotFoundError: no ``meta.json``/``state.json`` in ``path``.
        IncompatibleArtifactError: not a predictor file, written by a newer format, fit on
            another feature version or for another device; the message names both versions
            or devices and the fix.
    """
    folder = Path(path)
    meta = read_meta(folder)
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise IncompatibleArtifactError(
            f"predictor {str(folder)!r} has format_version {fmt!r}; this hwnas reads up to "
            f"{FORMAT_VERSION}. Upgrade hwnas, or refit with `hwnas device profile DEVICE`."
        )
    fv = meta.get("feature_version")
    if fv != FEATURE_VERSION:
        raise IncompatibleArtifactError(
            f"predictor {str(folder)!r} was fit on feature_version {fv!r}, this hwnas computes "
            f"feature_version {FEATURE_VERSION}. Refit it: `hwnas device profile "
            f"{meta.get('device') or 'DEVICE'}` (stored measurements are reused)."
        )
    if device is not None and meta.get("device") not in (None, device):
        raise IncompatibleArtifactError(
            f"predictor {str(folder)!r} was fit for device {meta.get('device')!r}, not "
            f"{device!r}. Use that device's predictor, or run `hwnas device profile {device}`."
        )
    cls = PREDICTORS.get(str(meta.get("class")))
    try:
        predictor = cls(**meta.get("params", {}))
        predictor.set_state(_read_json(folder / "state.json"))
        _check_no_nan(predictor)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
        raise IncompatibleArtifactError(
            f"predictor {str(folder)!r} ({meta.get('class')!r}) could not be restored: {exc}. "
            f"The file is damaged or was written by another hwnas version; refit with "
            f"`hwnas device profile {meta.get('device') or 'DEVICE'}`."
        ) from exc
    predictor.n_train_ = int(meta.get("n_train") or 0)
    predictor.feature_version_ = fv
    predictor.nchwc_block_ = meta.get("nchwc_block")
    predictor.runtime_version_ = meta.get("runtime_version")
    predictor.device_ = meta.get("device")
    predictor.target_ = meta.get("target")
    predictor.metrics_ = meta.get("metrics") or {}
    now = _runtime_version()
    if meta.get("runtime_version") and now and meta["runtime_version"] != now:
        warnings.warn(
            f"predictor {str(folder)!r} was fit on measurements from onnxruntime "
            f"{meta['runtime_version']}, this process runs {now}; kernels may have changed. "
            f"Re-profile the device to be sure.",
            UserWarning,
            stacklevel=2,
        )
    return predictor


def _check_no_nan(predictor: BaseLatencyPredictor) -> None:
    """Refuse fitted state holding NaN (a null where a number belongs in ``state.json``).

    Raises:
        ValueError: naming the attribute.
    """

    def walk(value: Any, where: str, depth: int = 0) -> None:
        if depth > 12:
            return
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            if np.isnan(value).any():
                raise ValueError(f"{where} holds NaN (a missing number)")
        elif isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{where} is NaN (a missing number)")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{where}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]", depth + 1)
        elif isinstance(value, BaseLatencyPredictor):
            for key, item in vars(value).items():
                if key.endswith("_") and not key.startswith("_"):
                    walk(item, f"{where}.{key}", depth + 1)

    walk(predictor, "the state")


def _runtime_version() -> str | None:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover
        return None


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
    not one the features know (:data:`~latency_models._nchwc.NCHWC_BLOCKS`).
    """
    from latency_models._nchwc import NCHWC_BLOCKS

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
