"""``op-level``: a predictor on runtime-agnostic op-level features, its model chosen per device.

Runtimes other than onnxruntime on x86 fuse and lay out kernels their own way, so the
kernel features of the other kinds describe them poorly. This kind reads what the graph
asks for (:mod:`latency_models.features._oplevel`) and, with ``kind="auto"``, picks among
the candidates of :func:`~._choice.default_candidates` (two baselines, a log-space ridge,
boosted trees, residual trees and their ensemble) by out-of-fold scores on folds that hold
out whole families of graphs. Every candidate's scores go into the predictor's metadata.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latency_models._errors import IncompatibleArtifactError
from latency_models.features._features import GraphFeatures
from latency_models.features._oplevel import (
    OP_KINDS,
    OPLEVEL_FEATURES,
    OPLEVEL_VERSION,
    FeatureError,
    oplevel_features,
)
from latency_models.predictors._base import BaseLatencyPredictor, FloatArray, _register
from latency_models.predictors._choice import choose_model, default_candidates
from latency_models.predictors._frozen import check_frozen, export_model, predict_frozen
from latency_models.predictors._robust import check_labels, one_blas_thread

if TYPE_CHECKING:
    from typing_extensions import Self


_logger = logging.getLogger(__name__)

STATE_VERSION = 1
"""Version of this kind's ``state.json``; a newer one is refused naming both versions."""
MACS_COLUMN = OPLEVEL_FEATURES.index("mmacs_total")
FALLBACK_KIND = "macs"
"""The kind fitted when too few graphs are measured to score any candidate."""


def oplevel_rows(X: Any, names: Sequence[str] | None = None) -> FloatArray:
    """Op-level feature rows, shape (n, len(OPLEVEL_FEATURES)), of graphs or rows.

    Args:
        X: Graphs (ModelProto, ``.onnx`` path, bytes) or op-level rows (a 2-D array, or
            1-D arrays of :data:`OPLEVEL_FEATURES` values).
        names: What error messages call each graph; default ``graph <index>``.

    Raises:
        FeatureError: a graph cannot be read or featurized; names the graph and why.
        TypeError: ``X`` holds :class:`GraphFeatures` (they describe onnxruntime's kernels).
    """
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return _checked(X)
    if isinstance(X, (str, bytes, Path)) or not isinstance(X, Sequence):
        raise TypeError(
            f"X must be a sequence of graphs or op-level rows, got {type(X).__name__}. Wrap a "
            "single graph in a list."
        )
    rows = []
    for i, g in enumerate(X):
        label = names[i] if names is not None else f"graph {i}"
        rows.append(_row(g, label))
    return _checked(np.vstack(rows) if rows else np.zeros((0, len(OPLEVEL_FEATURES))))


def _row(g: Any, label: str) -> FloatArray:
    import onnx

    if isinstance(g, GraphFeatures):
        raise TypeError(
            "the op-level predictor reads the graphs themselves, not GraphFeatures (those "
            "describe onnxruntime's x86 kernels): pass the ONNX graphs or op-level rows."
        )
    if isinstance(g, np.ndarray):
        return g
    if isinstance(g, (str, Path)):
        try:
            g = Path(g).read_bytes()
        except OSError as exc:
            raise FeatureError(f"graph {label!r} cannot be read: {exc}") from exc
    if isinstance(g, (bytearray, memoryview)):
        g = bytes(g)
    if not isinstance(g, (onnx.ModelProto, bytes)):
        raise TypeError(f"{label}: expected an ONNX graph or a row, got {type(g).__name__}.")
    return oplevel_features(g, name=label)


def _checked(rows: Any) -> FloatArray:
    A = np.asarray(rows, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] != len(OPLEVEL_FEATURES):
        raise IncompatibleArtifactError(
            f"op-level rows must have {len(OPLEVEL_FEATURES)} columns (OPLEVEL_FEATURES of "
            f"version {OPLEVEL_VERSION}), got shape {A.shape}. Recompute them from the graphs."
        )
    if not np.all(np.isfinite(A)):
        raise ValueError("op-level rows must be finite numbers.")
    return A


