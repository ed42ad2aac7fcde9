"""The predictor contract, its registry, and its files (plain JSON, never pickle).

Every predictor is a scikit-learn regressor over graphs, registered in :data:`PREDICTORS`
under its ``name``; its ``feature_set`` says whether it reads :class:`GraphFeatures`
(onnxruntime's x86 kernels) or op-level features. A saved predictor is a folder of two files:

- ``meta.json``: ``format`` (``"hwnas-predictor"``), ``format_version``, ``class`` (registry
  name), ``params`` (``get_params()``), ``target``, ``device``, ``runtime_version``
  (onnxruntime), ``feature_set``, ``feature_version``, ``n_train``, held-out ``metrics``,
  ``choice`` (every kind's out-of-fold scores and the one chosen), ``left_out`` (graphs whose
  labels were left out of the fit) and ``created``.
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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from latency_models._errors import IncompatibleArtifactError, StaleFeaturesError
from latency_models._registry import Registry
from latency_models.features._features import (
    FEATURE_VERSION,
    GraphFeatures,
    graph_features,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from latency_models._graph import GraphLike

FloatArray = NDArray[np.float64]
_logger = logging.getLogger(__name__)

TARGETS = ("latency_ms", "energy_mj")
"""What a predictor can be fit to: latency in milliseconds, energy per inference in mJ."""


class BaseLatencyPredictor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts a per-inference cost (ms or mJ) of ONNX graphs on one device.

    Contract (scikit-learn's estimator contract, checked by the shared test suite):

    - ``__init__`` stores its keyword arguments unchanged; ``get_params``/``set_params``/
      ``clone`` come from :class:`~sklearn.base.BaseEstimator`.
    - ``fit(graphs, y)`` validates, discards any previous fit, and returns ``self``. Graphs
      are ModelProtos, paths, bytes or precomputed :class:`GraphFeatures`.
    - ``predict(graphs)`` returns an array of shape (n,), finite and >= 0, in the unit of
      the target; before ``fit`` it raises sklearn's ``NotFittedError``.
    - ``score`` is R² (from :class:`~sklearn.base.RegressorMixin`).
    - Fitted state lives in attributes ending in ``_`` and is exported as JSON-able data by
      :meth:`get_state`; :meth:`set_state` restores it (used by :meth:`save`/:meth:`load`).

    Subclasses implement :meth:`_fit_features`, :meth:`_predict_features`,
    :meth:`get_state` and :meth:`set_state`. Instances are not thread-safe while fitting.
    """

    name: ClassVar[str] = ""
    uses_kernel_times: ClassVar[bool] = False
    """Whether :meth:`fit` learns from per-kernel times (others ignore them)."""
    feature_set: ClassVar[str] = "onnxruntime-x86"
    """What the kind reads: ``"onnxruntime-x86"`` (:class:`GraphFeatures`, onnxruntime's
    kernels on x86) or ``"oplevel"`` (runtime-agnostic op-level features of the graph)."""

    # --- public API -------------------------------------------------------------------
    def fit(
        self,
        X: Sequence[GraphLike | GraphFeatures],
        y: Any,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
    ) -> Self:
        """Fit to measured values.

        Args:
            X: Graphs (or their features), length n.
            y: Measured values, shape (n,), in ms (latency) or mJ (energy), all > 0.
            kernel_times: Optional, per graph: :attr:`Measurement.kernel_times` (each
                kernel's time from onnxruntime's profiler) or None. Used by predictors
                with ``uses_kernel_times``; the others ignore it.

        Returns:
            self, fitted.

        Raises:
            ValueError: lengths differ, fewer than 2 graphs, or a value is not finite > 0.
        """
        feats = featurize(X)
        target = np.asarray(y, dtype=np.float64).ravel()
        if len(feats) != target.size:
            raise ValueError(f"got {len(feats)} graphs but {target.size} target values.")
        if target.size < 2:
            raise ValueError(f"need at least 2 measured graphs to fit, got {target.size}.")
        if not np.all(np.isfinite(target)) or np.any(target <= 0):
            bad = target[~(np.isfinite(target) & (target > 0))][:3]
            raise ValueError(
                f"target values must be finite and > 0, got {bad.tolist()}. Drop failed or "
                f"zero measurements before fitting."
            )
        if kernel_times is not None and len(kernel_times) != len(feats):
            raise ValueError(
                f"got {len(feats)} graphs but {len(kernel_times)} kernel_times entries; pass "
                f"one per graph (None where a graph has none)."
            )
        if self.uses_kernel_times:
            self._fit_kernel_times(feats, target, kernel_times)
        else:
            self._fit_features(feats, target)
        self.n_train_ = int(target.size)
        self.feature_version_ = FEATURE_VERSION
        self.nchwc_block_ = _nchwc_block_of(feats)
        self.runtime_version_ = _runtime_version()
        return self

    def predict(self, X: Sequence[GraphLike | GraphFeatures]) -> FloatArray:
        """Predicted values, shape (n,), in the unit of the fitted target (ms or mJ)."""
        check_is_fitted(self, "n_train_")
        return self.predict_features(featurize(X, nchwc_block=getattr(self, "nchwc_block_", None)))

    def predict_features(self, features: Sequence[GraphFeatures]) -> FloatArray:
        """Like :meth:`predict` on precomputed features (the fast path of a search)."""
        check_is_fitted(self, "n_train_")
        if not features:
            return np.zeros(0)
        versions = {f.feature_version for f in features}
        if versions != {self.feature_version_}:
            raise IncompatibleArtifactError(
                f"this predictor was fit on graph features version {self.feature_version_}, "
                f"got features version {sorted(versions)}: the running hwnas computes features "
                f"differently from the one that fit it. Refit it (`hwnas device profile "
                f"DEVICE`) or run the hwnas version that wrote it."
            )
        block = getattr(self, "nchwc_block_", None)
        blocks = {int(f.totals["nchwc_block"]) for f in features if "nchwc_block" in f.totals}
        if block is not None and blocks - {block}:
            raise IncompatibleArtifactError(
                f"this predictor was fit on graphs laid out for onnxruntime's NCHWc block "
                f"{block}, got features computed for block {sorted(blocks - {block})}: "
                f"compute them with graph_features(graph, nchwc_block={block}), or predict "
                f"from the graphs themselves."
            )
        pred = self._predict_features(list(features))
        return np.maximum(np.nan_to_num(pred, nan=0.0, posinf=0.0), 0.0)

    def save(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        target: str = "latency_ms",
        metrics: Mapping[str, float] | None = None,
    ) -> Path:
        """Write this fitted predictor as JSON (``meta.json`` + ``state.json``) to a folder.

        Args:
            path: Folder to create or overwrite.
            device: Device name recorded in the metadata (checked by :func:`load_predictor`).
            target: What ``y`` was (``"latency_ms"`` or ``"energy_mj"``).
            metrics: Held-out metrics to record (:func:`prediction_metrics` output).

        Returns:
            The folder.
        """
        return save_predictor(self, path, device=device, target=target, metrics=metrics)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> BaseLatencyPredictor:
        """Load a predictor saved by :meth:`save` (see :func:`load_predictor`)."""
        return load_predictor(path, device=device)

    def _fit_then(self, features: list[GraphFeatures], y: FloatArray) -> Self:
        """Fit on features without the public checks (for composite predictors)."""
        self._fit_features(features, y)
        return self

    # --- subclass hooks ---------------------------------------------------------------
    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        raise NotImplementedError

    def _fit_kernel_times(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> None:
        """:meth:`_fit_features` of a predictor with ``uses_kernel_times``."""
        raise NotImplementedError

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data (lists, numbers, strings)."""
        raise NotImplementedError

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state from :meth:`get_state` output."""
        raise NotImplementedError

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags


PREDICTORS: Registry[type[BaseLatencyPredictor]] = Registry("predictor")
"""Predictor classes by name."""


def _register(cls: type[BaseLatencyPredictor]) -> type[BaseLatencyPredictor]:
    PREDICTORS.add(cls.name, cls)
    return cls


def featurize(
    X: Sequence[GraphLike | GraphFeatures], *, nchwc_block: int | None = None
) -> list[GraphFeatures]:
    """Features of each graph (features pass through unchanged).

    ``nchwc_block`` is the NCHWc block the graphs are laid out for (default this machine's).
    """
    if isinstance(X, (str, bytes)) or not isinstance(X, Sequence):
        raise TypeError(
            f"X must be a sequence of graphs (ModelProto, path, bytes) or GraphFeatures, "
            f"got {type(X).__name__}. Wrap a single graph in a list."
        )
    return [graph_features(g, nchwc_block=nchwc_block) for g in X]


def _nchwc_block_of(features: Sequence[GraphFeatures]) -> int | None:
    """The one NCHWc block ``features`` were computed for (None if they do not say).

    Raises:
        ValueError: they were computed for different blocks.
    """
    blocks = {int(f.totals["nchwc_block"]) for f in features if "nchwc_block" in f.totals}
    if len(blocks) > 1:
        raise ValueError(
            f"the graphs' features were computed for different NCHWc blocks {sorted(blocks)}; "
            f"a device has one: compute them all with graph_features(graph, nchwc_block=N)."
        )
    return blocks.pop() if blocks else None


def _runtime_version() -> str | None:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return None


FORMAT = "hwnas-predictor"
FORMAT_VERSION = 1
"""Version of the on-disk layout; a newer file is refused with the versions named."""


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
        "feature_set": predictor.feature_set,
        "n_train": predictor.n_train_,
        "metrics": dict(metrics or getattr(predictor, "metrics_", {}) or {}),
        "choice": getattr(predictor, "choice_", None) or {},
        "left_out": list(getattr(predictor, "left_out_", None) or []),
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
    cls = PREDICTORS.get(str(meta.get("class")))
    fv, expected = meta.get("feature_version"), feature_version_of(cls)
    if fv != expected:
        raise StaleFeaturesError(
            f"predictor {str(folder)!r} was fit on {cls.feature_set} feature_version {fv!r}, "
            f"this hwnas computes feature_version {expected}. Refit it from the stored "
            f"measurements (`hwnas device fit {meta.get('device') or 'DEVICE'}`) or "
            f"`hwnas device profile {meta.get('device') or 'DEVICE'}`."
        )
    if device is not None and meta.get("device") not in (None, device):
        raise IncompatibleArtifactError(
            f"predictor {str(folder)!r} was fit for device {meta.get('device')!r}, not "
            f"{device!r}. Use that device's predictor, or run `hwnas device profile {device}`."
        )
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
    if meta.get("choice"):
        predictor.choice_ = meta["choice"]
    predictor.left_out_ = list(meta.get("left_out") or [])
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


def feature_version_of(cls: type[BaseLatencyPredictor]) -> int:
    """The feature version a kind's predictors are fitted on (by its ``feature_set``)."""
    if cls.feature_set == "oplevel":
        from latency_models.features._oplevel import OPLEVEL_VERSION

        return OPLEVEL_VERSION
    return FEATURE_VERSION


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
