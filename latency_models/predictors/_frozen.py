"""Fitted op-level models as plain JSON data, and their predictions by numpy alone.

The candidates of :mod:`._choice` are scikit-learn estimators; a saved predictor must not
be pickle. :func:`export_model` turns a fitted candidate into nested dicts of numbers
(histogram gradient-boosted trees as node arrays), :func:`predict_frozen` predicts from
them, and :func:`check_frozen` refuses a damaged or tampered state before it is used.
Predictions of a fitted predictor always go through the frozen form, so a loaded one
predicts bit-identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from latency_models.predictors._baselines import MacsBaseline, OpCountBaseline
from latency_models.predictors._choice import (
    GeometricMeanRegressor,
    LogBoostRegressor,
    ResidualBoostRegressor,
)
from latency_models.predictors._robust import LogHuberRidgeRegressor

FloatArray = NDArray[np.float64]

_MAX_NESTING = 4
"""Deepest nesting of frozen models (an ensemble of residual models is 2)."""


def export_model(model: Any) -> dict[str, Any]:
    """A fitted candidate of :func:`~._choice.default_candidates` as JSON-able data.

    Raises:
        TypeError: ``model`` is of a kind this module cannot freeze.
    """
    if isinstance(model, MacsBaseline):
        return _linear([model.macs_column], [model.ms_per_mac_unit_], model.intercept_)
    if isinstance(model, OpCountBaseline):
        return _linear(model.columns_, model.coef_, model.intercept_)
    if isinstance(model, LogHuberRidgeRegressor):
        n = len(model.mean_)
        return {
            "type": "log-linear",
            "columns": list(range(n))
            if model.columns is None
            else [int(c) for c in model.columns],
            "mean": model.mean_.tolist(),
            "scale": model.scale_.tolist(),
            "coef": model.huber_.coef_.tolist(),
            "intercept": float(model.huber_.intercept_),
            "log_range": [float(v) for v in model.log_range_],
        }
    if isinstance(model, LogBoostRegressor):
        return {"type": "log-boost", "forest": _export_hgb(model.model_)}
    if isinstance(model, ResidualBoostRegressor):
        return {
            "type": "residual-boost",
            "base": export_model(model.base_),
            "forest": _export_hgb(model.boost_),
        }
    if isinstance(model, GeometricMeanRegressor):
        return {"type": "geomean", "members": [export_model(m) for m in model.members_]}
    raise TypeError(f"cannot save a {type(model).__name__} as JSON.")


def _linear(columns: Any, coef: Any, intercept: float) -> dict[str, Any]:
    return {
        "type": "linear",
        "columns": [int(c) for c in columns],
        "coef": [float(c) for c in coef],
        "intercept": float(intercept),
    }


def _export_hgb(model: Any) -> dict[str, Any]:
    """A fitted ``HistGradientBoostingRegressor``'s trees as node arrays (leaves: child -1)."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)).tolist(),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)).tolist(),
                "feature": np.where(leaf, 0, nodes["feature_idx"].astype(np.int64)).tolist(),
                "threshold": np.where(leaf, 0.0, nodes["num_threshold"]).tolist(),
                "value": nodes["value"].astype(float).tolist(),
            }
        )
    baseline = float(np.asarray(model._baseline_prediction, dtype=np.float64).ravel()[0])
    return {"baseline": baseline, "trees": trees}


def predict_frozen(state: Mapping[str, Any], X: ArrayLike) -> FloatArray:
    """Predictions (ms or mJ), shape (n,), of a model frozen by :func:`export_model`."""
    A = np.asarray(X, dtype=np.float64)
    kind = state["type"]
    if kind == "linear":
        return np.asarray(A[:, state["columns"]] @ np.asarray(state["coef"]) + state["intercept"])
    if kind == "log-linear":
        L = np.log1p(np.maximum(A[:, state["columns"]], 0.0))
        z = (L - np.asarray(state["mean"])) / np.asarray(state["scale"])
        log_pred = np.clip(z @ np.asarray(state["coef"]) + state["intercept"], *state["log_range"])
        return np.asarray(np.exp(log_pred))
    if kind == "log-boost":
        return np.asarray(np.exp(_predict_hgb(state["forest"], np.log1p(np.maximum(A, 0.0)))))
    if kind == "residual-boost":
        correction = _predict_hgb(state["forest"], np.log1p(np.maximum(A, 0.0)))
        return np.asarray(predict_frozen(state["base"], A) * np.exp(correction))
    if kind == "geomean":
        logs = [np.log(np.maximum(predict_frozen(m, A), 1e-12)) for m in state["members"]]
        return np.asarray(np.exp(np.mean(logs, axis=0)))
    raise ValueError(f"unknown frozen model type {kind!r}")


