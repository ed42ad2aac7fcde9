"""The two baselines every latency fit is compared with.

- :class:`MacsBaseline`: latency proportional to MACs, ``a * MACs + b``.
- :class:`OpCountBaseline`: an additive cost per op kind, ``sum_k (c_k * count_k +
  m_k * MACs_k + b_k * bytes_k) + intercept``, with every cost >= 0.

On devices other than the one hwnas's kernel predictors copy, the op-count baseline beat
every hwnas predictor kind, so a fitted predictor that cannot beat it should not be used.
Both are fitted with the robust log-space loss of :mod:`._robust`, so a few near-zero
labels do not decide them. They work on any non-negative feature matrix; give the columns
by index (``OPLEVEL_FEATURES.index(name)`` for op-level features).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from latency_models.predictors._robust import check_labels, fit_log_nonneg

if TYPE_CHECKING:
    from typing_extensions import Self

FloatArray = NDArray[np.float64]

OPCOUNT_PREFIXES = ("count_", "mmacs_", "mbytes_")
"""Op-level feature names the op-count baseline uses: per-kind counts, MACs and bytes."""


def opcount_columns(feature_names: Sequence[str]) -> list[int]:
    """Indices of the per-kind count, MAC and byte columns (not the totals)."""
    return [
        i
        for i, name in enumerate(feature_names)
        if name.startswith(OPCOUNT_PREFIXES)
        and not name.endswith(("_total", "_dead"))
        and name != "mbytes_weights"
    ]


class MacsBaseline(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Latency proportional to MACs: ``a * X[:, macs_column] + b`` with ``a, b >= 0``.

    Args:
        macs_column: Index of the MACs column.
    """

    def __init__(self, *, macs_column: int = 0) -> None:
        self.macs_column = macs_column

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on features ``X`` (n, p) and latencies ``y`` (n,) in ms."""
        t = check_labels(y)
        A = np.asarray(X, dtype=np.float64)
        if not 0 <= self.macs_column < A.shape[1]:
            raise ValueError(
                f"MacsBaseline.macs_column must index one of the {A.shape[1]} columns, got "
                f"{self.macs_column}."
            )
        coef, self.intercept_ = fit_log_nonneg(A[:, [self.macs_column]], t)
        self.ms_per_mac_unit_ = float(coef[0])
        self.n_features_in_ = A.shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        macs = np.asarray(X, dtype=np.float64)[:, self.macs_column]
        return np.asarray(self.ms_per_mac_unit_ * macs + self.intercept_)


class OpCountBaseline(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Non-negative additive cost per op kind (counts, MACs and bytes by kind).

    Args:
        columns: Indices of the count / MAC / byte columns; default all columns.
    """

    def __init__(self, *, columns: Sequence[int] | None = None) -> None:
        self.columns = columns

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on features ``X`` (n, p) and latencies ``y`` (n,) in ms."""
        t = check_labels(y)
        A = np.asarray(X, dtype=np.float64)
        cols = list(range(A.shape[1])) if self.columns is None else list(self.columns)
        if np.any(A[:, cols] < 0):
            raise ValueError("OpCountBaseline needs non-negative features (counts, MACs, bytes).")
        self.columns_ = cols
        self.coef_, self.intercept_ = fit_log_nonneg(A[:, cols], t)
        self.n_features_in_ = A.shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        A = np.asarray(X, dtype=np.float64)[:, self.columns_]
        return np.asarray(A @ self.coef_ + self.intercept_)