def oplevel_families(rows: Any, *, n_splits: int = 5) -> list[str]:
    """A structural family per graph, for folds that hold out whole families.

    A family is the set of op kinds a graph uses and its size class (log2 of its live node
    count). A family holding more than a fold's share of the graphs is cut into MACs ranges,
    so that no fold tests on most of the data.
    """
    A = _checked(rows)
    kinds = [OPLEVEL_FEATURES.index(f"count_{k}") for k in OP_KINDS]
    total = OPLEVEL_FEATURES.index("count_total")
    keys = [
        "".join("1" if r[k] > 0 else "0" for k in kinds) + f"/{int(math.log2(1 + r[total]))}"
        for r in A
    ]
    return cut_large_families(keys, A[:, MACS_COLUMN], n_splits=n_splits)


def cut_large_families(keys: Sequence[str], macs: Any, *, n_splits: int = 5) -> list[str]:
    """``keys`` with every family larger than a fold's share cut into ranges of ``macs``."""
    cap = max(2, math.ceil(len(keys) / max(n_splits, 2)))
    out = list(keys)
    for key in set(keys):
        members = [i for i, k in enumerate(keys) if k == key]
        if len(members) <= cap:
            continue
        by_macs = sorted(members, key=lambda i: float(macs[i]))
        for j, i in enumerate(by_macs):
            out[i] = f"{key}/{j * math.ceil(len(members) / cap) // len(members)}"
    return out


