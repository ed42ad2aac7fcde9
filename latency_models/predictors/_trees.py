"""Boosted trees over graph totals (``graph-gbt``) and as a correction (``additive-gbt``).

Trees are exported to arrays right after fitting and traversed with numpy, so a saved
predictor predicts bit-identically without scikit-learn's estimators.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models.features._features import (
    GraphFeatures,
)
from latency_models.predictors._additive import FlopsPredictor, KernelAdditivePredictor
from latency_models.predictors._base import (
    BaseLatencyPredictor,
    FloatArray,
    _register,
)

if TYPE_CHECKING:
    pass

_logger = logging.getLogger(__name__)


# --- boosted trees as arrays ------------------------------------------------------------
_TOTAL_KEYS = (
    "n_kernels", "macs", "macs_int8", "weight_bytes", "activation_bytes",
    "max_activation_bytes", "mean_output_pixels", "int8_mac_share", "misaligned8_mac_share",
    "misaligned16_mac_share", "depthwise_mac_share", "n_conv", "n_dwconv", "n_conv1x1",
    "n_gemm", "n_eltwise", "n_memory", "n_quant", "n_pool",
)  # fmt: skip
_LOG_KEYS = {
    "macs", "macs_int8", "weight_bytes", "activation_bytes", "max_activation_bytes",
    "mean_output_pixels",
}  # fmt: skip


def graph_vector(f: GraphFeatures) -> list[float]:
    """Graph totals as the residual model's input row (sizes on a log scale)."""
    return [
        math.log1p(f.totals.get(k, 0.0)) if k in _LOG_KEYS else f.totals.get(k, 0.0)
        for k in _TOTAL_KEYS
    ]


def export_trees(gbr: Any) -> dict[str, Any]:
    """A fitted ``GradientBoostingRegressor`` (``init="zero"``) as JSON-able arrays."""
    trees = []
    for est in gbr.estimators_[:, 0]:
        t = est.tree_
        trees.append(
            {
                "left": t.children_left.tolist(),
                "right": t.children_right.tolist(),
                "feature": t.feature.tolist(),
                "threshold": t.threshold.tolist(),
                "value": t.value[:, 0, 0].tolist(),
            }
        )
    return {"learning_rate": float(gbr.learning_rate), "trees": trees}


