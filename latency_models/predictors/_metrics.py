"""Accuracy of a predictor against measurements: the numbers a report quotes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def prediction_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """How close predictions are to measured values.

    Args:
        y_true: Measured values, shape (n,), same unit as ``y_pred`` (ms or mJ), all > 0.
        y_pred: Predicted values, shape (n,).

    Returns:
        ``within_5`` and ``within_10``: share (0..1) of predictions within ±5% / ±10% of the
        measurement; ``mape``: mean absolute percentage error in %; ``rmse``: root mean
        squared error in the values' unit; ``spearman`` and ``kendall``: rank correlations
        (-1..1, NaN when fewer than 2 distinct values); ``n``: number of pairs.

    Raises:
        ValueError: the arrays differ in length, are empty, or ``y_true`` has values <= 0.
    """
    from scipy import stats

    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and of equal length, got {t.size} and "
            f"{p.size} values."
        )
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise ValueError(
            "y_true must be finite measurements > 0 (relative errors divide by them); "
            f"got min {t.min()!r}. Drop failed measurements first."
        )
    rel = np.abs(p - t) / t
    constant = np.ptp(t) == 0 or np.ptp(p) == 0
    return {
        "n": float(t.size),
        "within_5": float(np.mean(rel <= 0.05)),
        "within_10": float(np.mean(rel <= 0.10)),
        "mape": float(100.0 * np.mean(rel)),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "spearman": float("nan") if constant else float(stats.spearmanr(t, p).statistic),
        "kendall": float("nan") if constant else float(stats.kendalltau(t, p).statistic),
    }
