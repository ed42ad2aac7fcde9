"""Automatic model choice: score candidates on held-out families, keep the best, refit.

Every candidate is scored on out-of-fold predictions whose folds hold out whole families of
graphs (``GroupKFold``), because a predictor is used on networks unlike its training set.
The best Spearman wins; candidates within ``tolerance`` of it are tied and the lowest MAPE
among them is taken. A candidate replaces the op-count baseline only on evidence: it must
out-rank the baseline in at least :data:`EVIDENCE` of bootstrap resamples of the held-out
families, because on a few families one candidate's lead is mostly chance (on 20 graphs
from four families, the MACs-proportional model led out of fold and fell up to 0.14 Spearman
under the baseline on unseen graphs). Every candidate's scores (or the reason it was
skipped) go into a JSON-able dict for the predictor's metadata.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from latency_models.predictors._baselines import MacsBaseline, OpCountBaseline, opcount_columns
from latency_models.predictors._robust import (
    LogHuberRidgeRegressor,
    check_labels,
    one_blas_thread,
    robust_sigma,
)

if TYPE_CHECKING:
    from typing_extensions import Self

FloatArray = NDArray[np.float64]
Factory = Callable[[], Any]

_logger = logging.getLogger(__name__)

BASELINE = "op-count"
"""The candidate no choice may be worse than by more than the tolerance (Spearman)."""

EVIDENCE = 0.9
"""Share of bootstrap resamples in which a candidate must beat the baseline to replace it."""


@dataclass(frozen=True)
class CandidateSpec:
    """A candidate model: how to build it, and how many training graphs it needs.

    ``members`` makes it the geometric mean of other candidates; its out-of-fold predictions
    are then combined from theirs instead of refitted.
    """

    factory: Factory
    min_graphs: int
    members: tuple[str, ...] = ()


class LogBoostRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Gradient-boosted trees on log(latency) with an absolute-error loss (robust to outliers).

    Trees do not extrapolate: beyond the training range they predict its edge.
    """

    def __init__(self, *, max_iter: int = 150, learning_rate: float = 0.08, seed: int = 0) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on features ``X`` (n, p) and latencies ``y`` (n,) in ms."""
        self.model_ = _boost(self.max_iter, self.learning_rate, self.seed, len(np.asarray(y)))
        with _one_thread():
            self.model_.fit(np.log1p(np.maximum(X, 0.0)), np.log(check_labels(y)))
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        with _one_thread():
            return np.asarray(np.exp(self.model_.predict(np.log1p(np.maximum(X, 0.0)))))


class ResidualBoostRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """An additive op-count model times a tree correction fitted to its log-residuals.

    The linear part extrapolates to larger graphs; the trees fix what it cannot express.
    """

    def __init__(
        self, *, columns: Sequence[int] | None = None, max_iter: int = 100, seed: int = 0
    ) -> None:
        self.columns = columns
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit on features ``X`` (n, p) and latencies ``y`` (n,) in ms."""
        t = check_labels(y)
        self.base_ = OpCountBaseline(columns=self.columns).fit(X, t)
        residual = np.log(t) - np.log(self.base_.predict(X))
        self.boost_ = _boost(self.max_iter, 0.05, self.seed, t.size)
        with _one_thread():
            self.boost_.fit(np.log1p(np.maximum(X, 0.0)), residual)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        with _one_thread():
            correction = self.boost_.predict(np.log1p(np.maximum(X, 0.0)))
        return np.asarray(self.base_.predict(X) * np.exp(correction))


class GeometricMeanRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Geometric mean of several fitted models' predictions (an ensemble in log space)."""

    def __init__(self, *, factories: Sequence[Factory] = ()) -> None:
        self.factories = factories

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Fit every member on the same data."""
        self.members_ = [make().fit(X, y) for make in self.factories]
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms, shape (n,)."""
        check_is_fitted(self)
        return _geometric_mean([m.predict(X) for m in self.members_])


