"""Few-shot start for a new device from devices already fitted, and which graphs to measure next.

Latencies on two devices are far more alike in rank than either is to MACs, so a new device
with 10-30 labels is fitted as a robust log-space function of the reference devices'
predictions (stacking): ``log y = mean_k log r_k + c + sum_k b_k (log r_k - mu_k) + g . z``,
where ``z`` are a few standardized op-level features. The ridge penalty pulls ``b`` and
``g`` to zero, so with few labels the model is "the references' geometric mean, rescaled",
and corrections grow only as labels support them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from latency_models.predictors._robust import check_labels

if TYPE_CHECKING:
    from typing_extensions import Self

FloatArray = NDArray[np.float64]


def stack_references(reference_ms: ArrayLike, features: ArrayLike | None = None) -> FloatArray:
    """The input matrix of :class:`TransferRegressor`: reference latencies, then features.

    Args:
        reference_ms: Reference devices' predicted (or measured) latencies, shape (n, k), ms.
        features: A few non-negative op-level features, shape (n, f), or None.
    """
    R = np.asarray(reference_ms, dtype=np.float64)
    R = R[:, None] if R.ndim == 1 else R
    if features is None:
        return R
    F = np.asarray(features, dtype=np.float64)
    return np.hstack([R, F[:, None] if F.ndim == 1 else F])


class TransferRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A new device's latency as a robust log-space function of reference devices' latencies.

    Args:
        n_reference: How many leading columns of ``X`` are reference latencies (ms, > 0);
            the rest are op-level features (see :func:`stack_references`).
        alpha: Ridge penalty pulling the model toward a rescaled reference geometric mean.
        epsilon: Huber threshold, in the fit's own scale estimate.
    """

    def __init__(self, *, n_reference: int = 1, alpha: float = 1.0, epsilon: float = 1.35) -> None:
        self.n_reference = n_reference
        self.alpha = alpha
        self.epsilon = epsilon

    def _split(self, X: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        A = np.asarray(X, dtype=np.float64)
        k = self.n_reference
        if not 1 <= k <= A.shape[1]:
            raise ValueError(
                f"TransferRegressor.n_reference must be in [1, {A.shape[1]}] (columns of X), "
                f"got {k}."
            )
        R = A[:, :k]
        if np.any(~np.isfinite(R) | (R <= 0)):
            raise ValueError("reference latencies must be finite and > 0 ms.")
        log_r = np.log(R)
        return log_r, log_r.mean(axis=1), np.log1p(np.maximum(A[:, k:], 0.0))

    def _design(self, log_r: FloatArray, feats: FloatArray) -> FloatArray:
        return np.hstack([(log_r - self.ref_mean_) / self.ref_scale_,
                          (feats - self.feat_mean_) / self.feat_scale_])  # fmt: skip

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on stacked references/features ``X`` (n, k + f) and the new device's ``y`` (ms)."""
        from sklearn.linear_model import HuberRegressor

        t = check_labels(y)
        log_r, offset, feats = self._split(X)
        self.ref_mean_, self.ref_scale_ = _moments(log_r)
        self.feat_mean_, self.feat_scale_ = _moments(feats)
        self.huber_ = HuberRegressor(epsilon=self.epsilon, alpha=self.alpha, max_iter=1000)
        self.huber_.fit(self._design(log_r, feats), np.log(t) - offset)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """The new device's latency in ms, shape (n,)."""
        check_is_fitted(self)
        log_r, offset, feats = self._split(X)
        return np.asarray(np.exp(offset + self.huber_.predict(self._design(log_r, feats))))


def _moments(A: FloatArray) -> tuple[FloatArray, FloatArray]:
    std = A.std(axis=0)
    return A.mean(axis=0), np.where(std > 0, std, 1.0)


def suggest_next(
    features_pool: ArrayLike,
    chosen_idx: Sequence[int],
    k: int,
    *,
    reference_ms: ArrayLike | None = None,
) -> list[int]:
    """Which ``k`` graphs of a pool to measure next: greedy farthest-point sampling.

    Each pick is the graph farthest from every graph already chosen (or picked), in
    standardized log(1 + features) space, plus standardized log reference latencies when
    given, so that measurements cover the space a predictor must interpolate. With nothing
    chosen yet, the first pick is the graph closest to the pool's centre.

    Args:
        features_pool: Non-negative features of the candidate graphs, shape (n, p).
        chosen_idx: Indices of graphs already measured.
        k: How many to suggest.
        reference_ms: Reference devices' latencies for the pool, shape (n,) or (n, r), ms.

    Returns:
        ``k`` pool indices (fewer if the pool runs out), in the order to measure them.
    """
    Z = np.log1p(np.maximum(np.asarray(features_pool, dtype=np.float64), 0.0))
    if reference_ms is not None:
        Z = np.hstack([Z, np.log(stack_references(reference_ms))])
    mean, scale = _moments(Z)
    Z = (Z - mean) / scale
    chosen = list(dict.fromkeys(int(i) for i in chosen_idx))
    if chosen:
        dist = np.min([np.linalg.norm(Z - Z[i], axis=1) for i in chosen], axis=0)
    else:
        dist = np.full(Z.shape[0], np.inf)
    picks: list[int] = []
    for _ in range(min(k, Z.shape[0] - len(chosen))):
        i = (
            int(np.argmin(np.linalg.norm(Z, axis=1)))
            if np.all(np.isinf(dist))
            else int(np.argmax(dist))
        )
        picks.append(i)
        dist = np.minimum(dist, np.linalg.norm(Z - Z[i], axis=1))
        dist[i] = -np.inf
        for j in chosen:
            dist[j] = -np.inf
    return picks


def label_curve(
    X: ArrayLike,
    y: ArrayLike,
    *,
    factory: Callable[[], Any],
    fractions: Sequence[float] = (0.5, 0.75, 1.0),
    repeats: int = 3,
    min_gain: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """Out-of-fold Spearman against the number of labels: would more measurements help?

    For each fraction of the labels, random subsets of that size are scored by 5-fold
    out-of-fold predictions (averaged over ``repeats``). If Spearman still rises by more than
    ``min_gain`` from the middle fraction to all labels, measuring more graphs should help.

    Returns:
        JSON-able dict: ``n`` (subset sizes), ``spearman`` (mean per size), ``gain_last``
        (rise over the last step) and ``more_would_help``.
    """
    from scipy import stats
    from sklearn.model_selection import KFold

    A = np.asarray(X, dtype=np.float64)
    t = check_labels(y)
    rng = np.random.default_rng(seed)
    sizes = sorted({max(6, round(f * t.size)) for f in fractions if round(f * t.size) <= t.size})
    curve = []
    for n in sizes:
        rhos = []
        for _ in range(repeats if n < t.size else 1):
            idx = rng.choice(t.size, size=n, replace=False)
            pred = np.empty(n)
            for tr, te in KFold(min(5, n), shuffle=True, random_state=seed).split(idx):
                model = factory().fit(A[idx[tr]], t[idx[tr]])
                pred[te] = model.predict(A[idx[te]])
            rhos.append(float(stats.spearmanr(t[idx], pred).statistic))
        curve.append(float(np.nanmean(rhos)))
    gain = curve[-1] - curve[-2] if len(curve) >= 2 else float("nan")
    return {
        "n": sizes,
        "spearman": curve,
        "gain_last": gain,
        "more_would_help": bool(gain > min_gain),
    }
