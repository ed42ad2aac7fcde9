from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latency_models import (
    FEATURE_VERSION,
    PREDICTORS,
    GraphFeatures,
    IncompatibleArtifactError,
    KernelAdditivePredictor,
    PredictorNotFoundError,
    device_predictor,
    fit_predictor,
    graph_features,
    kernel_graph,
    load_predictor,
    prediction_metrics,
    predictor_path,
    quantize_qdq,
    random_network,
    training_data,
)
from latency_models.features._features import KernelFeatures
from latency_models.predictors._additive import MIN_KEY_GRAPHS
from latency_models.predictors._trees import _fit_trees, predict_trees


def _synthetic_cost(f: GraphFeatures) -> float:
    """A known kernel-additive cost with alignment penalties: what a device might do."""
    ms = 0.005
    for k in f.kernels:
        per_mac = 2e-8 if k.dtype == "fp32" else 6e-9
        if k.in_channels % 16 or k.out_channels % 16:
            per_mac *= 1.5
        ms += 0.002 + k.macs * per_mac + k.activation_bytes * 1e-8
    return ms


@pytest.fixture(scope="module")
def graphs() -> list[onnx.ModelProto]:
    out: list[onnx.ModelProto] = [random_network(s) for s in range(40)]
    out += [kernel_graph("conv", cin=c, cout=2 * c, size=16) for c in (8, 12, 16, 24, 32)]
    out += [kernel_graph("linear", cin=c, cout=64) for c in (64, 128, 256)]
    out += [quantize_qdq(random_network(s, size=32)) for s in range(100, 104)]
    return out


@pytest.fixture(scope="module")
def dataset(graphs: list[onnx.ModelProto]) -> tuple[list[GraphFeatures], np.ndarray]:
    feats = [graph_features(g) for g in graphs]
    y = np.array([_synthetic_cost(f) for f in feats])
    return feats, y


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


# --- contract suite over the registry ---------------------------------------------------
@pytest.mark.parametrize("name", PREDICTORS.names())
def test_contract(
    name: str,
    dataset: tuple[list[GraphFeatures], np.ndarray],
    graphs: list[onnx.ModelProto],
    tmp_path: Path,
) -> None:
    feats, y = dataset
    cls = PREDICTORS.get(name)
    extra = {}
    if getattr(cls, "needs_references", False):  # another device's fitted predictor
        extra["references"] = [KernelAdditivePredictor().fit(feats, 2 * y)]
    if cls.feature_set == "oplevel":  # reads the graphs, not onnxruntime's kernels
        feats = graphs  # type: ignore[assignment]
    est = cls()
    with pytest.raises(NotFittedError):
        est.predict(feats[:2])
    assert est.fit(feats, y, **extra) is est
    pred = est.predict(feats)
    assert pred.shape == (len(feats),)
    assert np.all(np.isfinite(pred)) and np.all(pred >= 0)
    assert est.score(feats, y) > 0.5
    # clone is unfitted and has the same params
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(twin, "n_train_")
    # save and load give identical predictions
    est.save(tmp_path / name, device="dev-a")
    loaded = load_predictor(tmp_path / name, device="dev-a")
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.predict(feats), pred)
    # a second fit discards the first
    est.fit(feats[:10], y[:10] * 2, **extra)
    assert est.n_train_ == 10


def test_default_predictor_is_accurate_on_held_out(
    dataset: tuple[list[GraphFeatures], np.ndarray],
) -> None:
    feats, y = dataset
    test = np.arange(len(feats)) % 4 == 0
    train_f = [f for f, t in zip(feats, test, strict=True) if not t]
    test_f = [f for f, t in zip(feats, test, strict=True) if t]
    p = fit_predictor(train_f, y[~test], device="dev-a")
    assert 0 <= p.metrics_["within_10"] <= 1  # recorded from its own held-out split
    m = prediction_metrics(y[test], p.predict_features(test_f))
    assert m["mape"] < 25
    assert m["spearman"] > 0.8


@pytest.mark.parametrize("depth", [1, 3, 7])
def test_trees_as_arrays_equal_sklearn(depth: int) -> None:
    rng = np.random.default_rng(depth)
    x = rng.normal(size=(300, 5))
    x[:50, 2] = 0.25  # a block of equal values: leaves above the last level
    r = np.sin(x[:, 0]) + x[:, 1] ** 2 + (x[:, 2] > 0.25)
    forest, gbr = _fit_trees(x, r, n_estimators=50, max_depth=depth, learning_rate=0.1, seed=0)
    x_new = np.vstack([rng.normal(size=(100, 5)), x[:60]])
    np.testing.assert_allclose(predict_trees(forest, x_new), gbr.predict(x_new), rtol=1e-12)


def test_tree_depth_is_bounded_before_fitting() -> None:
    x = np.zeros((20, 2))
    with pytest.raises(ValueError, match=r"max_depth must be an integer from 1 to 10, got 40"):
        _fit_trees(x, x[:, 0], n_estimators=5, max_depth=40, learning_rate=0.1, seed=0)