def _one_thread() -> Any:
    """Limit OpenMP to one thread around gradient boosting.

    On a few hundred graphs the threads cost more than they save; on a busy 2-core machine
    they made model choice 10x slower.
    """
    from threadpoolctl import threadpool_limits  # sklearn dep

    return threadpool_limits(limits=1, user_api="openmp")


def _boost(max_iter: int, learning_rate: float, seed: int, n: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        loss="absolute_error", max_iter=max_iter, learning_rate=learning_rate,
        max_leaf_nodes=15, min_samples_leaf=max(5, min(20, n // 15)), l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    )  # fmt: skip


def default_candidates(feature_names: Sequence[str], *, seed: int = 0) -> dict[str, CandidateSpec]:
    """The standard candidates on op-level features (names as in ``OPLEVEL_FEATURES``)."""
    names = list(feature_names)
    if "mmacs_total" not in names:
        raise ValueError("feature_names must contain 'mmacs_total' (op-level features).")
    macs = names.index("mmacs_total")
    ops = opcount_columns(names)

    def ensemble() -> GeometricMeanRegressor:
        return GeometricMeanRegressor(
            factories=(
                lambda: OpCountBaseline(columns=ops),
                lambda: LogHuberRidgeRegressor(),
                lambda: ResidualBoostRegressor(columns=ops, seed=seed),
            )
        )

    return {
        "macs": CandidateSpec(lambda: MacsBaseline(macs_column=macs), 3),
        BASELINE: CandidateSpec(lambda: OpCountBaseline(columns=ops), 8),
        "log-ridge": CandidateSpec(lambda: LogHuberRidgeRegressor(), 10),
        "log-gbt": CandidateSpec(lambda: LogBoostRegressor(seed=seed), 40),
        "op-count+gbt": CandidateSpec(lambda: ResidualBoostRegressor(columns=ops, seed=seed), 40),
        "ensemble": CandidateSpec(ensemble, 40, members=(BASELINE, "log-ridge", "op-count+gbt")),
    }


def score_predictions(y: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """Spearman, Kendall, MAPE (%), share within ±10%, bias (median log(pred / y))."""
    from scipy import stats

    t = np.asarray(y, dtype=np.float64)
    p = np.maximum(np.asarray(pred, dtype=np.float64), 1e-12)
    rel = np.abs(p - t) / t
    constant = np.ptp(t) == 0 or np.ptp(p) == 0
    return {
        "spearman": math.nan if constant else float(stats.spearmanr(t, p).statistic),
        "kendall": math.nan if constant else float(stats.kendalltau(t, p).statistic),
        "mape": float(100.0 * np.mean(rel)),
        "within_10": float(np.mean(rel <= 0.10)),
        "bias": float(np.median(np.log(p / t))),
    }


@dataclass
class ModelChoice:
    """The chosen, refitted model and what every candidate scored out of fold."""

    name: str
    model: Any
    scores: dict[str, dict[str, Any]]
    split: dict[str, Any] = field(default_factory=dict)

    def predict(self, X: ArrayLike) -> FloatArray:
        """Latency in ms of the chosen model, shape (n,)."""
        return np.asarray(self.model.predict(X))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no model) for a predictor's metadata; NaN becomes None."""
        return {
            "chosen": self.name,
            "split": dict(self.split),
            "candidates": {
                name: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in s.items()}
                for name, s in self.scores.items()
            },
        }  # fmt: skip


def fold_indices(
    n: int, groups: Sequence[Any] | None, *, n_splits: int = 5, seed: int = 0
) -> tuple[list[tuple[NDArray[np.intp], NDArray[np.intp]]], dict[str, Any]]:
    """Train/test index pairs holding out whole groups, or single graphs without groups."""
    from sklearn.model_selection import GroupKFold, KFold

    labels = [] if groups is None else [str(g) for g in groups]
    if groups is not None and len(labels) != n:
        raise ValueError(f"groups has {len(labels)} entries for {n} graphs; give one per graph.")
    n_groups = len(set(labels))
    if n < 2:
        raise ValueError(f"need at least 2 graphs to score candidates, got {n}.")
    if n_groups >= 2:
        k = min(n_splits, n_groups)
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(n), groups=labels))
        return folds, {"kind": "group", "n_folds": k, "n_groups": n_groups, "n_graphs": n}
    _logger.warning(
        "fewer than 2 families among %d graphs: folds hold out single graphs, so scores "
        "are optimistic for unseen families. Pass groups= with a family per graph.",
        n,
    )
    k = min(n_splits, n)
    folds = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))
    return folds, {"kind": "graph", "n_folds": k, "n_groups": n_groups, "n_graphs": n}


