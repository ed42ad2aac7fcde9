"""Imported measurements, damaged stores and tampered predictor files."""

import json
import math
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from latency_models import (
    DeviceSpec,
    IncompatibleArtifactError,
    Measurement,
    MeasurementStore,
    StoreCorruptedError,
    add_device,
    graph_features,
    load_predictor,
    random_network,
    remove_device,
    training_data,
)
from latency_models.measurement._store import default_store_path
from latency_models.predictors._trees import GraphBoostPredictor
from latency_models.profiling._check import mlp

GRAPH = mlp(8, 1).SerializeToString()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake(latency: float = 1.0) -> Measurement:
    return Measurement(
        latency_ms=latency, p10_ms=latency, p90_ms=latency, cv=0.0, n_runs=10, energy_mj=None,
        energy_source="not measured", peak_memory_bytes=None, memory_source="test",
        runtime_version="onnxruntime 1.0", host="h/cpu/2c", device="pi", timestamp=1.0,
    )  # fmt: skip


def _jsonl(folder: Path, *lines: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graphs").mkdir(exist_ok=True)
    (folder / "graphs" / "a.onnx").write_bytes(GRAPH)
    path = folder / "r.jsonl"
    path.write_text(
        "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    )
    return path


# --- imports: paths stay inside the JSONL's folder, graphs are ONNX ------------------------
@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.onnx", "graphs/../../secret.onnx"])
def test_import_refuses_paths_outside_the_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.onnx").write_bytes(GRAPH)  # a real model, just outside
    path = _jsonl(tmp_path / "data", {"onnx": name, "latency_ms": 2.5})
    store = MeasurementStore("pi")
    with pytest.raises(ValueError, match=r"r\.jsonl:1: \"onnx\": .* is outside the folder"):
        store.import_jsonl(path)
    assert len(store) == 0


def test_import_refuses_a_link_that_leads_outside(tmp_path: Path) -> None:
    (tmp_path / "secret.onnx").write_bytes(GRAPH)
    path = _jsonl(tmp_path / "data", {"onnx": "graphs/link.onnx", "latency_ms": 2.5})
    os.symlink(tmp_path / "secret.onnx", tmp_path / "data" / "graphs" / "link.onnx")
    with pytest.raises(ValueError, match="is outside the folder"):
        MeasurementStore("pi").import_jsonl(path)


def test_import_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"onnx": "graphs/b.onnx", "latency_ms": 2.5})
    (tmp_path / "graphs" / "b.onnx").write_bytes(b"not onnx\n")  # 9 bytes
    store = MeasurementStore("pi")
    with pytest.raises(ValueError, match=r"r\.jsonl:1: .*b\.onnx': not an ONNX model \(9 bytes"):
        store.import_jsonl(path)
    assert len(store) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"energy_mj": "abc"}, r'"energy_mj" must be a number >= 0 or null, got \'abc\''),
        ({"energy_mj": -3}, r'"energy_mj" must be a number >= 0 or null, got -3'),
        ({"energy_mj": math.nan}, r'"energy_mj" must be a number >= 0 or null, got nan'),
        ({"peak_memory_bytes": -99}, r'"peak_memory_bytes" must be a whole number >= 0'),
        ({"peak_memory_bytes": 1.5}, r'"peak_memory_bytes" must be a whole number >= 0'),
        ({"n_runs": -1}, r'"n_runs" must be a whole number >= 0 , got -1|"n_runs" must be'),
        ({"latency_ms": True}, r'"latency_ms" must be a number > 0, got True'),
        ({"latency_ms": "2"}, r'"latency_ms" must be a number > 0'),
        ({"host": 7}, r'"host" must be a string'),
        ({"features": [1]}, r'"features" must be a JSON object'),
    ],
)
def test_import_checks_every_field(tmp_path: Path, extra: dict, message: str) -> None:
    path = _jsonl(tmp_path, {"onnx": "graphs/a.onnx", "latency_ms": 2.5, **extra})
    store = MeasurementStore("pi")
    with pytest.raises(ValueError, match=message):
        store.import_jsonl(path)
    assert len(store) == 0


def test_import_names_the_line_that_is_not_json(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"onnx": "graphs/a.onnx", "latency_ms": 2.5}, '{"onnx": "x",}')
    with pytest.raises(ValueError, match=r"r\.jsonl:2: not JSON \(.* at column 14\); each line"):
        MeasurementStore("pi").import_jsonl(path)


def test_valid_import_still_works(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"onnx": "graphs/a.onnx", "latency_ms": 2.5, "energy_mj": 0.5,
                             "peak_memory_bytes": 4096, "n_runs": 3})  # fmt: skip
    store = MeasurementStore("pi")
    assert store.import_jsonl(path) == 1
    m = store.records()[0].measurement
    assert m.energy_mj == 0.5 and m.peak_memory_bytes == 4096 and m.n_runs == 3


# --- damaged stores ------------------------------------------------------------------------
def test_zero_byte_store_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "measurements.sqlite"
    path.write_bytes(b"")
    with pytest.raises(StoreCorruptedError, match=r"is empty \(0 bytes\).*backup"):
        MeasurementStore("pi", path=path)
    assert path.stat().st_size == 0


def test_new_stores_appear_whole_under_concurrent_creation(tmp_path: Path) -> None:
    path = tmp_path / "s" / "measurements.sqlite"
    errors: list[BaseException] = []

    def make() -> None:
        try:
            MeasurementStore("pi", path=path).put(GRAPH, _fake())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(MeasurementStore("pi", path=path)) == 6
    assert sorted(p.name for p in path.parent.iterdir() if ".new" in p.name) == []


