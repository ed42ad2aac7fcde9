import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

import latency_models.measurement._cached as cached_mod
import latency_models.measurement._store as store_mod
from latency_models import (
    IncompatibleArtifactError,
    Measurement,
    MeasurementStore,
    StoreCorruptedError,
    graph_hash,
    measure,
    measure_cached,
)
from latency_models.profiling._check import conv_stack, mlp

FAST = {"max_seconds": 0.1, "warmup_s": 0.01}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake(latency: float, device: str = "local-cpu", **kw: object) -> Measurement:
    base = dict(
        latency_ms=latency, p10_ms=latency * 0.9, p90_ms=latency * 1.1, cv=0.05, n_runs=100,
        energy_mj=None, energy_source="not measured", peak_memory_bytes=4096,
        memory_source="test", runtime_version="onnxruntime 1.0", host="h/cpu/2c",
        device=device, timestamp=1.0,
    )  # fmt: skip
    base.update(kw)
    return Measurement(**base)  # type: ignore[arg-type]


def test_put_get_records(home: Path) -> None:
    store = MeasurementStore("local-cpu")
    assert store.path == home / "devices" / "local-cpu" / "measurements.sqlite"
    g = mlp(8, 1)
    rid = store.put(g, _fake(1.0), features={"macs": 64})
    store.put(g, _fake(1.2))  # a re-measurement keeps both, features stay
    assert len(store) == 2
    rec = store.get(graph_hash(g))
    assert rec is not None and rec.id > rid and rec.measurement.latency_ms == 1.2
    assert rec.features == {"macs": 64}
    assert store.get(graph_hash(g), host="other") is None
    assert store.get("0" * 64) is None
    first, _ = store.records()
    assert first.graph() == g.SerializeToString() and first.source == "measured"


def test_measure_cached_reuses_unless_remeasure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cached_mod.measure

    def counting(*args: object, **kwargs: object) -> Measurement:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cached_mod, "measure", counting)
    g = conv_stack(8, 8, 1)
    a = measure_cached(g, "local-cpu", **FAST)
    b = measure_cached(g, "local-cpu", features={"f": 1}, **FAST)
    assert a == b and len(calls) == 1
    c = measure_cached(g, "local-cpu", remeasure=True, **FAST)
    assert len(calls) == 2 and c.timestamp > a.timestamp
    store = MeasurementStore("local-cpu")
    assert len(store) == 2 and store.records()[-1].features == {"f": 1}


def test_export_import_roundtrip(tmp_path: Path) -> None:
    src = MeasurementStore("dev-a", path=tmp_path / "a.sqlite")
    g1, g2 = mlp(8, 1), mlp(16, 2)
    src.put(g1, measure(g1, "local-cpu", **FAST), features={"k": [1, 2]})
    src.put(g2, _fake(2.5, energy_mj=0.7, energy_source="rapl"))
    out = tmp_path / "exp" / "records.jsonl"
    out.parent.mkdir()
    assert src.export_jsonl(out) == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all((out.parent / ln["onnx"]).is_file() for ln in lines)
    assert not Path(lines[0]["onnx"]).is_absolute()

    dst = MeasurementStore("dev-b", path=tmp_path / "b.sqlite")
    assert dst.import_jsonl(out) == 2
    assert dst.import_jsonl(out) == 0  # idempotent
    for a, b in zip(src.records(), dst.records(), strict=True):
        assert (a.graph_hash, a.graph(), a.features) == (b.graph_hash, b.graph(), b.features)
        assert a.measurement == b.measurement

    again = tmp_path / "again.jsonl"
    dst.export_jsonl(again)
    third = MeasurementStore("dev-c", path=tmp_path / "c.sqlite")
    third.import_jsonl(again)
    assert [r.measurement for r in third.records()] == [r.measurement for r in src.records()]


def test_import_minimal_lines(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(mlp(8, 1).SerializeToString())
    f = tmp_path / "r.jsonl"
    f.write_text(
        json.dumps({"onnx": "m.onnx", "latency_ms": 3.5}) + "\n\n"
        + json.dumps({"onnx": "m.onnx", "latency_ms": 3.6, "energy_mj": 1.2,
                      "peak_memory_bytes": 10_000}) + "\n"
    )  # fmt: skip
    store = MeasurementStore("pi")
    assert store.import_jsonl(f) == 2
    a, b = (r.measurement for r in store.records())
    assert a.latency_ms == 3.5 and a.energy_mj is None and a.energy_source == "not measured"
    assert b.energy_mj == 1.2 and b.energy_source == "imported" and b.peak_memory_bytes == 10_000
    assert a.device == "pi" and store.records()[0].source == "imported:r.jsonl"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"latency_ms": 1}', r"r\.jsonl:1: missing \"onnx\""),
        ('{"onnx": "m.onnx"}', r"r\.jsonl:1: missing \"latency_ms\""),
        ('{"onnx": "nope.onnx", "latency_ms": 1}', "nope.onnx' does not exist"),
        ('{"onnx": "m.onnx", "latency_ms": -2}', r'"latency_ms" must be a number > 0, got -2'),
        ("not json", r"r\.jsonl:1:"),
    ],
)
def test_import_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "m.onnx").write_bytes(mlp(8, 1).SerializeToString())
    f = tmp_path / "r.jsonl"
    f.write_text(line + "\n")
    store = MeasurementStore("pi")
    with pytest.raises(ValueError, match=message):
        store.import_jsonl(f)
    assert len(store) == 0


