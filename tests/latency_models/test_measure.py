import math
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from latency_models import (
    GraphRejectedError,
    Measurement,
    MeasurementError,
    check_device,
    measure,
)
from latency_models.devices import DeviceSpec
from latency_models.measurement._bench import make_inputs, median_rse
from latency_models.profiling._check import conv_stack, mlp

FAST = {"max_seconds": 0.15, "warmup_s": 0.02}


def test_measure_local_reports_everything() -> None:
    graph = conv_stack(8, 16, 2)
    m = measure(graph, "local-cpu", **FAST)
    assert m.latency_ms > 0 and m.p10_ms <= m.latency_ms <= m.p90_ms
    assert m.n_runs >= m.n_samples >= 3 and m.runs_per_sample >= 1
    assert m.runs_per_sample * m.latency_ms >= 1.0  # a sample lasts about window_ms or more
    assert m.cv >= 0 and m.rse >= 0
    assert m.energy_source in ("rapl", "not measured")
    if m.energy_source == "not measured":
        assert m.energy_mj is None and m.energy_note
    assert m.weight_bytes == 2 * (8 * 8 * 9 + 8) * 4
    assert m.peak_memory_bytes is not None and m.memory_source.startswith("process peak RSS")
    assert m.runtime_version.startswith("onnxruntime ")
    assert m.host.count("/") == 2 and m.host_info["cores"]
    assert m.device == "local-cpu" and abs(m.timestamp - time.time()) < 60


def test_measurement_dict_roundtrip() -> None:
    m = measure(mlp(16, 1), "local-cpu", **FAST)
    d = m.to_dict()
    assert d["_type"] == "Measurement"
    assert Measurement.from_dict(d) == m
    with pytest.raises(ValueError, match="unknown Measurement keys"):
        Measurement.from_dict({**d, "speed": 1})


def test_not_onnx_and_rejected_graphs() -> None:
    with pytest.raises(GraphRejectedError, match="not a valid ONNX model"):
        measure(b"definitely not onnx", "local-cpu", **FAST)
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="no.such.domain")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("no.such.domain", 1)],
    )
    with pytest.raises(GraphRejectedError, match="onnxruntime rejected"):
        measure(model, "local-cpu", **FAST)


def test_dynamic_batch_uses_device_batch_size() -> None:
    import onnxruntime as ort

    graph = mlp(8, 1)
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    sess = ort.InferenceSession(graph.SerializeToString())
    feeds, notes = make_inputs(sess, batch_size=5)
    assert feeds["input"].shape == (5, 8) and not notes
    spec = DeviceSpec("batch5", batch_size=5)
    assert measure(graph, spec, **FAST).latency_ms > 0


def test_unavailable_provider_is_clear() -> None:
    spec = DeviceSpec("gpu", providers=("CUDAExecutionProvider",))
    with pytest.raises(MeasurementError, match=r"not available.*available: \["):
        measure(mlp(8, 1), spec, **FAST)


def test_provider_that_falls_back_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime drops a provider that fails to start and runs on the next: refuse that."""
    import onnxruntime as ort

    real = ort.InferenceSession

    class FellBack:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._s = real(*args, **kwargs)

        def get_providers(self) -> list[str]:
            return ["FallbackExecutionProvider"]  # not the one asked for

        def __getattr__(self, name: str) -> object:
            return getattr(self._s, name)

    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    spec = DeviceSpec("cpu-asked", providers=("CPUExecutionProvider",))
    with pytest.raises(MeasurementError, match="could not start CPUExecutionProvider"):
        measure(mlp(8, 1), spec, **FAST)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        measure(mlp(8, 1), "local-cpu", max_seconds=0)
    with pytest.raises(ValueError, match="min_samples"):
        measure(mlp(8, 1), "local-cpu", min_samples=1)


def test_median_rse() -> None:
    assert median_rse([1.0, 2.0]) == math.inf
    assert median_rse([5.0] * 50) == 0.0
    rng = np.random.default_rng(0)
    wide = median_rse(list(rng.normal(10, 2, 400)))
    narrow = median_rse(list(rng.normal(10, 0.2, 400)))
    assert 0 < narrow < wide < 0.05


def test_pinning_restores_affinity() -> None:
    import os

    before = os.sched_getaffinity(0)
    cpu = min(before)
    assert measure(mlp(8, 1), "local-cpu", pin_cpus=[cpu], **FAST).latency_ms > 0
    assert os.sched_getaffinity(0) == before
    with pytest.raises(MeasurementError, match="cannot pin"):
        measure(mlp(8, 1), "local-cpu", pin_cpus=[10_000], **FAST)


def test_check_device_reports_spread() -> None:
    results = check_device("local-cpu", graphs=["mlp-0.1ms"], max_seconds=0.1, warmup_s=0.02)
    (r,) = results
    assert len(r.medians_ms) == 2 and r.spread_pct >= 0
    with pytest.raises(ValueError, match="repeats >= 2"):
        check_device("local-cpu", repeats=1)


def test_reference_graphs_are_valid() -> None:
    from latency_models import REFERENCE_GRAPHS

    for build in REFERENCE_GRAPHS.values():
        onnx.checker.check_model(build())


def test_ray_device_runs_on_the_resource_node() -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, resources={"bench": 1}, include_dashboard=False, log_to_driver=False)
    try:
        spec = DeviceSpec("ray-bench", location="ray:bench")
        m = measure(mlp(8, 1), spec, **FAST)
        assert m.device == "ray-bench" and m.latency_ms > 0
        with pytest.raises(MeasurementError, match="no Ray node holds resource 'gpu-box'"):
            measure(mlp(8, 1), DeviceSpec("nope", location="ray:gpu-box"), **FAST)
    finally:
        ray.shutdown()
