from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from latency_models.predictors._baselines import MacsBaseline, OpCountBaseline
from latency_models.predictors._choice import (
    BASELINE,
    EVIDENCE,
    _pick,
    beats_shares,
    choose_model,
    default_candidates,
    score_predictions,
)
from latency_models.predictors._robust import (
    LogHuberRidgeRegressor,
    check_labels,
    suspicious_labels,
    warn_suspicious_labels,
)
from latency_models.predictors._transfer import (
    TransferRegressor,
    label_curve,
    stack_references,
    suggest_next,
)

NAMES = ["count_conv", "count_add", "mmacs_conv", "mmacs_gemm", "mbytes_conv", "mmacs_total"]


def _additive(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latency = a non-negative cost per op and per MAC, 5% multiplicative noise."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.integers(0, 20, n), rng.integers(0, 20, n), rng.uniform(0, 50, n),
        rng.uniform(0, 50, n), rng.uniform(0, 5, n),
    ]).astype(float)  # fmt: skip
    X = np.hstack([X, X[:, [2, 3]].sum(axis=1, keepdims=True)])
    y = (X[:, :5] @ np.array([0.02, 0.01, 0.03, 0.015, 0.1]) + 0.1) * np.exp(
        rng.normal(0, 0.05, n)
    )
    return X, y


def _rho(y: np.ndarray, pred: np.ndarray) -> float:
    return float(stats.spearmanr(y, pred).statistic)


def _relative_least_squares(X: np.ndarray, y: np.ndarray):
    """The fit that failed: least squares weighted by 1/y (relative error)."""
    A = np.hstack([X, np.ones((len(y), 1))]) / y[:, None]
    coef = np.linalg.lstsq(A, np.ones(len(y)), rcond=None)[0]
    return lambda Z: np.hstack([Z, np.ones((len(Z), 1))]) @ coef


# --- label checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_check_labels_names_the_first_bad_item(bad: float) -> None:
    y = [1.0, 2.0, bad, 3.0, bad]
    names = ["a", "b", "net-c", "d", "e"]
    with pytest.raises(ValueError, match=r"label 2 \('net-c'\) is .*finite and > 0 \(2 bad"):
        check_labels(y, names)
    with pytest.raises(ValueError, match="label 2 is"):
        check_labels(y)


def test_check_labels_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 names"):
        check_labels([1.0, 2.0, 3.0], ["a", "b"])


def test_a_near_zero_label_among_100_is_named_and_warned(caplog) -> None:
    X, y = _additive(100, seed=1)
    y[7] = 0.02
    names = [f"net-{i}" for i in range(100)]
    assert "net-7" in suspicious_labels(y, X[:, 5], names)
    assert len(suspicious_labels(y, X[:, 5], names)) <= 3
    with caplog.at_level(logging.WARNING, logger="latency_models.predictors._robust"):
        flagged = warn_suspicious_labels(y, X[:, 5], names)
    assert "net-7" in flagged
    assert "net-7: 0.02 ms" in caplog.text


def test_without_macs_only_far_low_labels_are_named() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(1.0, 3.0, 50)
    y[[3, 40]] = [0.01, 0.05]
    assert suspicious_labels(y) == ["item 3", "item 40"]


# --- robust fits ----------------------------------------------------------------------------


def test_a_near_zero_label_barely_moves_the_robust_fit_but_wrecks_relative_lsq() -> None:
    X, y = _additive(100, seed=3)
    X_test, y_test = _additive(300, seed=103)
    bad = y.copy()
    bad[7] = 0.01
    robust_move = abs(
        _rho(y_test, OpCountBaseline().fit(X, y).predict(X_test))
        - _rho(y_test, OpCountBaseline().fit(X, bad).predict(X_test))
    )
    relative_move = abs(
        _rho(y_test, _relative_least_squares(X, y)(X_test))
        - _rho(y_test, _relative_least_squares(X, bad)(X_test))
    )
    assert robust_move < 0.02
    assert relative_move > 0.2


def test_robust_fit_is_not_biased_low_when_features_miss_something() -> None:
    X, y = _additive(200, seed=4)
    y = y * np.exp(np.random.default_rng(5).normal(0, 0.3, y.size))  # what features cannot see
    pred = OpCountBaseline().fit(X, y).predict(X)
    assert abs(np.median(np.log(pred / y))) < 0.05


def test_macs_baseline_recovers_an_affine_law() -> None:
    macs = np.linspace(1, 100, 40)[:, None]
    model = MacsBaseline(macs_column=0).fit(macs, 0.05 * macs[:, 0] + 0.3)
    assert model.ms_per_mac_unit_ == pytest.approx(0.05, rel=1e-3)
    assert model.intercept_ == pytest.approx(0.3, rel=1e-2)


