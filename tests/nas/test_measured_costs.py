"""Budgets kept by measurement: measured costs in the loop, relative budgets, the quality gate."""

import json
import logging
import math
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _search_home import profiled_home

import nas
from latency_models import DeviceSpec, MeasurementError, MeasurementStore
from latency_models.measurement._measure import check_measurement
from latency_models.profiling._check import conv_stack
from nas import BudgetError
from nas.results._export import candidates
from nas.results._pareto import read_run
from nas.searching._base import _lowest, check_budget
from nas.searching._budget import parse_budget
from nas.searching._calibration import Calibration, PredictorTracker, quarter_errors
from nas.searching._costs import (
    DRIFT_EVERY,
    UNREACHABLE,
    MeasurementLane,
    predictor_warning,
    report_drift,
    session_noise_pct,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from profiled_home(tmp_path_factory)


# -- budgets relative to the base ----------------------------------------------------------


def test_relative_budget_parses_resolves_and_round_trips() -> None:
    budget = parse_budget("latency_ms=0.5x,memory_mb=2,accuracy_drop=1")
    assert budget.relative == {"latency_ms": 0.5} and not budget.is_resolved
    assert budget.cost_limits == {"memory_mb": 2.0}
    assert parse_budget(budget.to_dict()).to_dict() == budget.to_dict()
    resolved = budget.resolve({"latency_ms": 0.4})
    assert resolved.is_resolved and resolved.limits["latency_ms"] == pytest.approx(0.2)
    with pytest.raises(BudgetError, match="must be resolved"):
        budget.violations({"latency_ms": 1.0, "memory_mb": 1.0, "accuracy": 90.0})
    with pytest.raises(BudgetError, match="needs the base model's latency_ms"):
        budget.resolve({"latency_ms": None})
    with pytest.raises(BudgetError, match="only latency_ms, energy_mj and memory_mb can be"):
        parse_budget("accuracy_drop=1x")
    with pytest.raises(BudgetError, match=r"fraction of the base model such as 0\.5x"):
        parse_budget("latency_ms=halfx")
    assert parse_budget("latency_ms=0.5").fraction_hints() == [
        "latency_ms=0.5 is read as an absolute limit of 0.5 ms; for 0.5 of the base model's "
        "cost write latency_ms=0.5x"
    ]
    assert parse_budget("latency_ms=2").fraction_hints() == []


def test_budget_check_takes_the_fastest_of_the_cheapest_configs() -> None:
    # the int8 corner is the smallest but measures slower than the fp32 one (tiny layers)
    predicted = [{"latency_ms": 0.5, "memory_mb": 0.1}, {"latency_ms": 0.6, "memory_mb": 0.4}]
    measured = [
        {"latency_ms": 0.9, "energy_mj": None, "memory_mb": 0.1},
        {"latency_ms": 0.4, "energy_mj": None, "memory_mb": 0.4},
    ]
    low_predicted, low_measured, which = _lowest(predicted, measured)
    assert low_predicted == {"latency_ms": 0.5, "memory_mb": 0.1}
    assert low_measured == {"latency_ms": 0.4, "energy_mj": None, "memory_mb": 0.1}
    assert which == {"latency_ms": 1, "memory_mb": 0}
    base = {
        "latency_ms": 1.0,
        "memory_mb": 1.0,
        "measured": {"latency_ms": 1.0, "memory_mb": 1.0},
        "smallest_predicted": low_predicted,
        "smallest_measured": low_measured,
        "smallest_configs": {"latency_ms": "the fp32 corner", "memory_mb": "the int8 corner"},
    }

    def ctx(budget: str) -> Any:
        return SimpleNamespace(budget=parse_budget(budget), device=SimpleNamespace(name="dev"))

    check_budget(ctx("latency_ms=0.5"), base)  # the fp32 corner meets it by measurement
    with pytest.raises(
        BudgetError, match=r"latency_ms: the fp32 corner\) come to latency_ms 0\.4"
    ):
        check_budget(ctx("latency_ms=0.3"), base)
    with pytest.raises(BudgetError, match=r"already meets the budget \(latency_ms 1 \(measured\)"):
        check_budget(ctx("latency_ms=1.2"), base)


def test_a_resumed_search_keeps_its_budget_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    # a re-measured base under the kept limit (a busier machine at the start) is no refusal
    base = {
        "latency_ms": 1.0,
        "measured": {"latency_ms": 1.0},
        "smallest_measured": {"latency_ms": 0.4},
        "smallest_configs": {"latency_ms": "the fp32 corner"},
    }
    ctx = SimpleNamespace(budget=parse_budget("latency_ms=1.2"), device=SimpleNamespace(name="d"))
    logger = logging.getLogger("nas")
    logger.addHandler(caplog.handler)
    try:
        check_budget(ctx, base, resumed=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert "keeps the budget it started with, though the uncompressed model" in caplog.text
    assert "latency_ms 1 (measured) <= 1.2 on d" in caplog.text


def test_relative_energy_on_a_device_without_meter_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    # "no-such-task" would fail if the task were loaded: the refusal comes first
    with pytest.raises(BudgetError, match="has no energy meter"):
        nas.search("no-such-task", device="local-cpu", budget="energy_mj=0.5x", run_dir=tmp_path)
    assert not (tmp_path / "study.db").exists()


def test_bad_costs_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"costs must be one of \['auto', 'measured'"):
        nas.search("no-such-task", device="local-cpu", run_dir=tmp_path, costs="sometimes")


# -- the predictor's calibration and the quality gate ---------------------------------------


def test_calibration_learns_a_predictor_that_is_twice_too_slow_on_int8() -> None:
    rng = [0.13, 0.21, 0.34, 0.55, 0.89, 0.17, 0.29, 0.47, 0.76, 1.2, 0.4, 0.6]
    tracker = PredictorTracker(refit_every=4)
    errors = []
    for i, measured in enumerate(rng):
        share = float(i % 2)
        raw = measured * (2.0 if share else 1.1)  # int8 predicted 2x too slow, fp32 +10%
        predicted = tracker.calibration.apply(raw, share)
        errors.append(abs(predicted / measured - 1))
        tracker.add(i, raw_ms=raw, predicted_ms=predicted, measured_ms=measured, share=share)
    assert tracker.refits, "the calibration was never refit"
    assert max(errors[:2]) > 0.09  # uncorrected: 10% and 100% off
    assert max(errors[-4:]) < 0.08  # after three refits
    quarters = tracker.summary()["quarters_median_error_pct"]
    assert quarters[3] <= quarters[0] / 2
    again = Calibration.from_dict(json.loads(json.dumps(tracker.calibration.to_dict())))
    assert again == tracker.calibration
    assert Calibration().apply(0.3, 1.0) == 0.3  # the identity before any fit


def test_the_graphs_measured_at_the_start_calibrate_a_predictor_off_by_twice() -> None:
    # a short profile predicts everything 1.9x too slow: uncalibrated, a 0.9x budget
    # would reject every candidate before training, and nothing would ever be measured
    points = [
        {"graph": g, "predicted_ms": 1.9 * m, "measured_ms": m, "int8_share": s}
        for g, m, s in [("base", 0.020, 0.0), ("cheap0", 0.016, 1.0), ("cheap1", 0.011, 0.0),
                        ("cheap2", 0.017, 1.0), ("cheap3", 0.010, 0.0)]
    ]  # fmt: skip
    tracker = PredictorTracker(refit_every=4)
    tracker.start_from(points)
    assert tracker.calibration.terms != "identity" and tracker.calibration.n == 0
    assert tracker.calibration.apply(0.038, 0.0) == pytest.approx(0.020, rel=0.05)
    kept = PredictorTracker.from_summary(json.loads(json.dumps(tracker.summary())), refit_every=4)
    assert kept.calibration == tracker.calibration and len(kept.start) == 5
    for i in range(4):  # the refit uses the start's graphs beside the candidates
        kept.add(i, raw_ms=0.03, predicted_ms=0.016, measured_ms=0.016, share=0.0)
    assert kept.refits and kept.calibration.n == 4
    # too few graphs, or a tracker that has measured candidates already: left alone
    few = PredictorTracker()
    few.start_from(points[:2])
    assert few.calibration == Calibration()
    kept.start_from([dict(p, measured_ms=1.0) for p in points])
    assert kept.calibration.n == 4


def test_calibration_never_chosen_worse_than_the_predictor_on_noise() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    predicted = list(rng.uniform(0.02, 0.03, 12))  # tiny graphs: the spread is noise
    measured = [p * float(np.exp(rng.normal(0, 0.2))) for p in predicted]
    shares = [float(i % 3 == 0) for i in range(12)]
    chosen, scores = Calibration.choose(predicted, measured, shares)
    assert set(scores) == {"identity", "scale", "slope", "int8"}
    assert scores[chosen.terms] == min(scores.values()) <= scores["identity"]


def test_quarter_errors_and_noise_floor() -> None:
    rows = [{"error_pct": e} for e in (40, -40, 20, 10, -5, 5, 1, -1)]
    assert quarter_errors(rows) == [40.0, 15.0, 5.0, 1.0]

    class _M:
        def __init__(self, ms: float) -> None:
            self.latency_ms, self.runtime_version, self.host = ms, "ort", "h"

    class _R:
        def __init__(self, h: str, ms: float) -> None:
            self.graph_hash, self.measurement = h, _M(ms)

    records = [_R(f"g{i}", ms) for i in range(6) for ms in (1.0, 1.1)]
    assert session_noise_pct(records) == pytest.approx(10.0)
    assert session_noise_pct(records[:4]) is None  # too few repeated graphs


def test_quality_gate_names_the_figure_and_the_fix() -> None:
    poor = predictor_warning({"mape": 67.0, "within_10": 0.0}, "local-cpu")
    assert poor is not None and "held-out error 67.0%" in poor
    assert "hwnas device check local-cpu" in poor and "hwnas device profile local-cpu" in poor
    assert predictor_warning({"mape": 4.7, "within_10": 0.9}, "local-cpu") is None
    # good in absolute terms, but over twice a quiet device's floor
    assert "noise floor 2.0%" in str(predictor_warning({"mape": 12.0}, "d", noise_pct=2.0))
    noisy = predictor_warning({"mape": 3.0, "noisy_profile": 1.0, "profile_max_load": 3.2}, "d")
    assert noisy is not None and "busy" in noisy and "3.2" in noisy


def test_corrupt_measurements_are_refused() -> None:
    class _M:
        def __init__(self, ms: float, mj: float | None = None) -> None:
            self.latency_ms, self.energy_mj = ms, mj

    for bad in (_M(math.nan), _M(-1.0), _M(0.0), _M(1.0, -3.0), _M(1.0, math.inf)):
        with pytest.raises(MeasurementError, match="corrupt"):
            check_measurement(bad, "d")
    check_measurement(_M(0.1, 0.5), "d")


def test_the_store_never_keeps_a_corrupt_measurement(tmp_path: Path) -> None:
    from dataclasses import replace

    from latency_models import measure

    graph = conv_stack(8, 8, 1)
    good = measure(graph, "local-cpu", max_seconds=0.05, warmup_s=0.01)
    store = MeasurementStore("local-cpu", path=tmp_path / "m.sqlite")
    store.put(graph, good)
    for bad in (
        replace(good, latency_ms=math.nan),
        replace(good, latency_ms=-1.0),
        replace(good, energy_mj=-3.0),
    ):
        with pytest.raises(MeasurementError, match="refusing to store"):
            store.put(graph, bad)
    assert len(store) == 1


# -- the measurement lane ---------------------------------------------------------------


def test_local_lane_measures_only_while_nothing_trains(home: Path) -> None:
    graph = conv_stack(8, 8, 1).SerializeToString()
    lane = MeasurementLane(DeviceSpec("local-cpu"), max_seconds=0.1)
    lane.submit(3, graph)
    assert lane.wants_drain(capacity=1) and not lane.wants_drain(capacity=2)
    assert lane.collect(idle=False) == []  # a trial is training: wait
    [result] = lane.collect(idle=True)
    assert result.number == 3 and result.measurement.latency_ms > 0
    assert lane.pending == 0 and lane.seconds > 0


def test_the_lane_measures_the_base_again_and_a_drift_is_warned_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import optuna

    base = conv_stack(8, 16, 2).SerializeToString()
    lane = MeasurementLane(DeviceSpec("local-cpu"), max_seconds=0.1, base_graph=base)
    for number in range(2 * DRIFT_EVERY + 1):
        lane.submit(number, conv_stack(8, 8, 1).SerializeToString())
    assert len(lane.collect(idle=True)) == 2 * DRIFT_EVERY + 1
    assert [n for n, _ in lane.drift] == [DRIFT_EVERY, 2 * DRIFT_EVERY]
    study = optuna.create_study(directions=["maximize", "minimize"])
    first_ms = lane.drift[0][1]
    logger = logging.getLogger("nas")
    logger.addHandler(caplog.handler)
    try:  # a start measured at a third of today's latency: the device is now slower
        report_drift(study, lane, first_ms / 3, "local-cpu")
        report_drift(study, lane, first_ms / 3, "local-cpu")  # nothing new: nothing kept
    finally:
        logger.removeHandler(caplog.handler)
    kept = study.user_attrs["base_drift"]
    assert [e["candidates_measured"] for e in kept] == [DRIFT_EVERY, 2 * DRIFT_EVERY]
    assert kept[0]["ratio"] == pytest.approx(3.0)
    assert caplog.text.count("the device runs slower than when the budget was resolved") == 1
    assert "3.00x the " in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_remote_lane_goes_on_when_the_device_stops_answering_and_measures_on_return(
    home: Path,
) -> None:
    from latency_models.agent import make_server

    port = _free_port()
    device = DeviceSpec("remote-lane", location=f"http://127.0.0.1:{port}", token="t0ken-lane")
    lane = MeasurementLane(device, max_seconds=0.1)
    lane.submit(0, conv_stack(8, 8, 1).SerializeToString())
    [result] = lane.collect(idle=False, block=True)
    assert result.measurement is None and result.reason == UNREACHABLE
    assert lane.unmeasured == [0]
    server = make_server("127.0.0.1", port, token="t0ken-lane")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        [late] = lane.retry_unmeasured(idle=False, force=True)
        assert late.number == 0 and late.measurement.latency_ms > 0
        assert lane.unmeasured == []
    finally:
        server.shutdown()
        server.server_close()
        lane.shutdown()


# -- a search that measures what it trains ---------------------------------------------------


def test_search_measures_every_trained_candidate_and_exports_by_measurement(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def search(n_trials: int) -> nas.Run:
        return nas.search(
            "digits-resnet",
            device="local-cpu",
            objectives=("accuracy", "latency_ms"),
            budget="latency_ms=0.9x",
            n_trials=n_trials,
            run_dir=tmp_path,
            seed=0,
            recovery_steps=3,
            warm_start=False,
            verify=False,
            refit_every=2,
        )

    before = len(MeasurementStore("local-cpu"))
    logger = logging.getLogger("nas")  # its own handler does not reach caplog
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="nas"):
            run = search(6)
    finally:
        logger.removeHandler(caplog.handler)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["budget"] == {"latency_ms": "0.9x"}
    spread = settings["base_measured"]
    assert len(spread["base"]["latency_ms_runs"]) == 3 and spread["base"]["spread_pct"] >= 0
    limit = settings["resolved_budget"]["latency_ms"]
    assert limit == pytest.approx(0.9 * spread["base"]["latency_ms"])
    assert run.budget == {"latency_ms": limit}
    assert "resolved against the base model measured on local-cpu" in caplog.text
    assert run.study.metric_names == ["accuracy [%]", "latency_ms (measured) [ms]"]
    trained = [t for t in run.completed_trials() if not t.user_attrs["rejected_before_training"]]
    assert trained
    for trial in trained:
        attrs = trial.user_attrs
        assert attrs["cost_source"] == "measured"
        assert (
            trial.values[1] == attrs["measured"]["latency_ms"] != attrs["predicted"]["latency_ms"]
        )
        assert trial.constraints["latency_ms"] == pytest.approx(trial.values[1] / limit - 1)
    tracking = run.study.user_attrs["predictor_tracking"]
    assert [r["number"] for r in tracking["trials"]] == [t.number for t in trained]
    table = nas.pareto_table(tmp_path, include_all=True)
    assert f"latency predictor on this search's {len(trained)} measured candidates" in table
    assert len(MeasurementStore("local-cpu")) > before  # every measurement is kept
    # resuming keeps the limit resolved at the start, though the base is measured again
    again = search(7)
    assert again.budget == {"latency_ms": limit} and len(again.completed_trials()) >= 6
    results = read_run(tmp_path)
    rows, how = candidates(results)
    assert how == "measured"
    for row in rows:
        assert row.measured["latency_ms"] <= limit
    if rows:
        assert rows[0].accuracy == max(r.accuracy for r in rows)


def test_unreachable_device_searches_on_predictions_or_refuses_when_measured_is_required(
    home: Path, tmp_path: Path
) -> None:
    from latency_models import fit_predictor, predictor_path, training_data

    device = DeviceSpec("gone", location=f"http://127.0.0.1:{_free_port()}", token="t0ken-gone")
    feats, y, _ = training_data(MeasurementStore("local-cpu"))
    predictor = fit_predictor(feats, y, device="gone", holdout=0)
    predictor.save(predictor_path("gone", "latency_ms"), device="gone", target="latency_ms")
    settings = {"objectives": ("accuracy", "memory_mb"), "budget": "memory_mb=0.07",
                "recovery_steps": 2, "warm_start": False, "verify": False}  # fmt: skip
    with pytest.raises(MeasurementError, match="--costs measured needs the device to answer"):
        nas.search("digits-resnet", device=device, n_trials=1, run_dir=tmp_path / "m",
                   costs="measured", **settings)  # fmt: skip
    assert not (tmp_path / "m" / "study.db").exists()
    run = nas.search("digits-resnet", device=device, n_trials=2, run_dir=tmp_path / "a",
                     **settings)  # fmt: skip
    trained = [t for t in run.completed_trials() if not t.user_attrs["rejected_before_training"]]
    assert trained
    assert {t.user_attrs["cost_source"] for t in trained} == {UNREACHABLE}
    assert run.study.user_attrs["base"]["measured"]["latency_ms"] is None


# -- a predictor saved by an older hwnas -----------------------------------------------------


def test_a_predictor_of_an_older_feature_version_is_refit_from_the_store(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from latency_models import StaleFeaturesError, device_predictor, get_device
    from latency_models.predictors._base import feature_version_of
    from nas.searching._search import load_predictors

    copy = tmp_path / "home"
    shutil.copytree(home / "devices" / "local-cpu", copy / "devices" / "local-cpu")
    monkeypatch.setenv("HWNAS_HOME", str(copy))
    meta_path = copy / "devices" / "local-cpu" / "predictors" / "latency_ms" / "meta.json"
    meta = json.loads(meta_path.read_text())
    current = meta["feature_version"]
    meta_path.write_text(json.dumps({**meta, "feature_version": current - 1}))
    logger = logging.getLogger("nas")  # its own handler does not reach caplog
    logger.addHandler(caplog.handler)
    try:
        predictors, _ = load_predictors(get_device("local-cpu"))
    finally:
        logger.removeHandler(caplog.handler)
    assert "fit on an older feature version; refitting it" in caplog.text
    refit = predictors["latency_ms"]  # whichever kind the refit chose, on today's features
    assert refit.feature_version_ == feature_version_of(type(refit))
    assert json.loads(meta_path.read_text())["feature_version"] == refit.feature_version_
    assert type(device_predictor("local-cpu")) is type(refit)  # saved, and loads again

    # without the stored measurements nothing can be refit: the error names the fix
    meta_path.write_text(json.dumps({**meta, "feature_version": current - 1}))
    for db in (copy / "devices" / "local-cpu").glob("measurements.sqlite*"):
        db.unlink()
    with pytest.raises(StaleFeaturesError, match="hwnas device fit local-cpu"):
        load_predictors(get_device("local-cpu"))