def _predict_hgb(forest: Mapping[str, Any], X: FloatArray) -> FloatArray:
    """Baseline plus every tree's leaf value (shrinkage is already in the values)."""
    total = np.full(X.shape[0], float(forest["baseline"]))
    rows = np.arange(X.shape[0])
    for tree in forest["trees"]:
        left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
        feat, thr = np.asarray(tree["feature"]), np.asarray(tree["threshold"], dtype=np.float64)
        node = np.zeros(X.shape[0], dtype=np.intp)
        for _ in range(left.size):  # children come after parents: a path ends within size
            inner = left[node] != -1
            if not inner.any():
                break
            go_left = X[rows, feat[node]] <= thr[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        total += np.asarray(tree["value"], dtype=np.float64)[node]
    return total


def check_frozen(state: Any, n_features: int, depth: int = 0) -> None:
    """Refuse a frozen model that is not well formed (shapes, indices, finite numbers).

    Raises:
        ValueError: naming what is wrong.
    """
    if depth > _MAX_NESTING or not isinstance(state, Mapping):
        raise ValueError("a frozen model must be a JSON object of limited nesting.")
    kind = state.get("type")
    if kind == "linear":
        _check_columns(state["columns"], n_features)
        _check_numbers([*state["coef"], state["intercept"]], len(state["columns"]) + 1)
    elif kind == "log-linear":
        p = len(state["columns"])
        _check_columns(state["columns"], n_features)
        for key in ("mean", "scale", "coef"):
            _check_numbers(state[key], p)
        _check_numbers([state["intercept"], *state["log_range"]], 3)
    elif kind in ("log-boost", "residual-boost"):
        _check_hgb(state["forest"], n_features)
        if kind == "residual-boost":
            check_frozen(state["base"], n_features, depth + 1)
    elif kind == "geomean":
        if not state.get("members"):
            raise ValueError("a geometric mean needs members.")
        for m in state["members"]:
            check_frozen(m, n_features, depth + 1)
    else:
        raise ValueError(f"unknown frozen model type {kind!r}.")


def _check_columns(columns: Any, n_features: int) -> None:
    cols = np.asarray(columns)
    if cols.dtype.kind not in "iu" or np.any((cols < 0) | (cols >= n_features)):
        raise ValueError(f"column indices must be whole numbers in [0, {n_features}).")


def _check_numbers(values: Any, n: int) -> None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"expected {n} finite numbers, got {len(values)}.")


def _check_hgb(forest: Any, n_features: int) -> None:
    if not (
        isinstance(forest.get("baseline"), (int, float)) and math.isfinite(forest["baseline"])
    ):
        raise ValueError("a forest needs a finite baseline.")
    for n, t in enumerate(forest["trees"]):
        lt, rt, ft = (np.asarray(t[k]) for k in ("left", "right", "feature"))
        th, v = (np.asarray(t[k], dtype=np.float64) for k in ("threshold", "value"))
        size = lt.size
        if size == 0 or any(a.shape != (size,) for a in (rt, ft, th, v)):
            raise ValueError(f"tree {n}: its node arrays are empty or of different lengths.")
        if any(a.dtype.kind not in "iu" for a in (lt, rt, ft)):
            raise ValueError(f"tree {n}: child and feature indices must be whole numbers.")
        inner, index = lt != -1, np.arange(size)
        bad = (rt != -1) != inner
        bad |= inner & ((lt <= index) | (rt <= index) | (lt >= size) | (rt >= size))
        bad |= (ft < 0) | (ft >= n_features)
        if bad.any() or not (np.all(np.isfinite(v)) and np.all(np.isfinite(th))):
            raise ValueError(
                f"tree {n}: a child index is out of range or not after its parent, a feature "
                "index is out of range, or a number is not finite."
            )
