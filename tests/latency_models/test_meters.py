import sys
from pathlib import Path

import pytest

from latency_models.devices._meters import (
    MeterUnavailableError,
    NvmlMeter,
    RaplMeter,
    counter_delta,
    integrate_counter,
    open_meter,
)
from latency_models.measurement import _bench
from latency_models.profiling._check import mlp

MAX = 262_143_328_850  # a real max_energy_range_uj


def test_counter_delta_plain_and_wrapped() -> None:
    assert counter_delta(100, 250, MAX) == 150
    assert counter_delta(MAX - 10, 5, MAX) == 15
    assert counter_delta(7, 7, MAX) == 0
    with pytest.raises(ValueError, match="outside"):
        counter_delta(MAX + 1, 5, MAX)


def test_integrate_counter_survives_several_wraps() -> None:
    readings = [900, 990, 30, 500, 999, 10]  # range 1000: two wraps
    assert integrate_counter(readings, 1000) == 90 + 40 + 470 + 499 + 11


def _fake_rapl(tmp_path: Path, zones: int = 1) -> Path:
    for i in range(zones):
        zone = tmp_path / f"intel-rapl:{i}"
        zone.mkdir()
        (zone / "max_energy_range_uj").write_text(f"{MAX}\n")
        (zone / "energy_uj").write_text("0\n")
        sub = tmp_path / f"intel-rapl:{i}:0"  # a sub-zone (core): not counted twice
        sub.mkdir()
    return tmp_path


def _recorded(readings: dict[str, list[int]]):
    """A reader that returns recorded energy_uj values, one per read, per zone."""
    iters = {k: iter(v) for k, v in readings.items()}

    def reader(path: Path) -> str:
        if path.name == "max_energy_range_uj":
            return f"{MAX}\n"
        return f"{next(iters[path.parent.name])}\n"

    return reader


def test_rapl_recorded_readings_with_wraparound(tmp_path: Path) -> None:
    root = _fake_rapl(tmp_path, zones=2)
    reader = _recorded(
        {
            # init read, start, end
            "intel-rapl:0": [MAX - 2_000_000, MAX - 1_000_000, 500_000],  # wraps: 1.5 J
            "intel-rapl:1": [10, 1_000_000, 3_000_000],  # 2 J
        }
    )
    meter = RaplMeter(root, reader=reader)
    assert len(meter.zones) == 2
    start, end = meter.read(), meter.read()
    assert meter.joules_between(start, end) == pytest.approx(3.5)


def test_rapl_permission_error_says_why(tmp_path: Path) -> None:
    root = _fake_rapl(tmp_path)

    def reader(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return f"{MAX}\n"

    with pytest.raises(MeterUnavailableError, match=r"permission denied.*root"):
        RaplMeter(root, reader=reader)


def test_rapl_missing_zone(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailableError, match="no RAPL package zone"):
        RaplMeter(tmp_path)


def test_nvml_recorded_readings() -> None:
    readings = iter([1_000, 1_000, 6_500])  # mJ: init, start, end
    meter = NvmlMeter(read_mj=lambda: next(readings))
    assert meter.joules_between(meter.read(), meter.read()) == pytest.approx(5.5)


def test_nvml_reader_failure_is_unavailable() -> None:
    def broken() -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    with pytest.raises(MeterUnavailableError, match="NOT_SUPPORTED"):
        NvmlMeter(read_mj=broken)


@pytest.mark.parametrize(
    ("visible", "handle"), [("GPU-1a2b,0", "uuid:GPU-1a2b"), ("3", "index:3"), ("", "index:0")]
)
def test_nvml_meter_reads_the_visible_gpu(
    visible: str, handle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA_VISIBLE_DEVICES may name the GPU by index or UUID; NVML is asked for that one.

    NVML itself is faked (no GPU here); the real counter was checked on an H200
    (experiments/gpu_device_check.py).
    """
    import types

    counters = {"uuid:GPU-1a2b": 7_000, "index:3": 3_000, "index:0": 1_000}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: f"index:{i}",
        nvmlDeviceGetHandleByUUID=lambda u: f"uuid:{u}",
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counters[h],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    meter, reason = open_meter("nvml")
    assert meter is not None, reason
    assert meter.read() == (counters[handle],)


def test_open_meter_reasons() -> None:
    assert open_meter("none") == (None, "the device declares no energy meter")
    meter, reason = open_meter("nvml")  # no pynvml / GPU on the CI machine
    if meter is None:
        assert reason
    with pytest.raises(ValueError, match="must be one of"):
        open_meter("wattmeter")


def test_energy_per_run_from_meter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    counter = iter(range(0, 10**12, 1_000_000))  # +1 J per read
    root = _fake_rapl(tmp_path)

    def reader(path: Path) -> str:
        return f"{MAX}\n" if path.name == "max_energy_range_uj" else f"{next(counter)}\n"

    monkeypatch.setattr(_bench, "open_meter", lambda kind: (RaplMeter(root, reader=reader), ""))
    monkeypatch.setattr(RaplMeter, "min_window_s", 0.0)
    raw = _bench.benchmark(mlp(32, 1).SerializeToString(), max_seconds=0.05, energy_meter="rapl")
    assert raw["energy_source"] == "rapl"
    # start and end reads are one read apart: 1 J over n_runs runs
    assert raw["energy_mj"] == pytest.approx(1000.0 / raw["n_runs"])


def test_no_meter_means_not_measured() -> None:
    raw = _bench.benchmark(mlp(32, 1).SerializeToString(), max_seconds=0.05, energy_meter="rapl")
    if not Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        assert raw["energy_mj"] is None
        assert raw["energy_source"] == "not measured"
        assert "RAPL" in raw["energy_note"]