@pytest.mark.parametrize(
    "make", [lambda: MacsBaseline(macs_column=5), OpCountBaseline, LogHuberRidgeRegressor]
)
def test_estimators_follow_the_sklearn_contract(make) -> None:
    X, y = _additive(60, seed=6)
    model = make()
    with pytest.raises(NotFittedError):
        model.predict(X)
    assert model.fit(X, y) is model
    pred = model.predict(X)
    assert pred.shape == (60,)
    assert np.all(np.isfinite(pred))
    assert np.all(pred > 0)
    assert not hasattr(clone(model), "n_features_in_")


# --- model choice ---------------------------------------------------------------------------


def _nonlinear(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ten families; the cost per MAC depends on bytes through a saturating curve."""
    rng = np.random.default_rng(seed)
    family = rng.integers(0, 10, n)
    scale = 1 + family / 3
    X = np.column_stack([
        rng.integers(1, 30, n), rng.integers(0, 20, n), rng.uniform(1, 100, n) * scale,
        rng.uniform(0, 5, n), rng.uniform(0.1, 5, n) * scale,
    ]).astype(float)  # fmt: skip
    X = np.hstack([X, X[:, [2, 3]].sum(axis=1, keepdims=True)])
    per_mac = 0.03 * (1 + 0.8 * np.tanh(X[:, 4] - 2))
    y = (0.02 * X[:, 0] + 0.01 * X[:, 1] + per_mac * X[:, 2] + 0.1) * np.exp(
        rng.normal(0, 0.04, n)
    )
    return X, y, family


def test_choice_picks_a_non_baseline_on_nonlinear_data_and_records_every_candidate() -> None:
    X, y, family = _nonlinear(300, seed=7)
    candidates = default_candidates(NAMES)
    choice = choose_model(X, y, candidates=candidates, groups=family)
    assert choice.name not in ("macs", BASELINE)
    assert set(choice.scores) == set(candidates)
    for name, scores in choice.scores.items():
        extra = set() if name == BASELINE else {"beats_baseline"}
        assert set(scores) == {"spearman", "kendall", "mape", "within_10", "bias"} | extra
        assert all(np.isfinite(v) for v in scores.values())
    best = choice.scores[choice.name]
    assert best["spearman"] >= choice.scores[BASELINE]["spearman"] - 0.01
    assert best["beats_baseline"] >= EVIDENCE  # replaced the baseline on evidence
    assert choice.split == {
        "kind": "group", "n_folds": 5, "n_groups": 10, "n_graphs": 300,
        "excluded_from_scores": [],
    }  # fmt: skip
    json.dumps(choice.to_dict())
    X_test, y_test, _ = _nonlinear(300, seed=8)
    held_out = score_predictions(y_test, choice.predict(X_test))
    assert held_out["spearman"] > 0.98


def test_beats_shares_count_bootstrap_wins_over_whole_families() -> None:
    rng = np.random.default_rng(3)
    y = rng.uniform(1, 10, 60)
    noisy = y * np.exp(rng.normal(0, 0.3, 60))
    other = y * np.exp(rng.normal(0, 0.3, 60))  # as good as the baseline: no evidence
    shares = beats_shares(y, {"exact": y * 1.1, "other": other}, noisy, None)
    assert shares["exact"] == 1.0  # exact ranks always win
    assert 0.05 < shares["other"] < 0.95
    assert beats_shares(y, {"noisy": noisy}, y, None)["noisy"] == 0.0
    # better on one family, worse on the other: resampling families finds no evidence
    family = np.repeat(["a", "b"], 30)
    mixed = np.where(family == "a", y, y * np.exp(rng.normal(0, 0.6, 60)))
    base = np.where(family == "a", noisy, y)
    assert beats_shares(y, {"mixed": mixed}, base, family)["mixed"] < EVIDENCE


def test_a_lead_without_evidence_keeps_the_baseline() -> None:
    base = {"spearman": 0.90, "mape": 20.0}
    lucky = {"spearman": 0.95, "mape": 15.0, "beats_baseline": 0.7}
    assert _pick({"macs": lucky, BASELINE: base}, 0.01) == BASELINE
    assert _pick({"macs": {**lucky, "beats_baseline": 0.95}, BASELINE: base}, 0.01) == "macs"


def test_near_zero_labels_are_left_out_of_the_scores_and_do_not_change_the_choice() -> None:
    X, y, family = _nonlinear(200, seed=14)
    candidates = default_candidates(NAMES)
    clean = choose_model(X, y, candidates=candidates, groups=family)
    bad = y.copy()
    bad[[5, 50, 150, 199]] = [0.01, 0.05, 0.1, 0.14]
    corrupted = choose_model(X, bad, candidates=candidates, groups=family)
    assert corrupted.split["excluded_from_scores"] == [5, 50, 150, 199]
    assert corrupted.name == clean.name
    X_test, y_test, _ = _nonlinear(300, seed=15)
    move = abs(
        score_predictions(y_test, clean.predict(X_test))["spearman"]
        - score_predictions(y_test, corrupted.predict(X_test))["spearman"]
    )
    assert move < 0.02


def test_choice_with_too_few_graphs_falls_back_with_a_warning(caplog) -> None:
    X, y, family = _nonlinear(24, seed=9)
    with caplog.at_level(logging.WARNING, logger="latency_models.predictors._choice"):
        choice = choose_model(X, y, candidates=default_candidates(NAMES), groups=family)
    assert choice.name in ("macs", BASELINE, "log-ridge")
    assert "needs 40 training graphs" in choice.scores["log-gbt"]["skipped"]
    assert "skipped" in choice.scores["ensemble"]
    assert "skipped" in caplog.text
    assert np.all(choice.predict(X) > 0)


def test_choice_without_families_warns_that_scores_are_optimistic(caplog) -> None:
    X, y, _ = _nonlinear(30, seed=10)
    with caplog.at_level(logging.WARNING, logger="latency_models.predictors._choice"):
        choice = choose_model(X, y, candidates=default_candidates(NAMES))
    assert choice.split["kind"] == "graph"
    assert "optimistic" in caplog.text


def test_choice_raises_when_nothing_can_be_scored() -> None:
    X, y, family = _nonlinear(3, seed=11)
    with pytest.raises(ValueError, match="too few graphs to score any candidate"):
        choose_model(X, y, candidates=default_candidates(NAMES), groups=family)


# --- transfer -------------------------------------------------------------------------------


def _device_pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24 op kinds; device B's cost per kind is device A's times 0.6-1.6, times 2.5."""
    rng = np.random.default_rng(seed)
    n, p = 400, 24
    X = rng.poisson(rng.uniform(0.5, 6, p), size=(n, p)) * rng.uniform(0.3, 3, (n, 1))
    X = np.hstack([X, X.sum(axis=1, keepdims=True)])
    cost_a = rng.lognormal(0, 1, p) * 0.05
    cost_b = cost_a * rng.uniform(0.6, 1.6, p) * 2.5
    y_a = (X[:, :p] @ cost_a + 0.1) * np.exp(rng.normal(0, 0.05, n))
    y_b = (X[:, :p] @ cost_b + 0.3) * np.exp(rng.normal(0, 0.05, n))
    return X, y_a, y_b


def test_transfer_with_20_labels_beats_fitting_from_scratch_on_them() -> None:
    transfer_mape, scratch_mape = [], []
    for seed in range(3):
        X, y_a, y_b = _device_pair(seed)
        reference = OpCountBaseline().fit(X[100:300], y_a[100:300]).predict(X)
        train = np.random.default_rng(seed).choice(100, 20, replace=False)
        test = np.arange(100, 400)
        Z = stack_references(reference, X[:, [-1]])
        transfer = TransferRegressor(n_reference=1).fit(Z[train], y_b[train])
        scratch = OpCountBaseline().fit(X[train], y_b[train])
        t = score_predictions(y_b[test], transfer.predict(Z[test]))
        s = score_predictions(y_b[test], scratch.predict(X[test]))
        assert t["spearman"] > s["spearman"] - 0.005
        transfer_mape.append(t["mape"])
        scratch_mape.append(s["mape"])
    assert np.mean(transfer_mape) < 0.8 * np.mean(scratch_mape)


def test_transfer_rejects_bad_reference_latencies() -> None:
    with pytest.raises(ValueError, match="reference latencies must be finite and > 0"):
        TransferRegressor(n_reference=1).fit(np.array([[1.0], [0.0], [2.0]]), [1.0, 2.0, 3.0])


def test_suggest_next_picks_new_distinct_graphs_far_from_the_chosen() -> None:
    rng = np.random.default_rng(12)
    pool = np.vstack([rng.normal(5, 0.1, (50, 3)), [[40.0, 40.0, 40.0]]]).clip(0)
    picks = suggest_next(pool, [0, 1], 5)
    assert len(picks) == len(set(picks)) == 5
    assert not {0, 1} & set(picks)
    assert picks[0] == 50  # the one outlier is the farthest from everything measured


def test_label_curve_reports_whether_more_labels_help() -> None:
    X, _, y_b = _device_pair(13)
    few = label_curve(X[:24], y_b[:24], factory=OpCountBaseline, fractions=(0.5, 1.0))
    many = label_curve(X[:300], y_b[:300], factory=OpCountBaseline, fractions=(0.5, 1.0))
    assert few["n"] == [12, 24] and many["n"] == [150, 300]
    assert few["more_would_help"] is True
    assert many["more_would_help"] is False
    json.dumps(many)