def out_of_fold_predictions(
    factory: Factory, X: ArrayLike, y: ArrayLike, folds: Sequence[tuple[Any, Any]]
) -> FloatArray:
    """Each graph's prediction by a model fitted on the folds that leave it out."""
    A = np.asarray(X, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    pred = np.full(t.size, np.nan)
    for train, test in folds:
        pred[test] = factory().fit(A[train], t[train]).predict(A[test])
    return pred


def choose_model(
    X: ArrayLike,
    y: ArrayLike,
    *,
    candidates: Mapping[str, CandidateSpec],
    groups: Sequence[Any] | None = None,
    n_splits: int = 5,
    tolerance: float = 0.01,
    z_max: float = 3.5,
    seed: int = 0,
) -> ModelChoice:
    """Score every candidate out of fold, pick the best and refit it on all graphs.

    Labels that no candidate comes near from below (under half of every candidate's
    out-of-fold prediction, and more than ``z_max`` robust sigmas under the median
    log-ratio to the lowest prediction) are left out of the scores, not of the fits: a
    near-zero label would otherwise decide which candidate wins. Fitting them again without
    those labels was tried and hurt: graphs whose every node is dead are legitimately near
    zero, and without them the log-space models extrapolate wildly. Their indices are in
    ``split["excluded_from_scores"]``.

    Args:
        X: Features, shape (n, p).
        y: Latencies (ms), shape (n,), all > 0.
        candidates: Name -> :class:`CandidateSpec` (see :func:`default_candidates`).
        groups: Family label per graph; folds hold out whole families.
        n_splits: Most folds.
        tolerance: Spearman difference counted as a tie (then lower MAPE wins).
        z_max: Robust z-score under which a label is left out of the scores.
        seed: Seed of the fold assignment.

    Raises:
        ValueError: bad labels, or too few graphs for any candidate.
    """
    t = check_labels(y)
    A = np.asarray(X, dtype=np.float64)
    folds, split = fold_indices(t.size, groups, n_splits=n_splits, seed=seed)
    min_train = min(len(tr) for tr, _ in folds)
    scores: dict[str, dict[str, Any]] = {}
    for name, spec in candidates.items():
        done = [k for k in scores if "skipped" not in scores[k]]
        reason = _skip_reason(spec, min_train, done)
        scores[name] = {"skipped": reason} if reason else {}
    runnable = {k: candidates[k] for k, s in scores.items() if "skipped" not in s}
    with one_blas_thread():
        oof = _all_out_of_fold(runnable, A, t, folds)
    keep = _consensus_inliers(t, oof, z_max)
    split["excluded_from_scores"] = np.flatnonzero(~keep).tolist()
    for name, pred in oof.items():
        scores[name] = score_predictions(t[keep], pred[keep])
    if BASELINE in oof:
        cluster = None if groups is None else np.array([str(g) for g in groups])[keep]
        others = {k: p[keep] for k, p in oof.items() if k != BASELINE}
        shares = beats_shares(t[keep], others, oof[BASELINE][keep], cluster, seed=seed)
        for name, share in shares.items():
            scores[name]["beats_baseline"] = share
    name = _pick(scores, tolerance)
    skipped = {k: s["skipped"] for k, s in scores.items() if "skipped" in s}
    if skipped:
        _logger.warning(
            "model choice on %d graphs skipped %s; chose %r. Measure more graphs to try them.",
            t.size, skipped, name,
        )  # fmt: skip
    with one_blas_thread():
        model = candidates[name].factory().fit(A, t)
    return ModelChoice(name=name, model=model, scores=scores, split=split)


def _all_out_of_fold(
    candidates: Mapping[str, CandidateSpec], A: FloatArray, t: FloatArray, folds: Any
) -> dict[str, FloatArray]:
    oof: dict[str, FloatArray] = {}
    for name, spec in candidates.items():
        if spec.members:
            oof[name] = _geometric_mean([oof[m] for m in spec.members])
        else:
            oof[name] = out_of_fold_predictions(spec.factory, A, t, folds)
    return oof


def _geometric_mean(preds: Sequence[FloatArray]) -> FloatArray:
    return np.asarray(np.exp(np.mean([np.log(np.maximum(p, 1e-12)) for p in preds], axis=0)))


def _consensus_inliers(y: FloatArray, oof: Mapping[str, FloatArray], z_max: float) -> Any:
    """Mask of labels some candidate comes near from below (all True if none ran)."""
    if not oof:
        return np.ones(y.size, dtype=bool)
    r = np.log(y / np.min(list(oof.values()), axis=0))
    z = (r - np.median(r)) / max(robust_sigma(r), 1e-9)
    # both: a tight fit makes small misses many sigmas, and half is never timing noise
    return (z >= -z_max) | (r >= np.log(0.5))


def _skip_reason(spec: CandidateSpec, min_train: int, done: Sequence[str]) -> str:
    if min_train < spec.min_graphs:
        return f"needs {spec.min_graphs} training graphs per fold, folds have {min_train}"
    missing = [m for m in spec.members if m not in done]
    return f"members {missing} were skipped" if missing else ""


def beats_shares(
    y: FloatArray,
    preds: Mapping[str, FloatArray],
    baseline: FloatArray,
    clusters: NDArray[Any] | None,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Per candidate, the share of bootstrap resamples where it out-ranks ``baseline``.

    "Out-ranks" is a higher Spearman correlation with ``y``; every candidate is scored on
    the same resamples, ranking ``y`` and the baseline once per resample.
    Resamples whole clusters (families) with replacement where they are given, since
    errors are shared within a family; single graphs otherwise.
    """
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    if clusters is None:
        members = [np.array([i]) for i in range(y.size)]
    else:
        members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]

    def rho(truth: FloatArray, a: FloatArray) -> float:
        r = rankdata(a)
        return float(np.corrcoef(truth, r)[0, 1]) if np.ptp(r) else -1.0

    wins = dict.fromkeys(preds, 0)
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])
        truth = rankdata(y[idx])
        if np.ptp(truth) == 0:
            continue
        base = rho(truth, baseline[idx])
        for name, pred in preds.items():
            wins[name] += rho(truth, pred[idx]) > base
    return {name: n / n_boot for name, n in wins.items()}


def _pick(scores: Mapping[str, Mapping[str, Any]], tolerance: float) -> str:
    scored = {
        k: s for k, s in scores.items() if "skipped" not in s and not math.isnan(s["spearman"])
    }
    if BASELINE in scored:  # the baseline is replaced only on evidence
        scored = {k: s for k, s in scored.items()
                  if k == BASELINE or s.get("beats_baseline", 0.0) >= EVIDENCE}  # fmt: skip
    if not scored:
        raise ValueError(
            f"too few graphs to score any candidate: {dict(scores)}. Measure more graphs."
        )
    best = max(s["spearman"] for s in scored.values())
    floor = best - tolerance
    if BASELINE in scored:
        floor = max(floor, scored[BASELINE]["spearman"] - tolerance)
    tied = [k for k, s in scored.items() if s["spearman"] >= floor]
    return min(tied, key=lambda k: (scored[k]["mape"], list(scores).index(k)))