def test_additive_prediction_is_the_sum_of_its_kernel_costs(
    dataset: tuple[list[GraphFeatures], np.ndarray],
) -> None:
    # the prediction path shares rows between equal kernels; kernel_costs walks each kernel
    feats, y = dataset
    est = KernelAdditivePredictor().fit(feats, y)
    constant = est.coef_[-1]
    sums = [sum(c for _, c in est.kernel_costs(f)) + constant for f in feats[:20]]
    np.testing.assert_allclose(est.predict_features(feats[:20]), sums, rtol=1e-9)


def test_additive_predicts_a_kind_of_few_graphs_by_its_closest_well_seen_kind(
    tmp_path: Path,
) -> None:
    fp32 = [graph_features(random_network(s, size=16)) for s in range(8)]
    int8 = graph_features(quantize_qdq(random_network(100, size=16)))
    feats = [*fp32, int8]
    y = np.array([f.totals["macs"] for f in feats]) / 1e6 + 0.05  # any positive latencies
    est = KernelAdditivePredictor().fit(feats, y)
    only_int8 = {k.key for k in int8.kernels} - {k.key for f in fp32 for k in f.kernels}
    assert only_int8 and only_int8 <= set(est.pooled_)
    for key in est.pooled_:  # in fewer than MIN_KEY_GRAPHS graphs, but fit with weights of its own
        assert sum(key in {k.key for k in f.kernels} for f in feats) < MIN_KEY_GRAPHS
        assert key in est.keys_ and est._cost_key(key) not in est.pooled_
    # predicting, a kernel of such a kind costs what one of its closest kind would, and no
    # warning: its op was seen
    costs = est.kernel_costs(int8)
    pooled = [(k, c) for k, c in costs if k.key in est.pooled_]
    assert pooled
    for k, c in pooled:
        twin = KernelFeatures(**{**k.__dict__, "kind": est._cost_key(k.key).split(".")[0],
                                 "dtype": est._cost_key(k.key).split(".")[1]})  # fmt: skip
        assert c == pytest.approx(dict(est.kernel_costs(GraphFeatures((twin,), {})))[twin])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = est.predict_features([int8])
    assert pred[0] == pytest.approx(sum(c for _, c in costs) + est.coef_[-1], rel=1e-9)
    est.save(tmp_path / "p", device="local-cpu")
    loaded = load_predictor(tmp_path / "p")
    assert loaded.pooled_ == est.pooled_
    np.testing.assert_array_equal(loaded.predict_features([int8]), pred)


def test_unknown_op_warns_once_naming_it(dataset: tuple[list[GraphFeatures], np.ndarray]) -> None:
    feats, y = dataset
    est = KernelAdditivePredictor().fit(feats, y)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(16, 10)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning, match="'Softmax'") as record:
        pred = est.predict([model])
    assert len([r for r in record if "Softmax" in str(r.message)]) == 1
    assert np.isfinite(pred[0]) and pred[0] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.predict([model])  # warned once already


