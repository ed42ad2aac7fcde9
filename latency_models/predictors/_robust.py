"""Label checks and robust fitting in log space, so that no single label decides a fit.

Device runtimes drop dead branches, so a few networks of a public data set measure near zero
while the rest take milliseconds. A fit weighted by 1/y (relative least squares) then lets one
such label outweigh all others, and when features cannot explain the data it also shrinks
every prediction. The fits here minimise a robust loss of log(prediction / label) instead:
a ratio error counts the same above and below, and a label far off the rest has bounded
(Huber) or vanishing (Cauchy) influence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    from typing_extensions import Self

FloatArray = NDArray[np.float64]

_logger = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its sigma
_CAUCHY_C = 2.385  # Cauchy scale in sigmas: 95% efficiency on normal residuals


def check_labels(
    y: ArrayLike, names: Sequence[str] | None = None, *, what: str = "latencies (ms)"
) -> FloatArray:
    """Return ``y`` as a float array, or raise naming the first label that is no latency.

    Args:
        y: Measured latencies (ms) or energies (mJ), shape (n,).
        names: Graph names for the message; default ``item <index>``.
        what: What the labels are, for the message (``"energies (mJ)"``).

    Raises:
        ValueError: a label is <= 0, NaN or infinite, ``y`` is not 1-D or ``names`` has
            another length.
    """
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of {what}, got shape {arr.shape}.")
    if names is not None and len(names) != arr.size:
        raise ValueError(f"got {arr.size} labels but {len(names)} names; give one name a label.")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        i = int(bad[0])
        who = f"label {i}" + (f" ({names[i]!r})" if names is not None else "")
        raise ValueError(
            f"{who} is {arr[i]!r}; {what} must be finite and > 0 ({bad.size} bad in "
            f"{arr.size}). Remeasure or drop that graph."
        )
    return arr


def robust_sigma(residuals: ArrayLike) -> float:
    """Standard deviation estimated from the median absolute deviation (outlier-proof)."""
    r = np.asarray(residuals, dtype=np.float64)
    return float(_MAD_TO_SIGMA * np.median(np.abs(r - np.median(r))))


def suspicious_labels(
    y: ArrayLike,
    macs: ArrayLike | None = None,
    names: Sequence[str] | None = None,
    *,
    z_max: float = 3.5,
    z_max_high: float = 8.0,
    min_fraction: float = 0.1,
) -> list[str]:
    """Names of labels that are near zero or inconsistent with the rest, for a warning.

    With ``macs``, a robust fit of ``latency = a * MACs + b`` (see :func:`fit_log_nonneg`)
    predicts every label; a label is flagged when its log-residual is more than ``z_max``
    robust sigmas below the median residual, more than ``z_max_high`` above it, or when it
    is below ``min_fraction`` of its prediction. Latencies have a heavy upper tail that MACs
    do not explain (pools, element-wise ops), so the upper threshold is wider. Without
    ``macs``, labels more than ``z_max`` robust sigmas below the median log-latency are
    flagged.

    Args:
        y: Latencies (ms), shape (n,), all > 0 (see :func:`check_labels`).
        macs: The graphs' MACs (any unit, >= 0), shape (n,); live MACs where known.
        names: Graph names; default ``item <index>``.
        z_max: Robust z-score below which a label is flagged.
        z_max_high: Robust z-score above which a label is flagged (needs ``macs``).
        min_fraction: Flag labels below this fraction of what their MACs predict.

    Returns:
        Names of the flagged labels, in input order.
    """
    flagged = _flag(y, macs, names, z_max=z_max, z_max_high=z_max_high, min_fraction=min_fraction)
    return [name for name, _ in flagged]


def warn_suspicious_labels(
    y: ArrayLike,
    macs: ArrayLike | None = None,
    names: Sequence[str] | None = None,
    *,
    z_max: float = 3.5,
    z_max_high: float = 8.0,
    min_fraction: float = 0.1,
) -> list[str]:
    """Log one WARNING naming the suspicious labels and why; return their names.

    Arguments as for :func:`suspicious_labels`.
    """
    flagged = _flag(y, macs, names, z_max=z_max, z_max_high=z_max_high, min_fraction=min_fraction)
    if flagged:
        shown = "; ".join(f"{n}: {why}" for n, why in flagged[:20])
        more = f" (and {len(flagged) - 20} more)" if len(flagged) > 20 else ""
        _logger.warning(
            "%d of %d labels look wrong (near zero or inconsistent with the rest): %s%s. "
            "The robust fit limits their influence; remeasure them, or check whether the "
            "runtime dropped a dead branch.",
            len(flagged), np.size(y), shown, more,
        )  # fmt: skip
    return [n for n, _ in flagged]


def _flag(
    y: ArrayLike,
    macs: ArrayLike | None,
    names: Sequence[str] | None,
    *,
    z_max: float,
    z_max_high: float,
    min_fraction: float,
) -> list[tuple[str, str]]:
    arr = check_labels(y, names)
    label = list(names) if names is not None else [f"item {i}" for i in range(arr.size)]
    if macs is None:
        res = np.log(arr)
        ratio = np.ones_like(arr)
        what = "the median"
    else:
        m = np.asarray(macs, dtype=np.float64).reshape(-1, 1)
        coef, intercept = fit_log_nonneg(m, arr)
        pred = m[:, 0] * coef[0] + intercept
        res = np.log(arr / pred)
        ratio = arr / pred
        what = "latency ~ MACs"
    z = (res - np.median(res)) / max(robust_sigma(res), 1e-9)
    flagged = []
    for i in range(arr.size):
        if ratio[i] < min_fraction:
            flagged.append((label[i], f"{arr[i]:.3g} ms is {ratio[i]:.2g}x what its MACs predict"))
        elif z[i] < -z_max or (macs is not None and z[i] > z_max_high):
            flagged.append((label[i], f"{arr[i]:.3g} ms is {z[i]:+.1f} robust sigmas off {what}"))
    return flagged


def fit_log_nonneg(X: ArrayLike, y: ArrayLike, *, max_nfev: int = 200) -> tuple[FloatArray, float]:
    """Non-negative ``y ≈ X @ coef + intercept`` with a robust loss on log(prediction / y).

    Starts from plain non-negative least squares (absolute errors: near-zero labels barely
    pull), then a Huber pass (threshold 10%), then a Cauchy pass scaled to 2.385 robust sigmas
    of the Huber pass's log-residuals. Huber bounds an outlier's pull but not its leverage
    on a rarely used op's cost; Cauchy's influence vanishes far out, and the Huber start
    keeps the non-convex Cauchy fit near the right solution.

    Args:
        X: Non-negative features, shape (n, p).
        y: Labels > 0, shape (n,).
        max_nfev: Most function evaluations per robust pass.

    Returns:
        ``coef`` (shape (p,), all >= 0) and ``intercept`` (> 0), in ``y``'s unit.
    """
    from scipy.optimize import least_squares, nnls

    A = np.asarray(X, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    scale = np.abs(A).max(axis=0)
    used = scale > 0
    As = np.hstack([A[:, used] / scale[used], np.ones((A.shape[0], 1))])
    floor = 1e-4 * float(np.median(t))
    theta0, _ = nnls(As, t)
    theta0 = np.maximum(theta0, 0.0)
    theta0[-1] = max(theta0[-1], floor)
    lower = np.zeros(As.shape[1])
    lower[-1] = floor
    log_t = np.log(t)

    def residual(theta: FloatArray) -> FloatArray:
        return np.asarray(np.log(np.maximum(As @ theta, floor * 1e-3)) - log_t)

    def jacobian(theta: FloatArray) -> FloatArray:
        return np.asarray(As / np.maximum(As @ theta, floor * 1e-3)[:, None])

    theta = theta0
    f_scale = 0.1
    for loss in ("huber", "cauchy"):
        theta = least_squares(
            residual, np.maximum(theta, lower), jac=jacobian, bounds=(lower, np.inf),
            loss=loss, f_scale=f_scale, max_nfev=max_nfev, method="trf",
        ).x  # fmt: skip
        f_scale = _CAUCHY_C * max(robust_sigma(residual(theta)), 0.01)
    coef = np.zeros(A.shape[1])
    coef[used] = theta[:-1] / scale[used]
    return coef, float(theta[-1])


class LogHuberRidgeRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Huber regression of log(latency) on standardized log(1 + features), with an L2 penalty.

    A multiplicative (power-law) model: it captures effects that scale together, where an
    additive cost per op cannot.

    Args:
        alpha: L2 penalty on the standardized coefficients.
        epsilon: Huber threshold, in the fit's own scale estimate.
        columns: Column indices to use; default all.
    """

    def __init__(
        self, *, alpha: float = 10.0, epsilon: float = 1.35, columns: Sequence[int] | None = None
    ) -> None:
        self.alpha = alpha
        self.epsilon = epsilon
        self.columns = columns

    def _design(self, X: ArrayLike) -> FloatArray:
        A = np.asarray(X, dtype=np.float64)
        A = A if self.columns is None else A[:, list(self.columns)]
        return np.asarray((np.log1p(np.maximum(A, 0.0)) - self.mean_) / self.scale_)

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on features ``X`` (n, p) and latencies ``y`` (n,) in ms."""
        from sklearn.linear_model import HuberRegressor

        t = check_labels(y)
        A = np.asarray(X, dtype=np.float64)
        A = A if self.columns is None else A[:, list(self.columns)]
        L = np.log1p(np.maximum(A, 0.0))
        self.mean_ = L.mean(axis=0)
        std = L.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.huber_ = HuberRegressor(epsilon=self.epsilon, alpha=self.alpha, max_iter=1000)
        self.huber_.fit(self._design(X), np.log(t))
        # a power law far outside the training range can overflow; clamp to 20x beyond it
        self.log_range_ = (float(np.log(t.min()) - 3.0), float(np.log(t.max()) + 3.0))
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        log_pred = np.clip(self.huber_.predict(self._design(X)), *self.log_range_)
        return np.asarray(np.exp(log_pred))


def suspicious_label_reasons(
    y: ArrayLike,
    macs: ArrayLike | None = None,
    names: Sequence[str] | None = None,
    *,
    z_max: float = 3.5,
    z_max_high: float = 8.0,
    min_fraction: float = 0.1,
) -> list[tuple[str, str]]:
    """Like :func:`suspicious_labels`, with why each label is named: ``(name, why)`` pairs."""
    return _flag(y, macs, names, z_max=z_max, z_max_high=z_max_high, min_fraction=min_fraction)


def one_blas_thread() -> Any:
    """A context limiting BLAS (and OpenMP) to one thread while fitting small models.

    The fits here multiply matrices of a few hundred rows; OpenBLAS's threads cost far more
    than they save on them, and on a busy machine a Huber fit of 40 graphs took 3.5 s with
    them against 0.04 s without.
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(limits=1)
