"""A device names its runtime: built-ins per runtime, int8 refused up front, measured."""

from __future__ import annotations

import pytest

from latency_models import DeviceSpec, GraphRejectedError, get_device, measure, random_network
from latency_models.profiling._builder import quantize_qdq
from latency_models.runtimes import get_runtime


def _needs(name: str) -> None:
    if not get_runtime(name).available():
        pytest.skip(f"{name} is not installed (pip install 'hwnas[{name}]')")


def test_builtin_devices_name_their_runtime() -> None:
    assert get_device("local-cpu").runtime == "onnxruntime"
    assert get_device("local-openvino").precisions == (32, 8)  # QDQ runs as int8 there
    assert get_device("local-ncnn").precisions == (32,)  # no int8 path from our ONNX
    assert get_device("local-tvm").precisions == (32,)


def test_int8_on_a_runtime_without_it_is_refused_at_setup() -> None:
    with pytest.raises(ValueError, match=r"asks ncnn for bit-widths.*runs \[32\]"):
        DeviceSpec("board", runtime="ncnn", precisions=(32, 8))
    with pytest.raises(ValueError, match=r"unknown runtime 'ncn'.*Did you mean 'ncnn'"):
        DeviceSpec("board", runtime="ncn")


def test_spec_round_trips_its_runtime() -> None:
    spec = DeviceSpec("board", runtime="openvino", threads=2)
    assert DeviceSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("device", ["local-openvino", "local-ncnn"])
def test_measures_in_the_devices_runtime(device: str) -> None:
    runtime = get_device(device).runtime
    _needs(runtime)
    m = measure(random_network(1, size=16), device, max_seconds=0.2, warmup_s=0.02)
    assert m.latency_ms > 0
    assert m.runtime_version.startswith(runtime)


def test_a_stored_measurement_in_the_devices_runtime_is_reused(isolated_home) -> None:
    from latency_models import MeasurementStore
    from latency_models.measurement._cached import measure_cached

    _needs("openvino")
    store = MeasurementStore("local-openvino")
    g = random_network(3, size=16)
    first = measure_cached(g, "local-openvino", store=store, max_seconds=0.2, warmup_s=0.02)
    again = measure_cached(g, "local-openvino", store=store, max_seconds=0.2, warmup_s=0.02)
    assert len(store) == 1 and again.latency_ms == first.latency_ms
    assert first.runtime_version.startswith("openvino")


def test_a_graph_the_runtime_refuses_is_rejected_with_its_reason() -> None:
    _needs("ncnn")
    qdq = quantize_qdq(random_network(2, size=16))
    with pytest.raises(GraphRejectedError, match="local-ncnn"):
        measure(qdq, "local-ncnn", max_seconds=0.2)