def test_fit_rejects_bad_targets(dataset: tuple[list[GraphFeatures], np.ndarray]) -> None:
    feats, _ = dataset
    with pytest.raises(ValueError, match="finite and > 0"):
        KernelAdditivePredictor().fit(feats[:3], [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="3 graphs but 2"):
        KernelAdditivePredictor().fit(feats[:3], [1.0, 2.0])
    with pytest.raises(ValueError, match="alpha must be"):
        KernelAdditivePredictor(alpha=-1).fit(feats[:3], [1.0, 1.0, 2.0])


# --- persistence errors -----------------------------------------------------------------
def _saved(dataset: tuple[list[GraphFeatures], np.ndarray], path: Path) -> Path:
    feats, y = dataset
    KernelAdditivePredictor().fit(feats, y).save(path, device="dev-a")
    return path


def test_load_errors_name_the_fix(
    dataset: tuple[list[GraphFeatures], np.ndarray], tmp_path: Path
) -> None:
    path = _saved(dataset, tmp_path / "p")
    with pytest.raises(IncompatibleArtifactError, match="fit for device 'dev-a', not 'dev-b'"):
        load_predictor(path, device="dev-b")
    meta = json.loads((path / "meta.json").read_text())
    meta["feature_version"] = FEATURE_VERSION + 7
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        IncompatibleArtifactError,
        match=rf"feature_version {FEATURE_VERSION + 7}.*computes feature_version "
        rf"{FEATURE_VERSION}.*hwnas device profile dev-a",
    ):
        load_predictor(path)
    meta["feature_version"], meta["format_version"] = FEATURE_VERSION, 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleArtifactError, match=r"format_version 99.*reads up to 1"):
        load_predictor(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(IncompatibleArtifactError, match="not a hwnas predictor file"):
        load_predictor(path)
    with pytest.raises(FileNotFoundError, match=r"meta\.json"):
        load_predictor(tmp_path / "nowhere")


def test_device_predictor_missing_says_to_profile() -> None:
    with pytest.raises(PredictorNotFoundError, match="hwnas device profile my-board"):
        device_predictor("my-board")
    with pytest.raises(ValueError, match="target must be one of"):
        predictor_path("my-board", "latency_s")


def test_device_predictor_roundtrip(dataset: tuple[list[GraphFeatures], np.ndarray]) -> None:
    feats, y = dataset
    p = fit_predictor(feats, y, device="my-board")
    p.save(predictor_path("my-board"), device="my-board", metrics=p.metrics_)
    loaded = device_predictor("my-board")
    np.testing.assert_array_equal(loaded.predict(feats), p.predict(feats))
    assert loaded.metrics_["within_10"] == p.metrics_["within_10"]


@pytest.mark.parametrize("name", ["additive", "combined"])
def test_loads_without_torch_in_subprocess(
    name: str, dataset: tuple[list[GraphFeatures], np.ndarray], tmp_path: Path
) -> None:
    feats, y = dataset
    est = fit_predictor(feats, y, name=name)
    est.save(tmp_path / "p")
    graphs = [random_network(s, size=32) for s in (500, 501)]
    paths = []
    for i, g in enumerate(graphs):
        onnx.save(g, str(tmp_path / f"g{i}.onnx"))
        paths.append(str(tmp_path / f"g{i}.onnx"))
    code = (
        "import json, sys\n"
        "from latency_models import load_predictor\n"
        f"p = load_predictor({str(tmp_path / 'p')!r})\n"
        f"pred = p.predict({paths!r}).tolist()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps(pred))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HWNAS_HOME": str(tmp_path / "home")},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == est.predict(paths).tolist()


# --- real measurements of arbitrary graphs, imported as JSONL ---------------------------
def _time_graphs(
    models: list[onnx.ModelProto], passes: int = 3, window_s: float = 0.03
) -> list[float]:
    """Each graph's latency (ms): the lowest of ``passes`` window medians, passes interleaved.

    The graphs are timed in turn, ``passes`` times over, so a burst of load from another
    process lands in one window of a graph, not all of them; on a shared machine load only
    ever adds time, so the lowest median is the least disturbed (as the experiments do).
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    runs = []
    for model in models:
        s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        x = {i.name: np.random.rand(*shape).astype(np.float32)}
        for _ in range(3):
            s.run(None, x)
        runs.append((s, x))
    best = [np.inf] * len(models)
    for _ in range(passes):
        for k, (s, x) in enumerate(runs):
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < 5 or time.perf_counter() - start < window_s:
                t = time.perf_counter()
                s.run(None, x)
                times.append(time.perf_counter() - t)
            best[k] = min(best[k], 1e3 * float(np.median(times)))
    return best


def test_predictor_from_imported_jsonl_predicts_held_out(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("latency_models.measurement._store")
    graphs = [random_network(s, size=int(32 + 16 * (s % 3))) for s in range(1000, 1048)]
    lines = []
    for i, (g, ms) in enumerate(zip(graphs, _time_graphs(graphs), strict=True)):
        path = tmp_path / f"m{i}.onnx"
        onnx.save(g, str(path))
        lines.append(json.dumps({"onnx": path.name, "latency_ms": ms}))
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    store = store_mod.MeasurementStore("imported-dev", path=tmp_path / "m.sqlite")
    assert store.import_jsonl(tmp_path / "records.jsonl") == len(graphs)
    feats, y, hashes = training_data(store)
    assert len(feats) == len(graphs) == len(set(hashes))
    p = fit_predictor(feats[:36], y[:36], device="imported-dev")
    m = prediction_metrics(y[36:], p.predict_features(feats[36:]))
    # loose bounds: the test machine is shared and sub-ms timings are noisy
    assert m["spearman"] > 0.7, m
    assert m["mape"] < 40, m


def test_features_of_another_version_are_refused_with_the_fix() -> None:
    import dataclasses

    from latency_models import IncompatibleArtifactError, fit_predictor, graph_features

    graphs = [random_network(seed, size=16, width=8) for seed in range(6)]
    predictor = fit_predictor(graphs, [0.1 * (i + 1) for i in range(6)], holdout=0.0)
    old = dataclasses.replace(graph_features(graphs[0]), feature_version=0)
    with pytest.raises(IncompatibleArtifactError, match=r"features version \[0\].*Refit it"):
        predictor.predict_features([old])


def test_additive_penalties_stay_within_a_multiple_of_the_rate(
    dataset: tuple[list[GraphFeatures], np.ndarray],
) -> None:
    """No small-channel/misaligned/small-map penalty above PENALTY_CAP x its kind's MAC rate."""
    from latency_models.predictors._additive import _BASIS, PENALTY_CAP

    feats, y = dataset
    est = KernelAdditivePredictor().fit(feats, y)
    nb = len(_BASIS)
    bounds = est.penalty_bounds_[:-1].reshape(len(est.keys_), nb)
    penalties = [_BASIS.index(b) for b in _BASIS if b.startswith("mmacs_")]
    assert np.isfinite(bounds[:, penalties]).all() and np.isinf(bounds[:, 0]).all()
    assert np.all(est.coef_ <= est.penalty_bounds_ * (1 + 1e-9) + 1e-12)
    assert np.all(bounds[:, penalties] > 0) and PENALTY_CAP > 1