def predict_trees(forest: Mapping[str, Any], x: FloatArray) -> FloatArray:
    """Sum of tree outputs times the learning rate, by numpy traversal; shape (n,).

    Matches sklearn's ``predict`` for ``init="zero"`` (a sample goes left when
    ``x[feature] <= threshold``, as in sklearn's ``Tree.apply``). All trees are traversed
    at once, a level at a time, as complete binary trees (:func:`_tree_arrays`): a node's
    children are ``2i + 1`` and ``2i + 2``, so a step is arithmetic, not a child lookup.
    Rows go in chunks that bound the memory.
    """
    feat, thr, val, depth, size = (
        forest["_arrays"] if "_arrays" in forest else _tree_arrays(forest)
    )
    x32 = np.ascontiguousarray(x, dtype=np.float32)  # sklearn compares float32 features
    n_rows, n_cols = x32.shape
    if feat.size and int(feat.max()) >= n_cols:  # a flat index would read another row
        raise ValueError(
            f"a tree splits on feature {int(feat.max())} of rows with {n_cols} features; the "
            "predictor file is damaged or from another hwnas. Refit it."
        )
    n_trees = len(forest["trees"])
    base = (np.arange(n_trees, dtype=np.int32) * size)[None, :]
    flat_x = x32.ravel()
    total = np.zeros(n_rows)
    chunk = max(1, _TRAVERSAL_ELEMENTS // max(n_trees, 1))
    for lo in range(0, n_rows, chunk):
        hi = min(n_rows, lo + chunk)
        row_base = (np.arange(lo, hi, dtype=np.int32) * n_cols)[:, None]
        node = np.zeros((hi - lo, n_trees), dtype=np.int32)
        for _ in range(depth):
            at = base + node
            right = flat_x.take(row_base + feat.take(at)) > thr.take(at)
            node = 2 * node + 1 + right
        total[lo:hi] = val.take(base + node).sum(axis=1)
    return np.asarray(total * float(forest["learning_rate"]), dtype=np.float64)


_TRAVERSAL_ELEMENTS = 1 << 16
"""Rows x trees traversed at once by :func:`predict_trees` (bounds its memory)."""

MAX_TREE_DEPTH = 10
"""Deepest tree the predictors fit or load: traversal stores each as a complete binary tree."""


def forest_state(forest: Mapping[str, Any]) -> dict[str, Any]:
    """A fitted forest as JSON-able data (without its traversal arrays)."""
    return {k: v for k, v in forest.items() if k != "_arrays"}


def forest_from_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`forest_state`: the forest with its traversal arrays rebuilt.

    Raises:
        ValueError: the state is not a well-formed forest (a damaged or tampered file).
    """
    forest = dict(state)
    _check_forest(forest)
    forest["_arrays"] = _tree_arrays(forest)
    return forest


def _check_forest(forest: Mapping[str, Any]) -> None:
    """Check a loaded forest: shapes, child indices, features and finite numbers.

    sklearn numbers a node's children after the node, so requiring that makes every path end
    (a tree cannot point back to itself) and bounds it by the tree's size.
    """
    rate, trees = forest.get("learning_rate"), forest.get("trees")
    if (
        not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or not isinstance(trees, list)
    ):
        raise ValueError("a forest needs a finite learning_rate and a list of trees.")
    for n, t in enumerate(trees):
        lt, rt, ft = (np.asarray(t[k]) for k in ("left", "right", "feature"))
        th, v = (np.asarray(t[k], dtype=np.float64) for k in ("threshold", "value"))
        size = lt.size
        if size == 0 or any(a.shape != (size,) for a in (lt, rt, ft, th, v)):
            raise ValueError(f"tree {n}: its node arrays are empty or of different lengths.")
        if any(a.dtype.kind not in "iu" for a in (lt, rt, ft)):
            raise ValueError(f"tree {n}: child and feature indices must be whole numbers.")
        internal, index = lt != -1, np.arange(size)
        if np.any((rt != -1) != internal) or np.any(
            internal & ((lt <= index) | (rt <= index) | (lt >= size) | (rt >= size) | (ft < 0))
        ):
            raise ValueError(
                f"tree {n}: a child index is out of range or not after its parent, or a "
                "feature index is negative."
            )
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(th[internal]))):
            raise ValueError(f"tree {n}: a threshold or value is not a finite number.")


def _tree_arrays(forest: Mapping[str, Any]) -> tuple[Any, ...]:
    """All trees as complete binary trees of one depth: (feature, threshold, value, depth, size).

    Tree ``t``'s node ``i`` is entry ``t * size + i`` of the flat arrays, its children
    ``2i + 1`` (``x[feature] <= threshold``) and ``2i + 2``; ``depth`` is the longest
    root-to-leaf path of any tree and ``size = 2**(depth + 1) - 1``. A leaf above the last
    level becomes a node with an infinite threshold (every row goes left) whose subtree
    holds the leaf's value.
    """
    trees = forest["trees"]
    depth = max((_depth(t["left"], t["right"]) for t in trees), default=0)
    if depth > MAX_TREE_DEPTH:
        raise ValueError(
            f"a tree of depth {depth} is deeper than MAX_TREE_DEPTH={MAX_TREE_DEPTH}; "
            f"refit with max_depth <= {MAX_TREE_DEPTH}."
        )
    size = 2 ** (depth + 1) - 1
    feat = np.zeros((max(len(trees), 1), size), dtype=np.int32)
    thr = np.full((max(len(trees), 1), size), np.inf)
    val = np.zeros((max(len(trees), 1), size))
    for i, t in enumerate(trees):
        lt, rt = np.asarray(t["left"]), np.asarray(t["right"])
        ft, th, v = np.asarray(t["feature"]), np.asarray(t["threshold"]), np.asarray(t["value"])
        src = np.array([0])  # sklearn node at each slot of the current level
        for level in range(depth + 1):
            slots = np.arange(2**level - 1, 2 ** (level + 1) - 1)
            leaf = lt[src] == -1
            feat[i, slots] = np.where(leaf, 0, ft[src])
            thr[i, slots] = np.where(leaf, np.inf, th[src])
            val[i, slots] = v[src]
            src = np.stack([np.where(leaf, src, lt[src]), np.where(leaf, src, rt[src])], 1).ravel()
    return feat.ravel(), thr.ravel(), val.ravel(), depth, size


def _depth(left: Sequence[int], right: Sequence[int]) -> int:
    """Longest root-to-leaf path of one sklearn tree (its ``children_left/right`` arrays)."""
    lt, rt = np.asarray(left), np.asarray(right)
    d, level = 0, np.array([0])
    while d <= MAX_TREE_DEPTH:  # deeper is refused: stop before a level outgrows memory
        level = level[lt[level] != -1]
        if not level.size:
            return d
        level = np.concatenate([lt[level], rt[level]])
        d += 1
    return d


def _fit_trees(
    x: FloatArray, r: FloatArray, *, n_estimators: int, max_depth: int, learning_rate: float,
    seed: int | None,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    from sklearn.ensemble import GradientBoostingRegressor

    if not (isinstance(max_depth, int) and 1 <= max_depth <= MAX_TREE_DEPTH):
        raise ValueError(
            f"max_depth must be an integer from 1 to {MAX_TREE_DEPTH}, got {max_depth!r}. Try 4."
        )
    gbr = GradientBoostingRegressor(
        init="zero",
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=0.8,
        min_samples_leaf=max(3, min(10, x.shape[0] // 20)),
        loss="huber",
        random_state=seed,
    ).fit(x, r)
    return forest_from_state(export_trees(gbr)), gbr


@_register
class GraphBoostPredictor(BaseLatencyPredictor):
    """Gradient boosted trees on graph totals, predicting log(y) minus a log-MAC trend.

    Good inside the training distribution, weak outside it (trees do not extrapolate):
    kept as a comparison and for graphs whose kernels the additive model cannot see.

    Args:
        n_estimators: Trees.
        max_depth: Depth of each tree.
        learning_rate: Shrinkage.
        seed: Random seed of the row subsampling.
    """

    name = "graph-gbt"

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        seed: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        base = FlopsPredictor()._fit_then(features, y)
        self.base_coef_ = base.coef_
        ly = np.log(y) - np.log(np.maximum(base._predict_features(features), 1e-9))
        x = np.array([graph_vector(f) for f in features])
        self.forest_, _ = _fit_trees(
            x, ly, n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        base = FlopsPredictor()
        base.coef_ = self.base_coef_
        b = np.maximum(base._predict_features(features), 1e-9)
        x = np.array([graph_vector(f) for f in features])
        return np.asarray(b * np.exp(predict_trees(self.forest_, x)), dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {"base_coef": self.base_coef_.tolist(), "forest": forest_state(self.forest_)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.base_coef_ = np.asarray(state["base_coef"], dtype=np.float64)
        self.forest_ = forest_from_state(state["forest"])


@_register
class HybridPredictor(BaseLatencyPredictor):
    """Kernel-additive model corrected by boosted trees on graph totals.

    ``y = additive(g) * exp(trees(totals(g), log additive(g)))``: the additive model carries
    the scale (it extrapolates to bigger or unseen architectures because it adds up kernels);
    the trees learn what it misses (cache effects, layout changes, threading) as a bounded
    log-ratio. The trees are fit on *out-of-fold* additive predictions, so they learn the
    additive model's error on unseen graphs rather than its training residuals.

    Args:
        alpha: Ridge strength of the additive part.
        n_estimators: Trees of the correction.
        max_depth: Depth of each tree.
        learning_rate: Shrinkage of the correction.
        n_folds: Folds for the out-of-fold additive predictions (min 2).
        seed: Seed of the folds and the trees.
    """

    name = "additive-gbt"

    def __init__(
        self,
        *,
        alpha: float = 1e-4,
        n_estimators: int = 150,
        max_depth: int = 2,
        learning_rate: float = 0.05,
        n_folds: int = 5,
        seed: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_folds = n_folds
        self.seed = seed

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        if not (isinstance(self.n_folds, int) and self.n_folds >= 2):
            raise ValueError(f"n_folds must be an int >= 2, got {self.n_folds!r}. Try 5.")
        n = len(features)
        oof = np.empty(n)
        folds = np.random.default_rng(self.seed).permutation(n) % min(self.n_folds, n)
        for fold in np.unique(folds):
            tr, te = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            m = KernelAdditivePredictor(alpha=self.alpha)
            m._fit_features([features[i] for i in tr], y[tr])
            m.__dict__["_warned_ops"] = {k.op for i in te for k in features[i].kernels}
            oof[te] = m._predict_features([features[i] for i in te])
        self.additive_ = KernelAdditivePredictor(alpha=self.alpha)._fit_then(features, y)
        self.additive_.n_train_ = n
        oof = np.maximum(oof, 1e-9)
        x = self._rows(features, oof)
        self.forest_, _ = _fit_trees(
            x, np.log(y) - np.log(oof), n_estimators=self.n_estimators,
            max_depth=self.max_depth, learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip

    @staticmethod
    def _rows(features: Sequence[GraphFeatures], base: FloatArray) -> FloatArray:
        return np.array(
            [[*graph_vector(f), math.log(b)] for f, b in zip(features, base, strict=True)]
        )

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        base = np.maximum(self.additive_._predict_features(features), 1e-9)
        # The correction is a bounded refinement (x0.25..x4), never the whole prediction.
        corr = np.clip(predict_trees(self.forest_, self._rows(features, base)), -1.4, 1.4)
        return np.asarray(base * np.exp(corr), dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {"additive": self.additive_.get_state(), "forest": forest_state(self.forest_)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.additive_ = KernelAdditivePredictor(alpha=self.alpha)
        self.additive_.set_state(state["additive"])
        self.additive_.n_train_ = 0
        self.forest_ = forest_from_state(state["forest"])