def test_corrupted_store_is_reported_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "measurements.sqlite"
    path.write_bytes(b"this is not a database, just junk " * 100)
    with pytest.raises(StoreCorruptedError, match=str(path)):
        MeasurementStore("x", path=path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_store_of_other_device_or_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    MeasurementStore("a", path=path)
    with pytest.raises(IncompatibleArtifactError, match="belongs to device 'a'"):
        MeasurementStore("b", path=path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(IncompatibleArtifactError, match="schema version 99"):
        MeasurementStore("a", path=path)


def _writer(path: str, offset: int) -> None:
    store = MeasurementStore("dev", path=path)
    for i in range(15):
        store.put(mlp(4, 1, seed=offset + i), _fake(1.0 + i))


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    MeasurementStore("dev", path=path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, k * 100)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(MeasurementStore("dev", path=path)) == 30


def test_graph_too_big_for_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph over SQLite's value limit is kept by path, or refused before it is measured."""
    g = mlp(8, 1)
    n = len(g.SerializeToString())
    monkeypatch.setattr(store_mod, "MAX_STORED_GRAPH_BYTES", n - 1)
    store = MeasurementStore("local-cpu")
    calls = []
    monkeypatch.setattr(cached_mod, "measure", lambda *a, **k: calls.append(1) or _fake(1.0))
    with pytest.raises(ValueError, match=r"pass the path"):
        measure_cached(g, "local-cpu", store=store)
    assert calls == [] and len(store) == 0  # refused before measuring
    path = tmp_path / "g.onnx"
    path.write_bytes(g.SerializeToString())
    measure_cached(str(path), "local-cpu", store=store)
    (rec,) = store.records()
    assert calls == [1] and rec.graph() == g.SerializeToString()
    with sqlite3.connect(store.path) as conn:  # the path, not the bytes
        assert conn.execute("SELECT onnx, onnx_path FROM graphs").fetchone() == (None, str(path))


def test_store_refusing_a_value_is_not_called_corruption(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MeasurementStore("local-cpu")
    monkeypatch.setattr(store_mod, "MAX_STORED_GRAPH_BYTES", 2_000_000_000)
    real = sqlite3.connect

    def small_limit(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real(*args, **kwargs)  # type: ignore[arg-type]
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        return conn

    monkeypatch.setattr(store_mod.sqlite3, "connect", small_limit)
    with pytest.raises(ValueError, match="refused a value") as info:
        store.put(conv_stack(16, 8, 2), _fake(1.0))
    assert not isinstance(info.value, StoreCorruptedError)


def test_training_label_is_the_best_session_of_the_newest_runtime_and_host() -> None:
    from latency_models import training_data

    store = MeasurementStore("local-cpu")
    a, b = mlp(8, 1), mlp(16, 2)
    for latency in (1.3, 1.0, 1.6):  # one graph, three sessions: disturbed ones only add time
        store.put(a, _fake(latency))
    store.put(b, _fake(2.0))
    store.put(b, _fake(3.0, runtime_version="onnxruntime 2.0"))  # upgraded: older not mixed in
    store.put(b, _fake(3.5, runtime_version="onnxruntime 2.0"))
    _, y, hashes = training_data(store)
    assert hashes == [graph_hash(a), graph_hash(b)]
    assert y.tolist() == [1.0, 3.0]


def test_stored_graphs_are_laid_out_for_the_host_that_measured_them() -> None:
    from latency_models import graph_features, training_data
    from latency_models.measurement._host import host_nchwc_block

    here = host_nchwc_block()
    other = 24 - here  # an agent's CPU of the other x86-64 kind (8 on AVX2, 16 on AVX-512F)
    store = MeasurementStore("local-cpu")
    a, b, c = conv_stack(40, 8, 2), conv_stack(24, 8, 1), mlp(8, 1)
    feats_here = graph_features(a).to_dict()
    store.put(a, _fake(1.0, host_info={"nchwc_block": str(other)}), features=feats_here)
    store.put(b, _fake(1.0, host_info={"nchwc_block": str(here)}), features=feats_here)
    store.put(c, _fake(1.0), features=graph_features(c, nchwc_block=other).to_dict())
    store.put(c, _fake(0.9, host="h2/cpu/2c", host_info={"nchwc_block": str(here)}))
    d = mlp(16, 1)  # a block the features do not know (not 8 or 16): the stored ones stand
    store.put(d, _fake(1.0, host_info={"nchwc_block": "4"}), features=feats_here)
    feats, _, _ = training_data(store)
    # a: stored features of this host's block are recomputed for the measuring host's
    assert feats[0].totals["nchwc_block"] == other
    assert feats[0] == graph_features(a, nchwc_block=other)
    # b: stored features of the right block are used as stored (here: a's, on purpose)
    assert feats[1] == graph_features(a)
    # c: measured again on another host: its newest host's layout
    assert feats[2].totals["nchwc_block"] == here
    assert feats[3] == graph_features(a)