@_register
class OpLevelPredictor(BaseLatencyPredictor):
    """A cost model on op-level features; with ``kind="auto"`` the best candidate out of fold.

    Args:
        kind: ``"auto"`` (model choice) or a candidate of
            :func:`~._choice.default_candidates`: ``macs``, ``op-count``, ``log-ridge``,
            ``log-gbt``, ``op-count+gbt`` or ``ensemble``.
        n_splits: Folds of the model choice.
        seed: Seed of the folds and the trees.
    """

    name = "op-level"
    feature_set: ClassVar[str] = "oplevel"

    def __init__(self, *, kind: str = "auto", n_splits: int = 5, seed: int = 0) -> None:
        self.kind = kind
        self.n_splits = n_splits
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        kernel_times: Any = None,
        *,
        groups: Sequence[Any] | None = None,
        names: Sequence[str] | None = None,
        what: str = "latencies (ms)",
    ) -> Self:
        """Fit to graphs (or op-level rows) ``X`` and labels ``y`` (ms or mJ, all > 0).

        ``groups`` gives each graph's family for the choice's folds (default
        :func:`oplevel_families`). With too few graphs for the kind asked, a simpler kind is
        fitted and a warning says so. ``kernel_times`` is ignored.

        Raises:
            ValueError: a label is not finite > 0 (naming the graph), lengths differ, or
                ``kind`` is unknown.
            FeatureError: a graph cannot be featurized (naming it and why).
        """
        rows = oplevel_rows(X, names)
        t = check_labels(y, names, what=what)
        if len(rows) != t.size:
            raise ValueError(f"got {len(rows)} graphs but {t.size} target values.")
        if t.size < 2:
            raise ValueError(f"need at least 2 measured graphs to fit, got {t.size}.")
        candidates = default_candidates(OPLEVEL_FEATURES, seed=self.seed)
        if self.kind != "auto" and self.kind not in candidates:
            raise ValueError(
                f"kind must be 'auto' or one of {list(candidates)}, got {self.kind!r}."
            )
        self.choice_: dict[str, Any] = {}
        with one_blas_thread():
            model = self._fit_kind(rows, t, candidates, groups)
        self.model_ = export_model(model)
        self.n_train_ = int(t.size)
        self.feature_version_ = OPLEVEL_VERSION
        self.nchwc_block_ = None
        self.runtime_version_ = None
        return self

    def _fit_kind(
        self, rows: FloatArray, t: FloatArray, candidates: Any, groups: Sequence[Any] | None
    ) -> Any:
        """The fitted model of ``kind`` (chosen out of fold for ``"auto"``)."""
        if self.kind == "auto":
            model, self.kind_ = self._choose(rows, t, candidates, groups)
        else:
            self.kind_ = self.kind
            if t.size < candidates[self.kind].min_graphs:
                self.kind_ = _simpler(candidates, t.size)
                warnings.warn(
                    f"op-level kind {self.kind!r} needs {candidates[self.kind].min_graphs} "
                    f"graphs, got {t.size}: fitted {self.kind_!r} instead. Measure more graphs.",
                    UserWarning,
                    stacklevel=2,
                )
            model = candidates[self.kind_].factory().fit(rows, t)
        return model

    def _choose(
        self, rows: FloatArray, t: FloatArray, candidates: Any, groups: Sequence[Any] | None
    ) -> tuple[Any, str]:
        fams = (
            list(groups) if groups is not None else oplevel_families(rows, n_splits=self.n_splits)
        )
        try:
            choice = choose_model(
                rows, t, candidates=candidates, groups=fams, n_splits=self.n_splits,
                seed=self.seed,
            )  # fmt: skip
        except ValueError as exc:  # too few graphs to score anything
            warnings.warn(
                f"only {t.size} graphs: no candidate could be scored ({exc}); fitted "
                f"{FALLBACK_KIND!r}. Measure more graphs.",
                UserWarning,
                stacklevel=3,
            )
            self.choice_ = {"chosen": FALLBACK_KIND, "fallback": str(exc), "candidates": {}}
            return candidates[FALLBACK_KIND].factory().fit(rows, t), FALLBACK_KIND
        self.choice_ = choice.to_dict()
        skipped = {k: s["skipped"] for k, s in choice.scores.items() if "skipped" in s}
        if skipped:
            warnings.warn(
                f"only {t.size} graphs: skipped {sorted(skipped)} (too few graphs per fold); "
                f"chose {choice.name!r}. Measure more graphs to try them.",
                UserWarning,
                stacklevel=3,
            )
        return choice.model, choice.name

    def predict(self, X: Any) -> FloatArray:
        """Predicted values, shape (n,), of graphs or op-level rows."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_train_")
        return self.predict_features(oplevel_rows(X))

    def predict_features(self, features: Any) -> FloatArray:
        """Predicted values of op-level rows (2-D array or 1-D rows), shape (n,)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_train_")
        rows = oplevel_rows(features)
        if rows.shape[0] == 0:
            return np.zeros(0)
        pred = predict_frozen(self.model_, rows)
        return np.maximum(np.nan_to_num(pred, nan=0.0, posinf=0.0), 0.0)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {
            "state_version": STATE_VERSION,
            "features": list(OPLEVEL_FEATURES),
            "kind": self.kind_,
            "model": self.model_,
            "choice": self.choice_,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state; refuses another feature list or a newer state version."""
        version = state.get("state_version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise ValueError(
                f"op-level state_version {version!r}; this hwnas reads up to {STATE_VERSION}"
            )
        if list(state.get("features", [])) != list(OPLEVEL_FEATURES):
            raise ValueError("its op-level feature list differs from this hwnas's")
        check_frozen(state["model"], len(OPLEVEL_FEATURES))
        self.kind_ = str(state["kind"])
        self.model_ = state["model"]
        self.choice_ = dict(state.get("choice") or {})

    def _fit_then(self, features: Any, y: FloatArray) -> Self:
        return self.fit(features, y)


def _simpler(candidates: Mapping[str, Any], n: int) -> str:
    """The richest candidate (latest listed, no ensemble) that ``n`` graphs can fit."""
    fits = [k for k, s in candidates.items() if s.min_graphs <= n and not s.members]
    return fits[-1] if fits else FALLBACK_KIND
