"""Fitting a device from its store: op-level for imported devices, few-shot transfer, eval."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from latency_models import (
    DeviceSpec,
    MeasurementStore,
    add_device,
    device_predictor,
    random_network,
)
from latency_models.features._oplevel import oplevel_feature_dict
from latency_models.profiling._fit import describe_choice, evaluate_device, fit_device


def _ms(g: object, scale: float) -> float:
    f = oplevel_feature_dict(g)  # type: ignore[arg-type]
    return scale * (0.02 + 0.004 * f["mmacs_total"] + 0.003 * f["count_total"]
                    + 0.01 * f["mbytes_total"])  # fmt: skip


def _import(
    device: str, folder: Path, seeds: range, scale: float, *, mj_per_ms: float | None = None
) -> None:
    add_device(DeviceSpec(name=device, threads=1), save=False, replace=True)
    (folder / "graphs").mkdir(parents=True)
    lines = []
    for s in seeds:
        g = random_network(s, size=16)
        (folder / "graphs" / f"{s}.onnx").write_bytes(g.SerializeToString())
        ms = _ms(g, scale)
        line: dict[str, object] = {"onnx": f"graphs/{s}.onnx", "latency_ms": ms}
        if mj_per_ms is not None:
            line["energy_mj"] = mj_per_ms * ms * (1 + 0.1 * (s % 3))
        lines.append(json.dumps(line))
    (folder / "r.jsonl").write_text("\n".join(lines) + "\n")
    MeasurementStore(device).import_jsonl(folder / "r.jsonl")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


def test_an_imported_device_gets_the_oplevel_kind_and_an_eval_of_every_kind(
    tmp_path: Path,
) -> None:
    _import("board-a", tmp_path / "a", range(30), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor, path = fit_device("board-a")
        report = evaluate_device("board-a")
    assert predictor.name == "op-level" and path is not None
    assert device_predictor("board-a").choice_["chosen"].startswith("op-level:")
    assert report["feature_set"] == "oplevel" and report["repeat"] == {"n": 0}
    assert {"op-level", "macs", "op-count", "log-ridge", "additive"} <= set(report["kinds"])
    lines = describe_choice(predictor)
    assert any("op-count (baseline)" in line for line in lines)


def test_a_new_device_with_few_labels_starts_from_another_devices_predictor(
    tmp_path: Path,
) -> None:
    _import("board-a", tmp_path / "a", range(30), 1.0)
    _import("board-b", tmp_path / "b", range(100, 114), 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        alone, _ = fit_device("board-b", save=False)  # no other device saved yet
        assert alone.choice_["candidates"]["transfer"]["skipped"].startswith("no other device")
        fit_device("board-a")
        few, _ = fit_device("board-b")
    assert few.name == "transfer" and few.choice_["chosen"] == "transfer"
    assert few.choice_["candidates"]["transfer"]["references"] == ["board-a"]
    more = few.choice_["more_measurements"]  # a scaled copy of board-a: levelled off already
    assert more["more_would_help"] is False and more["suggest"] == 0
    assert any("more measurements would add little" in line for line in describe_choice(few))
    probe = [random_network(s, size=16) for s in range(200, 205)]
    loaded = device_predictor("board-b")
    np.testing.assert_array_equal(loaded.predict(probe), few.predict(probe))
    truth = np.array([_ms(g, 2.5) for g in probe])
    assert np.median(np.abs(few.predict(probe) / truth - 1)) < 0.25


def test_a_device_with_ten_labels_is_told_how_many_more_to_measure(tmp_path: Path) -> None:
    _import("board-c", tmp_path / "c", range(10), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor, _ = fit_device("board-c", save=False)
    assert predictor.choice_["more_measurements"]["suggest"] == 20
    assert "measuring about 20 more graphs should help most" in describe_choice(predictor)


def test_energy_goes_through_the_same_checks_and_choice(tmp_path: Path) -> None:
    _import("board-e", tmp_path / "e", range(24), 1.0, mj_per_ms=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor, path = fit_device("board-e", target="energy_mj")
    assert predictor.name == "op-level" and path is not None and path.name == "energy_mj"
    assert {"macs", "op-count"} <= set(predictor.choice_["candidates"])
    assert device_predictor("board-e", "energy_mj").target_ == "energy_mj"
