from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from latency_models import device_predictor, random_network
from nas.cli import main


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


def test_profile_then_eval_then_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from latency_models.profiling import _profile

    # nothing kept back for the final fit, so adaptive rounds fit in this tiny budget
    monkeypatch.setattr(_profile, "_final_fit_reserve_s", lambda *_: 0.0)
    argv = ["device", "profile", "local-cpu", "--budget-minutes", "0.15", "--max-seconds", "0.05"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "profiling local-cpu: 0 graphs already in the store" in out
    assert "  round 1: " in out  # adaptive sampling ran
    assert "latency_ms predictor saved to" in out
    assert "latency_ms: combined (kernel weight " in out  # the mix is reported
    p = device_predictor("local-cpu")
    pred = p.predict([random_network(7, size=32)])
    assert np.isfinite(pred).all() and pred[0] > 0
    assert p.metrics_  # held-out metrics recorded in meta.json

    assert main(["device", "eval", "local-cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("within_5", "within_10", "mape", "rmse", "spearman", "kendall"):
        assert key in report["metrics"] and key in report["baseline"]
    assert 0 <= report["kernel_weight"] <= 1
    assert "median_rse_pct" in report["noise"]

    # a second profile finds the first one's graphs in the store
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "graphs already in the store" in out and "profiling local-cpu: 0 graphs" not in out


def test_eval_without_profile_says_what_to_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "eval", "local-cpu"]) == 1
    assert "hwnas device profile local-cpu" in capsys.readouterr().err


def test_profile_rejects_bad_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "profile", "local-cpu", "--budget-minutes", "0"]) == 1
    assert "--budget-minutes must be > 0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def _bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from _task_fixtures import bundled_home

    for home in bundled_home(tmp_path_factory):
        from nas import get_task

        get_task("digits-resnet")  # train it first: profiling time is for measuring
        yield home


def test_profile_with_task_measures_its_variants(
    _bundled: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from latency_models import DeviceSpec, MeasurementStore, add_device

    monkeypatch.setenv("HWNAS_HOME", str(_bundled))  # digits-resnet trained once per run
    add_device(DeviceSpec(name="profile-task-test", threads=1), save=False, replace=True)
    argv = ["device", "profile", "profile-task-test", "--task", "digits-resnet"]
    assert main([*argv, "--budget-minutes", "0.25", "--max-seconds", "0.05"]) == 0
    assert "latency_ms predictor saved to" in capsys.readouterr().out
    inputs = {
        tuple(r.features["kernels"][0]["input_shape"])
        for r in MeasurementStore("profile-task-test").records(with_onnx=False)
        if r.features and r.features["kernels"]
    }
    assert (1, 1, 8, 8) in inputs  # a compressed digits-resnet (8x8 grey images) was measured


def test_profile_sweep_choice() -> None:
    """--sweep picks the generic graphs; a bad value is refused before anything is measured."""
    from latency_models import get_device
    from latency_models.profiling._profile import _candidates
    from nas import load_task
    from nas.searching._profile import _resolve_sweep, profile_device

    digits = load_task("digits-resnet")  # 8x8 px digits
    assert _resolve_sweep("auto", None) is False
    assert _resolve_sweep("auto", digits) is False
    assert _resolve_sweep("wide", digits) is True
    with pytest.raises(ValueError, match="sweep must be one of"):
        profile_device("local-cpu", sweep="huge", budget_minutes=1)
    spec = get_device("local-cpu")
    names = [
        n for n, _ in itertools.islice(_candidates(None, seed=0, start=0, spec=spec, wide=True), 6)
    ]
    assert all(n.startswith("w") for n in names)  # the wide sweep's graphs


def test_profile_keeps_time_for_the_final_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from latency_models.profiling import _profile

    lines: list[str] = []
    # a final fit estimated at more than the budget leaves no time for adaptive rounds
    monkeypatch.setattr(_profile, "FINAL_FIT_KERNEL_FITS", 10_000)
    result = _profile.profile_device(
        "local-cpu", budget_minutes=0.15, initial_share=0.9, max_seconds_per_graph=0.05,
        progress=lines.append,
    )  # fmt: skip
    assert result.rounds == 0
    assert any(line.startswith("  keeping ") for line in lines)


def test_initial_set_goes_on_until_a_fit_is_possible() -> None:
    from latency_models import MeasurementStore, training_data
    from latency_models.profiling import _profile

    # a share of the budget that measures one graph: the set goes on to MIN_GRAPHS (it
    # raised "only 1 graphs measured" before, with most of the budget unspent)
    result = _profile.profile_device(
        "local-cpu", budget_minutes=0.15, initial_share=0.001, max_seconds_per_graph=0.05
    )
    assert len(training_data(MeasurementStore("local-cpu"))[0]) >= _profile.MIN_GRAPHS
    assert result.paths["latency_ms"].is_dir()  # fitted and saved


def test_profiled_graphs_are_laid_out_for_the_measuring_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device behind an agent may block channels unlike this machine: its measurements
    say how (``host_info["nchwc_block"]``), and the features the profile stores follow."""
    import latency_models.measurement._bench as bench
    from latency_models import MeasurementStore, get_device, graph_hash, training_data
    from latency_models.measurement._host import host_nchwc_block
    from latency_models.profiling._profile import _measure_one

    other = 24 - host_nchwc_block()
    monkeypatch.setattr(bench, "host_nchwc_block", lambda: other)  # what the agent's host reports
    store = MeasurementStore("local-cpu")
    graph = random_network(3, size=16)
    measured = _measure_one("g", graph, get_device("local-cpu"), store, {"max_seconds": 0.05})
    assert measured is not None and measured[0].totals["nchwc_block"] == other
    stored = store.get(graph_hash(graph))
    assert stored is not None and stored.features is not None
    assert stored.features["totals"]["nchwc_block"] == other
    assert training_data(store)[0][0] == measured[0]