def _spoil_record(store: MeasurementStore, rec_id: int) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE measurements SET measurement = '{broken' WHERE id = ?", (rec_id,))
    conn.close()


def test_one_unreadable_record_does_not_block_the_others() -> None:
    store = MeasurementStore("pi")
    ids = [store.put(mlp(8, 1, seed=s), _fake(1.0 + s)) for s in range(3)]
    _spoil_record(store, ids[1])
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable record\(s\): {ids[1]} "):
        records = store.records()
    assert [r.id for r in records] == [ids[0], ids[2]]
    problems = {rec_id: problem for rec_id, _, problem in store.check()}
    assert problems[ids[0]] == "" and "unreadable measurement" in problems[ids[1]]
    assert store.remove([ids[1]]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.records()) == 2
    with pytest.raises(ValueError, match=r"no record \[99\].*hwnas device records pi"):
        store.remove([99])


def test_export_of_a_damaged_store_saves_what_is_readable(tmp_path: Path) -> None:
    store = MeasurementStore("pi")
    ids = [store.put(mlp(8, 1, seed=s), _fake(1.0 + s)) for s in range(3)]
    _spoil_record(store, ids[0])
    with pytest.warns(UserWarning, match=r"left 1 unreadable record\(s\)"):
        n = store.export_jsonl(tmp_path / "out" / "r.jsonl")
    assert n == 2
    again = MeasurementStore("pi2")
    assert again.import_jsonl(tmp_path / "out" / "r.jsonl") == 2


def test_a_stored_graph_that_is_not_onnx_is_named_not_a_traceback() -> None:
    store = MeasurementStore("pi")
    good = [store.put(random_network(s), _fake(1.0 + s)) for s in range(3)]
    bad = store.put(b"not onnx\n", _fake(2.0))  # as an import before imports were checked
    with pytest.warns(UserWarning, match=rf"record {bad} \(.*hwnas device records pi --remove"):
        feats, y, hashes = training_data(store)
    assert len(feats) == len(good) == y.size == len(hashes)
    assert next(p for i, _, p in store.check() if i == bad).startswith("not an ONNX model")


# --- removing a device removes its store ---------------------------------------------------
def test_removed_device_does_not_resurrect_its_measurements() -> None:
    add_device(DeviceSpec("board", threads=1))
    MeasurementStore("board").put(GRAPH, _fake())
    folder = remove_device("board")
    assert folder is not None and not folder.exists()
    add_device(DeviceSpec("board", threads=1))
    assert len(MeasurementStore("board")) == 0
    MeasurementStore("board").put(GRAPH, _fake())
    assert remove_device("board", keep_measurements=True) == folder
    assert default_store_path("board").is_file()


# --- predictor files: validated on load ----------------------------------------------------
@pytest.fixture(scope="module")
def boosted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    feats = [graph_features(random_network(s)) for s in range(12)]
    noise = np.random.default_rng(0).uniform(0.5, 2.0, len(feats))  # something to split on
    y = np.array([1.0 + f.totals["macs"] / 1e6 for f in feats]) * noise
    path = tmp_path_factory.mktemp("p") / "gbt"
    GraphBoostPredictor(n_estimators=5, max_depth=2).fit(feats, y).save(path, device="d")
    return path


def _tampered(boosted: Path, tmp_path: Path, change: object) -> Path:
    import shutil

    path = tmp_path / "tampered"
    shutil.copytree(boosted, path)
    text = (path / "state.json").read_text()
    if callable(change):
        state = json.loads(text)
        change(state)
        text = json.dumps(state)
    else:
        text = text.replace(*change)  # type: ignore[misc]
    (path / "state.json").write_text(text)
    return path


def _tree(state: dict) -> dict:
    """The first tree that splits (its root, node 0, is then an internal node)."""
    return next(t for t in state["forest"]["trees"] if t["left"][0] != -1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: _tree(s)["left"].__setitem__(0, 10_000), "child index is out of range"),
        (lambda s: _tree(s)["left"].__setitem__(0, 0), "child index is out of range"),
        (lambda s: _tree(s)["feature"].__setitem__(0, -5), "feature index is negative"),
        (lambda s: _tree(s)["value"].__setitem__(0, None), "not a finite number"),
        (lambda s: s["base_coef"].__setitem__(0, None), "holds NaN"),
        (lambda s: s["forest"].__setitem__("learning_rate", "x"), "finite learning_rate"),
        (lambda s: _tree(s)["left"].pop(), "different lengths"),
        (('"learning_rate": 0.05', '"learning_rate": NaN'), "NaN is not a finite number"),
        (('"learning_rate": 0.05', '"learning_rate": 1e999'), "1e999 is not a finite number"),
    ],
)
def test_tampered_predictor_is_refused_on_load(
    boosted: Path, tmp_path: Path, change: object, message: str
) -> None:
    path = _tampered(boosted, tmp_path, change)
    start = time.monotonic()
    with pytest.raises(IncompatibleArtifactError, match=message):
        load_predictor(path)
    assert time.monotonic() - start < 5  # a tree pointing to itself does not eat memory


def test_a_tree_splitting_on_a_feature_the_rows_lack_is_refused(
    boosted: Path, tmp_path: Path
) -> None:
    path = _tampered(boosted, tmp_path, lambda s: _tree(s)["feature"].__setitem__(0, 500))
    predictor = load_predictor(path)
    with pytest.raises(ValueError, match="splits on feature 500 of rows with"):
        predictor.predict([random_network(1)])


def test_untampered_predictor_loads(boosted: Path) -> None:
    assert load_predictor(boosted).predict([random_network(1)])[0] > 0
