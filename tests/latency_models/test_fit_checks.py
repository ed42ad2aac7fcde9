"""The fit path: label checks, labels left out, op-level kind, model choice and its record."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from latency_models import fit_predictor, kernel_graph, load_predictor, random_network
from latency_models.features._oplevel import OPLEVEL_FEATURES, FeatureError, oplevel_features
from latency_models.predictors import _select
from latency_models.predictors._choice import LogBoostRegressor, ResidualBoostRegressor
from latency_models.predictors._frozen import check_frozen, export_model, predict_frozen
from latency_models.predictors._oplevel_predictor import OpLevelPredictor, oplevel_families
from latency_models.predictors._persist import device_feature_set, training_data


def _cost(g: onnx.ModelProto) -> float:
    """A device whose time is a cost per node, per MAC and per byte (no kernel fusion)."""
    f = oplevel_features(g)
    col = {n: i for i, n in enumerate(OPLEVEL_FEATURES)}
    return float(
        0.02 + 0.004 * f[col["mmacs_total"]] + 0.003 * f[col["count_total"]]
        + 0.01 * f[col["mbytes_total"]]
    )  # fmt: skip


@pytest.fixture(scope="module")
def graphs() -> list[onnx.ModelProto]:
    out = [random_network(s, size=24) for s in range(24)]
    return out + [kernel_graph("conv", cin=c, cout=2 * c, size=12) for c in (8, 16, 24, 32)]


@pytest.fixture(scope="module")
def labels(graphs: list[onnx.ModelProto]) -> np.ndarray:
    return np.array([_cost(g) for g in graphs])


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_label_is_refused_naming_its_graph(
    graphs: list[onnx.ModelProto], labels: np.ndarray, bad: float
) -> None:
    y = labels.copy()
    y[5] = bad
    names = [f"net-{i}" for i in range(len(y))]
    with pytest.raises(ValueError, match=r"label 5 \('net-5'\).*latencies \(ms\) must be finite"):
        fit_predictor(graphs, y, names=names)
    with pytest.raises(ValueError, match=r"energies \(mJ\) must be finite"):
        fit_predictor(graphs, y, target="energy_mj", feature_set="oplevel")


def test_a_near_zero_label_is_named_and_left_out(
    graphs: list[onnx.ModelProto], labels: np.ndarray, tmp_path: Path
) -> None:
    y = labels.copy()
    y[3] = labels[3] / 200
    names = [f"net-{i}" for i in range(len(y))]
    with pytest.warns(UserWarning, match=r"left out 1 of 28 labels.*net-3"):
        p = fit_predictor(graphs, y, names=names, feature_set="oplevel", holdout=0)
    assert p.left_out_ == ["net-3"] and p.n_train_ == 27
    p.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["left_out"] == ["net-3"] and meta["feature_set"] == "oplevel"


def test_oplevel_fit_records_every_candidate_and_both_baselines(
    graphs: list[onnx.ModelProto], labels: np.ndarray, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        p = fit_predictor(graphs, labels, feature_set="oplevel", holdout=0)
    assert p.name == "op-level"
    cands = p.choice_["candidates"]
    assert {"macs", "op-count", "log-ridge", "log-gbt", "ensemble"} <= set(cands)
    assert "spearman" in cands["macs"] and "spearman" in cands["op-count"]
    assert p.choice_["chosen"] == f"op-level:{p.kind_}"
    assert p.choice_["split"]["kind"] == "group"  # folds hold out whole families
    p.save(tmp_path / "p", device="board")
    loaded = load_predictor(tmp_path / "p", device="board")
    np.testing.assert_array_equal(loaded.predict(graphs), p.predict(graphs))
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert set(meta["choice"]["candidates"]) == set(cands)


def test_x86_devices_keep_the_default_kind_and_record_the_rest(
    graphs: list[onnx.ModelProto], labels: np.ndarray
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        p = fit_predictor(graphs, labels, holdout=0)
    assert p.name == "additive" and p.choice_["chosen"] == "additive"
    assert {"additive", "additive-gbt", "macs", "op-count", "combined"} <= set(
        p.choice_["candidates"]
    )
    assert "skipped" in p.choice_["candidates"]["combined"]


def test_a_default_that_loses_to_a_baseline_is_replaced_with_a_warning(
    graphs: list[onnx.ModelProto], labels: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rigged(*args: object, **kwargs: object) -> dict[str, object]:
        cands = {"additive": {"spearman": 0.5}, "macs": {"spearman": 0.7},
                 "op-count": {"spearman": 0.9}}  # fmt: skip
        return {"candidates": cands, "split": {}, "op_level_choice": "op-count"}

    monkeypatch.setattr(_select, "score_kinds", rigged)
    with pytest.warns(UserWarning, match="'additive' lost to the 'op-count' baseline"):
        p = fit_predictor(graphs, labels, holdout=0)
    assert p.name == "op-level" and p.kind_ == "op-count"


def test_too_few_graphs_fall_back_to_a_simpler_kind(
    graphs: list[onnx.ModelProto], labels: np.ndarray
) -> None:
    with pytest.warns(UserWarning, match="'log-gbt' needs 40 graphs, got 12: fitted 'log-ridge'"):
        p = OpLevelPredictor(kind="log-gbt").fit(graphs[:12], labels[:12])
    assert p.kind_ == "log-ridge"
    with pytest.warns(UserWarning, match="no candidate could be scored.*fitted 'macs'"):
        p = OpLevelPredictor().fit(graphs[:3], labels[:3])
    assert p.kind_ == "macs" and np.all(p.predict(graphs[:3]) > 0)


def test_a_graph_the_features_cannot_read_is_named_with_the_reason(
    graphs: list[onnx.ModelProto], labels: np.ndarray
) -> None:
    broken: list[onnx.ModelProto | bytes] = [*graphs[:11], b"not an onnx model"]
    names = [f"net-{i}" for i in range(12)]
    with pytest.raises(FeatureError, match="graph 'net-11' is not a readable ONNX model"):
        fit_predictor(broken, labels[:12], names=names, feature_set="oplevel")


def test_frozen_boosted_trees_predict_like_sklearn_and_refuse_tampering() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 50, size=(120, len(OPLEVEL_FEATURES)))
    y = 0.1 + X[:, 0] * 0.01 + np.sin(X[:, 1] / 5) ** 2
    for model in (LogBoostRegressor(max_iter=30), ResidualBoostRegressor(max_iter=30)):
        model.fit(X, y)
        state = json.loads(json.dumps(export_model(model)))
        check_frozen(state, X.shape[1])
        np.testing.assert_allclose(predict_frozen(state, X), model.predict(X), rtol=1e-12)
    tree = state["forest"]["trees"][0]
    tree["left"][0] = 0  # the root pointing at itself would never end
    with pytest.raises(ValueError, match="not after its parent"):
        check_frozen(state, X.shape[1])


def test_families_cut_a_dominant_family_so_no_fold_tests_on_most_graphs(
    graphs: list[onnx.ModelProto],
) -> None:
    rows = np.vstack([oplevel_features(g) for g in graphs])
    fams = oplevel_families(rows, n_splits=5)
    sizes = [fams.count(f) for f in set(fams)]
    assert len(set(fams)) >= 5 and max(sizes) <= int(np.ceil(len(fams) / 5))


def _record(i: int, value: float, *, machine: str = "x86_64", block: str | None = "8") -> object:
    info = {"machine": machine} | ({"nchwc_block": block} if block else {})
    m = SimpleNamespace(latency_ms=value, runtime_version="1", host="h", host_info=info)
    return SimpleNamespace(id=i, graph_hash=f"{i:064x}", measurement=m, features=None)


def test_a_stored_label_that_is_no_latency_is_refused_naming_the_record() -> None:
    with pytest.raises(ValueError, match=r"stored record 7 .* has latency_ms 0.0"):
        training_data([_record(7, 0.0)])


def test_only_onnxruntime_on_x86_gets_the_kernel_features() -> None:
    ort, ov = SimpleNamespace(runtime="onnxruntime"), SimpleNamespace(runtime="openvino")
    assert device_feature_set(ort, [_record(1, 1.0)]) == "onnxruntime-x86"
    assert device_feature_set(ov, [_record(1, 1.0)]) == "oplevel"
    assert device_feature_set(ort, [_record(1, 1.0, block=None)]) == "oplevel"  # imported
    assert device_feature_set(ort, [_record(1, 1.0, machine="aarch64")]) == "oplevel"
