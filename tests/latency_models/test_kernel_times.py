"""Per-kernel times from onnxruntime's profiler, their alignment, and the kernel predictors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latency_models.predictors._combined_predictor as combined
from latency_models import (
    CombinedPredictor,
    GraphFeatures,
    KernelPredictor,
    Measurement,
    MeasurementStore,
    align_kernel_times,
    fit_predictor,
    graph_features,
    kernel_graph,
    load_predictor,
    measure,
    measure_cached,
    prediction_metrics,
    quantize_qdq,
    random_network,
    staged_network,
    training_data,
    training_kernel_times,
)
from latency_models._graph import graph_bytes
from latency_models.features._features import COMPUTE_KINDS, KernelFeatures
from latency_models.features._kernel_table import (
    FIELDS,
    kernel_fields,
    kernel_table,
    touched_tap_fraction,
    valid_tap_fraction,
)
from latency_models.predictors._combined_predictor import family_folds, graph_family
from latency_models.predictors._kernel_calibration import (
    NO_SPLIT,
    PROFILE_SCALE_LIMITS,
    _calibrate,
    _profile_sums,
    fade,
    fading_overhead_scale,
    fit_work_split,
    launch_cost,
    match_profiles_to_latency,
    split_work,
    weight_traffic_ratio,
)
from latency_models.predictors._kernel_rows import (
    _raw_rows,
    effective_mmacs,
    kernel_row,
    own_rows,
    row_work,
)
from latency_models.predictors._select import TOLERANCE, best_baseline, spearman_of

FAST = {"max_seconds": 0.05, "min_samples": 3, "warmup_s": 0.0, "kernel_times_s": 0.02}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def profiled() -> tuple[list[GraphFeatures], np.ndarray, list[list[dict]]]:
    """Small graphs measured for real, each with its per-kernel times."""
    graphs = [random_network(s, size=16) for s in range(16)]
    graphs += [quantize_qdq(random_network(s, size=16)) for s in range(100, 108)]
    graphs += [kernel_graph("conv", cin=c, cout=2 * c, size=8) for c in (8, 16, 24, 32)]
    feats, ys, times = [], [], []
    for g in graphs:
        m = measure(g, "local-cpu", **FAST)
        assert m.kernel_times
        feats.append(graph_features(g))
        ys.append(m.latency_ms)
        times.append(m.kernel_times)
    return feats, np.array(ys), times


def test_kernel_times_are_measured_and_line_up_with_the_features() -> None:
    g = quantize_qdq(random_network(3, size=16))
    m = measure(g, "local-cpu", **FAST)
    assert m.kernel_times is not None
    for entry in m.kernel_times:
        assert entry["ms"] >= 0 and entry["op"] and entry["name"]
    feats = graph_features(g)
    times = align_kernel_times(feats, m.kernel_times)
    assert len(times) == len(feats.kernels)
    matched = [t for t in times if t is not None]
    assert len(matched) >= 0.8 * len(times)
    compute = [t for k, t in zip(feats.kernels, times, strict=True) if k.kind.startswith("conv")]
    assert compute and all(t is not None for t in compute)  # every conv found by name
    # the kernels are what a run is made of: their sum is of the order of the latency
    assert 0.2 * m.latency_ms < sum(matched) < 5 * m.latency_ms
    # without the option there are none, and the dict round-trips either way
    plain = measure(g, "local-cpu", max_seconds=0.05, min_samples=3, warmup_s=0.0)
    assert plain.kernel_times is None
    assert Measurement.from_dict(m.to_dict()).kernel_times == m.kernel_times


def test_profiled_sessions_keep_each_kernels_lowest_median(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from latency_models.measurement import _bench

    g = random_network(4, size=16)
    m = graph_bytes(g)
    sess = _bench._session(m, ("CPUExecutionProvider",), 1)
    feeds, _ = _bench.make_inputs(sess, 1, 0)
    real = _bench.profile_kernels(m, ("CPUExecutionProvider",), 1, feeds, 0.05, 0.01, sessions=2)
    one = _bench.profile_kernels(m, ("CPUExecutionProvider",), 1, feeds, 0.05, 0.01, sessions=1)
    assert [e["name"] for e in real] == [e["name"] for e in one]  # one entry per kernel
    assert {e["sessions"] for e in real} == {2} and {e["sessions"] for e in one} == {1}
    # the merge: each kernel keeps the lowest of its session medians, in execution order
    calls = iter([[0.3, 0.1, 0.5], [0.2, 0.4, 0.6], [0.9, 0.2, 0.4]])

    def fake(*_args: object) -> list:
        return [((f"k{i}", i), {"name": f"k{i}", "ms": ms}) for i, ms in enumerate(next(calls))]

    monkeypatch.setattr(_bench, "_profile_session", fake)
    merged = _bench.profile_kernels(m, ("CPUExecutionProvider",), 1, feeds, 1.0, 1.0, sessions=3)
    assert [(e["name"], e["ms"]) for e in merged] == [("k0", 0.2), ("k1", 0.1), ("k2", 0.4)]
    with pytest.raises(ValueError, match="sessions must be >= 1, got 0"):
        _bench.profile_kernels(m, ("CPUExecutionProvider",), 1, feeds, 1.0, 1.0, sessions=0)


def test_alignment_by_name_survives_a_reordered_profile() -> None:
    feats = graph_features(random_network(5, size=16))
    names = [k.nodes[0] for k in feats.kernels if k.nodes]
    entries = [
        {"name": f"{n}_nchwc", "op": "Conv" if "conv" in n else "Relu", "ms": 0.01 * (i + 1),
         "output_shape": [], "input_shape": []}
        for i, n in enumerate(names)
    ][::-1]  # fmt: skip
    times = align_kernel_times(feats, entries)
    by_name = {e["name"][: -len("_nchwc")]: e["ms"] for e in entries}
    for k, t in zip(feats.kernels, times, strict=True):
        if k.nodes and k.kind.startswith("conv"):
            assert t == by_name[k.nodes[0]]


def test_measure_cached_remeasures_for_kernel_times() -> None:
    g = random_network(7, size=16)
    store = MeasurementStore("local-cpu")
    fast = {k: v for k, v in FAST.items() if k != "kernel_times_s"}
    first = measure_cached(g, "local-cpu", store=store, **fast)
    assert first.kernel_times is None and len(store) == 1
    second = measure_cached(g, "local-cpu", store=store, **FAST)
    assert second.kernel_times and len(store) == 2
    third = measure_cached(g, "local-cpu", store=store, **FAST)
    assert third.kernel_times == second.kernel_times and len(store) == 2
    _, _, hashes = training_data(store)
    assert training_kernel_times(store, hashes) == [second.kernel_times]


def test_effective_macs_skip_padding_and_pad_channels() -> None:
    feats = graph_features(kernel_graph("conv", cin=16, cout=16, size=1, kernel=3))
    conv = next(k for k in feats.kernels if k.kind == "conv")
    assert valid_tap_fraction(conv) == pytest.approx(1 / 9)  # only the centre tap is inside
    assert effective_mmacs(conv) == pytest.approx(16 * 16 * 1 / 1e6)
    wide = graph_features(kernel_graph("conv1x1", cin=20, cout=20, size=8))
    k = next(k for k in wide.kernels if k.kind == "conv1x1")
    assert effective_mmacs(k) == pytest.approx(32 * 32 * 64 / 1e6)  # channels to 2 blocks
    # an int8 conv multiplies its im2col buffer, the padding's zero points included
    qconv = next(
        k for k in graph_features(quantize_qdq(kernel_graph("conv", cin=16, cout=16, size=1,
                                                            kernel=3))).kernels
        if k.kind == "conv"
    )  # fmt: skip
    assert qconv.dtype == "int8" and effective_mmacs(qconv) == pytest.approx(16 * 16 * 9 / 1e6)
    # kernel_fields works the taps out vectorised, apart from valid_tap_fraction: they agree
    deep = graph_features(staged_network(5, size=64, block="basic", max_weight_mb=2.0))
    column, read = FIELDS.index("valid_taps"), FIELDS.index("touched_taps")
    for kernel in [*deep.kernels, conv, k]:
        assert kernel_fields(kernel)[column] == valid_tap_fraction(kernel)
        assert kernel_fields(kernel)[read] == touched_tap_fraction(kernel)


def test_fit_work_split_finds_where_a_second_thread_halves_the_time() -> None:
    """onnxruntime runs a small loop on one thread and a large one on two: the time per tap
    of an int8 max-pool halves above a threshold (175,000 taps on local-cpu-2t)."""
    rng = np.random.default_rng(0)
    work = np.sort(rng.uniform(0.005, 2.0, 30))  # million taps
    noise = rng.uniform(0.97, 1.03, len(work))  # the profiler's
    t = (0.01 + 5.0 * work * np.where(work >= 0.175, 0.5, 1.0)) * noise  # ms
    threshold, factor = fit_work_split(t, work)
    assert work[work < 0.175].max() < threshold <= work[work >= 0.175].min()
    assert factor == pytest.approx(0.5, rel=0.1)
    # with the work above the threshold scaled, one rate fits all the kernels again
    scaled = split_work(work, (threshold, factor))
    assert np.allclose((t - 0.01) / scaled, 5.0, rtol=0.1)
    # one rate throughout (one thread), or too few kernels to tell: no split
    assert fit_work_split((0.01 + 5.0 * work) * noise, work) == NO_SPLIT
    assert fit_work_split(t[:7], work[:7]) == NO_SPLIT
    two = [graph_features(random_network(s, size=16)) for s in range(2)]
    with pytest.raises(ValueError, match=r"work_split must be one of.*'yes'"):
        KernelPredictor(work_split="yes").fit(two, np.array([0.1, 0.2]))


def test_launch_cost_is_the_intercept_of_time_on_work_within_its_bound() -> None:
    work = np.array([0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    t = 0.002 + 0.004 * work  # 2 us to launch, 4 us per unit of work
    assert launch_cost(t, work) == pytest.approx(0.002)
    # never above 0.9 x the 5th-percentile time, never below zero
    slow_start = 0.02 + 0.004 * work
    assert launch_cost(slow_start, work) == pytest.approx(0.9 * np.percentile(slow_start, 5))
    assert launch_cost(0.004 * work, work) == pytest.approx(0.0, abs=1e-12)


def test_weight_traffic_ratio_recovers_the_cost_of_a_byte_against_a_mac() -> None:
    """A 1x1 conv on a 1x1 map reads each weight once: it is costed by bytes as well as MACs."""
    rng = np.random.default_rng(0)
    raw = np.zeros((40, 24))
    raw[:, 17] = rng.uniform(1e4, 5e7, 40)  # effective MACs
    raw[:, 2] = raw[:, 17] / rng.choice([1.0, 4.0, 49.0, 196.0], 40)  # weight bytes read
    t = 0.008 + 0.05 * raw[:, 17] / 1e6 + 0.1 * raw[:, 2] / 1e6  # 1 byte costs 2 MACs
    assert weight_traffic_ratio(raw, t) == pytest.approx(2.0, rel=1e-3)
    # with the ratio, work is proportional to the time less the launch cost
    work = row_work(raw, "conv1x1.fp32", 2.0)
    assert np.allclose((t - 0.008) / (work - 1e-3), 0.05)
    # time that grows with MACs alone gives 0 (so work is MACs, as before the ratio)
    assert weight_traffic_ratio(raw, 0.008 + 0.05 * raw[:, 17] / 1e6) == pytest.approx(
        0.0, abs=1e-6
    )
    # no ratio: work is the effective MACs alone
    assert np.allclose(row_work(raw, "conv1x1.fp32"), raw[:, 17] / 1e6 + 1e-3)


def test_touched_taps_count_the_weights_some_output_reads() -> None:
    def conv(size: int, stride: int = 1, kernel: int = 3) -> KernelFeatures:
        g = kernel_graph("conv", cin=16, cout=16, size=size, kernel=kernel, stride=stride)
        return next(k for k in graph_features(g).kernels if k.kind == "conv")

    # 1x1 map: only the centre tap meets data, for the MACs and for the weights alike
    assert touched_tap_fraction(conv(1)) == pytest.approx(1 / 9)
    # 2x2 map: each output skips 5 of 9 taps, but every tap is read by some output
    assert valid_tap_fraction(conv(2)) == pytest.approx(4 / 9)
    assert touched_tap_fraction(conv(2)) == 1.0
    # 2x2 map, stride 2 -> one output at the corner: taps (1..2, 1..2) of the 3x3
    assert touched_tap_fraction(conv(2, stride=2)) == pytest.approx(4 / 9)
    # 5x5 kernel on a 2x2 map: the outer ring is never read (a column of 3 of 5 per axis)
    assert touched_tap_fraction(conv(2, kernel=5)) == pytest.approx(9 / 25)
    assert touched_tap_fraction(conv(8)) == 1.0
    # an int8 conv multiplies an im2col buffer, padding and all, by every weight
    g = quantize_qdq(kernel_graph("conv", cin=16, cout=16, size=1, kernel=3))
    qconv = next(k for k in graph_features(g).kernels if k.kind == "conv")
    assert qconv.dtype == "int8" and touched_tap_fraction(qconv) == 1.0
    assert kernel_fields(qconv)[FIELDS.index("touched_taps")] == 1.0


def test_a_quantized_nchw_pool_is_costed_by_its_window_taps() -> None:
    """onnxruntime runs a MaxPool between an fp32 and an int8 conv in uint8 NCHW, a generic
    loop over every window tap: its work is outputs x window, not bytes moved."""
    from latency_models.profiling._builder import _Builder

    def qpool_work(window: int) -> float:
        b = _Builder(np.random.default_rng(0))
        y = b.conv("input", 3, 32, 3)
        pads = [window // 2] * 4 if window == 3 else [0] * 4
        y = b.node("MaxPool", [y], kernel_shape=[window] * 2, strides=[2, 2], pads=pads)
        g = b.model([1, 3, 32, 32], b.conv(y, 32, 32, 3), f"pool{window}")
        g = quantize_qdq(g, nodes_to_exclude=[g.graph.node[0].name])  # fp32 stem
        feats = graph_features(g)
        (pool,) = [k for k in feats.kernels if k.source_op == "MaxPool"]
        assert pool.kind == "qpool" and pool.output_shape == (1, 32, 16, 16)
        t = kernel_table([feats])
        rows = _raw_rows(t)[t.row_of]
        i = feats.kernels.index(pool)
        return float(row_work(rows[i : i + 1], pool.key)[0])

    assert qpool_work(3) - 1e-3 == pytest.approx(9 / 4 * (qpool_work(2) - 1e-3))
    assert qpool_work(2) - 1e-3 == pytest.approx(32 * 16 * 16 * 4 / 1e6)


def test_kernel_table_shares_rows_of_equal_kernels_within_a_graph_only() -> None:
    conv = graph_features(kernel_graph("conv", cin=16, cout=16, size=8, kernel=3))
    deep = graph_features(staged_network(3, size=64, block="basic", max_weight_mb=2.0))
    mixed = graph_features(quantize_qdq(random_network(9, size=16)))  # int8 and fp32 kernels
    graphs = [conv, deep, conv, mixed]
    t = kernel_table(graphs)
    assert len(t.graph_of) == len(t.row_of) == sum(len(f.kernels) for f in graphs)
    # the two copies of `conv` are separate graphs: their rows are not shared
    first, third = t.row_of[t.graph_of == 0], t.row_of[t.graph_of == 2]
    assert set(first).isdisjoint(third) and len(first) == len(third)
    assert {k.dtype for k in mixed.kernels} == {"fp32", "int8"}
    for g, f in enumerate(graphs):
        rows = t.row_of[t.graph_of == g]
        assert (t.row_graph[rows] == g).all()
        for k, r in zip(f.kernels, rows, strict=True):
            # the vectorised table holds what kernel_fields gives kernel by kernel
            assert t.key_names[t.key_of[r]] == k.key and t.fields[r].tolist() == list(
                kernel_fields(k)
            )
            assert t.first[r].op == k.op  # a warning names the op of every kernel it covers
            wb, gb = t.context[g]
            assert kernel_row(k, wb, gb) == [*own_rows(t.fields[r : r + 1])[0], wb, gb]
        # the context is the graph's totals less the weights that meet only padding
        unread = sum(k.weight_bytes * (1 - touched_tap_fraction(k)) for k in f.kernels)
        assert unread < f.totals["weight_bytes"]
        expected = [f.totals["weight_bytes"] - unread, f.totals["bytes"] - unread]
        assert t.context[g].tolist() == pytest.approx(expected, rel=1e-12)
    # the deep network's last 3x3 convs run on 1x1 maps: a run reads a ninth of their weights
    assert t.context[1, 0] < 0.9 * deep.totals["weight_bytes"]
    # a network's repeated blocks share rows
    assert len(set(t.row_of[t.graph_of == 1])) < len(deep.kernels)


def test_a_profile_from_a_slow_session_is_scaled_to_the_latency() -> None:
    feats = [graph_features(random_network(seed, size=16)) for seed in range(30)]
    rng = np.random.default_rng(0)
    times: list[list[float | None]] = [  # graphs of very different sizes, as in a sweep
        [float(t) for t in rng.uniform(0.01, 0.1, len(f.kernels)) * 10 ** rng.uniform(-1, 2)]
        for f in feats
    ]
    times[5][0] = None  # a kernel the profile did not match keeps no time
    y = np.array([sum(t for t in ts if t) for ts in times])  # profiles that add up...
    # ...but one, taken in a slow spell: a mid-sized graph (the smallest ones have leverage
    # on the calibration through its constant and per-kernel terms)
    slow, other, far = np.argsort(y)[[15, 20, 10]]
    times[slow] = [t * 1.3 for t in times[slow] if t]
    out = match_profiles_to_latency(feats, y, times)
    assert sum(t for t in out[slow] if t) == pytest.approx(y[slow], rel=0.05)
    assert sum(t for t in out[other] if t) == pytest.approx(y[other], rel=0.05)
    assert out[5][0] is None
    # bounded: a profile 3x off is scaled by at most PROFILE_SCALE_LIMITS
    times[far] = [t * 3 for t in times[far] if t]
    scaled = match_profiles_to_latency(feats, y, times)[far]
    assert sum(t for t in scaled if t) / sum(t for t in times[far] if t) == pytest.approx(
        PROFILE_SCALE_LIMITS[0], rel=1e-9
    )


def test_fading_overhead_scale_finds_an_overhead_that_fades_with_kernel_length() -> None:
    rng = np.random.default_rng(1)
    times: list[list[float | None]] = [  # profiled graphs of 1-40 kernels of 5 us to 2 ms
        [float(t) for t in 10 ** rng.uniform(-2.3, 0.3, rng.integers(1, 40))] for _ in range(80)
    ]
    times[3][0] = None  # an unmatched kernel counts nowhere

    def latency(overhead: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.array([
            sum(t - float(overhead(np.array(t))) for t in ts if t is not None) + 0.004
            for ts in times
        ])  # fmt: skip

    # a profiler that adds 8 us to a short kernel and next to nothing to a 0.2 ms one
    fading = latency(lambda t: 0.008 * np.exp(-t / 0.02))
    assert fading_overhead_scale(times, fading) == 0.02
    a, b, c = _calibrate(*_profile_sums(times, 0.02), fading)
    assert (a, b, c) == pytest.approx((1.0, 0.004, -0.008), rel=1e-6, abs=1e-9)
    # the same 2 us on every kernel: the constant form fits as well, and is kept
    assert math.isinf(fading_overhead_scale(times, latency(lambda t: 0.002 + 0 * t)))
    assert fade(np.array([0.0, 0.02]), 0.02) == pytest.approx([1.0, math.exp(-1)])
    assert fade(np.array([0.5]), math.inf).tolist() == [1.0]


@pytest.mark.parametrize("cls", [KernelPredictor, CombinedPredictor])
def test_kernel_predictors_learn_from_kernel_times(
    cls: type, profiled: tuple[list[GraphFeatures], np.ndarray, list[list[dict]]], tmp_path: Path
) -> None:
    feats, y, times = profiled
    train = np.arange(len(feats)) % 4 != 0
    est = cls().fit(
        [f for f, t in zip(feats, train, strict=True) if t],
        y[train],
        kernel_times=[k for k, t in zip(times, train, strict=True) if t],
    )
    held = [f for f, t in zip(feats, train, strict=True) if not t]
    pred = est.predict_features(held)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    assert prediction_metrics(y[~train], pred)["mape"] < 60  # tiny, noisy graphs
    est.save(tmp_path / "p", device="local-cpu")
    loaded = load_predictor(tmp_path / "p")
    np.testing.assert_array_equal(loaded.predict_features(held), pred)

    def kernel_part(p: Any) -> KernelPredictor:
        return p if cls is KernelPredictor else p.kernel_

    def ratios(p: Any) -> dict[str, float]:
        return {k: m["bytes_per_mac"] for k, m in kernel_part(p).models_.items()}

    assert ratios(loaded) == ratios(est)
    assert all(r >= 0 for r in ratios(est).values())
    # a file from before the ratio was learned loads with none (work is MACs alone)
    state = kernel_part(est).get_state()
    for m in state["models"].values():
        del m["bytes_per_mac"], m["split"]
    old = KernelPredictor()
    old.set_state(state)
    assert all(m["bytes_per_mac"] == 0.0 for m in old.models_.values())
    # a learned work split survives a save in strict JSON, and older files have none
    part = kernel_part(est)
    key = next(iter(part.models_))
    assert all(
        m["split"] == NO_SPLIT for k, m in part.models_.items() if k.split(".")[0] in COMPUTE_KINDS
    )  # MLAS threads those by rules of its own
    part.models_[key]["split"] = (0.05, 0.5)
    again = KernelPredictor()
    again.set_state(json.loads(json.dumps(part.get_state(), allow_nan=False)))
    assert again.models_[key]["split"] == (0.05, 0.5)
    assert all(again.models_[k]["split"] == part.models_[k]["split"] for k in again.models_)
    assert all(m["split"] == NO_SPLIT for m in old.models_.values())


def test_fit_predictor_picks_by_what_was_measured(
    profiled: tuple[list[GraphFeatures], np.ndarray, list[list[dict]]],
) -> None:
    feats, y, times = profiled
    assert fit_predictor(feats, y, kernel_times=times).name == "combined"
    plain = fit_predictor(feats, y)
    # without kernel times the default is additive; on these few measured graphs a baseline
    # may beat it out of fold, and then it is used only by more than the tolerance
    own = spearman_of(plain.choice_, "additive")
    if plain.name != "additive":
        assert plain.name == "flops" == plain.choice_["chosen"]
        base = best_baseline(plain.choice_)
        assert base is not None and own is not None and base[1] > own + TOLERANCE
    with pytest.raises(ValueError, match="kernel_times"):
        fit_predictor(feats, y, kernel_times=times[:3])
    with pytest.raises(ValueError, match="kernel_times"):
        KernelPredictor().fit(feats, y, kernel_times=times[:3])
    with pytest.raises(ValueError, match=r"kernel_overhead must be one of.*'linear'.*'fading'"):
        KernelPredictor(kernel_overhead="linear").fit(feats, y, kernel_times=times)
    fixed = CombinedPredictor(kernel_weight=1, kernel_overhead="constant", n_estimators=20)
    assert math.isinf(fixed.fit(feats, y, kernel_times=times).kernel_.fade_ms_)


def test_combined_chooses_its_kernel_weight_out_of_fold(
    profiled: tuple[list[GraphFeatures], np.ndarray, list[list[dict]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    feats, y, times = profiled
    monkeypatch.setattr(combined, "MIN_WEIGHT_CV_GRAPHS", 20)  # the fixture has 28 graphs
    auto = CombinedPredictor(n_estimators=20).fit(feats, y, kernel_times=times)
    assert auto.kernel_weight_ in combined.WEIGHT_GRID
    assert set(auto.weight_scores_) == set(auto.weight_mape_) == set(combined.WEIGHT_GRID)
    assert all(0 <= share <= 1 for share in auto.weight_scores_.values())
    assert auto.weight_mape_[auto.kernel_weight_] == min(auto.weight_mape_.values())
    auto.save(tmp_path / "p", device="local-cpu")
    assert load_predictor(tmp_path / "p").kernel_weight_ == auto.kernel_weight_
    # a file from before the per-device choice: the fixed weight was only in the params
    state = json.loads((tmp_path / "p" / "state.json").read_text())
    del state["kernel_weight"]
    (tmp_path / "p" / "state.json").write_text(json.dumps(state))
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    meta["params"]["kernel_weight"] = 0.5
    (tmp_path / "p" / "meta.json").write_text(json.dumps(meta))
    assert load_predictor(tmp_path / "p").kernel_weight_ == 0.5
    # fixed, or too little to cross-validate: no choice made
    fixed = CombinedPredictor(kernel_weight=0.5, n_estimators=20).fit(feats, y, kernel_times=times)
    assert fixed.kernel_weight_ == 0.5 and not hasattr(fixed, "weight_scores_")
    untimed = CombinedPredictor(n_estimators=20).fit(feats, y)
    assert untimed.kernel_weight_ == combined.FALLBACK_WEIGHT
    with pytest.raises(ValueError, match="'auto'"):
        CombinedPredictor(kernel_weight=2).fit(feats, y, kernel_times=times)


def test_family_folds_keep_each_family_in_one_fold() -> None:
    """Whole families go to a fold, so the combined predictor's mix is scored on families
    its fit did not see; the folds come out about equal in size."""
    graphs = [staged_network(s, size=64, block=b, max_weight_mb=1.0)
              for b in ("basic", "inverted", "plain", "separable") for s in range(3)]  # fmt: skip
    graphs += [kernel_graph("conv", cin=16, cout=16, size=s) for s in (8, 12, 16)]
    graphs += [kernel_graph("dwconv", cin=32, size=s) for s in (8, 12, 16)]
    feats = [graph_features(g) for g in graphs]
    fams = [graph_family(f) for f in feats]
    assert len(set(fams)) == 6  # four block kinds, single convs, single depthwise convs
    fold = family_folds(feats, 5)
    assert set(fold.tolist()) == set(range(5))
    for fam in set(fams):
        assert len({int(f) for f, g in zip(fold, fams, strict=True) if g == fam}) == 1
    assert max(np.bincount(fold)) <= 6
