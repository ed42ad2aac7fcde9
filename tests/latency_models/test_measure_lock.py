"""Two processes measuring one local device take turns, and the one that waited says so."""

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latency_models import DeviceSpec, MeasurementError, measure
from latency_models.measurement._measure import device_lock
from latency_models.profiling._check import mlp

HOLD = """
import sys, time
from latency_models import get_device
from latency_models.measurement._measure import device_lock
with device_lock(get_device("local-cpu")):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_second_process_waits_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "1.0"], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="latency_models"):
            m = measure(mlp(8, 1), "local-cpu", max_seconds=0.05, warmup_s=0.01)
        assert m.latency_ms > 0 and time.monotonic() - start >= 0.5
        assert holder.poll() is not None  # it measured only once the holder had finished
        assert any(
            "waited" in r.getMessage() and "'local-cpu'" in r.getMessage() for r in caplog.records
        )
    finally:
        holder.wait(10)


def test_other_devices_are_not_held_up() -> None:
    other = DeviceSpec("other-local", threads=1)
    with device_lock(other):
        start = time.monotonic()
        measure(mlp(8, 1), "local-cpu", max_seconds=0.05, warmup_s=0.01)
        assert time.monotonic() - start < 5


def test_a_lock_held_too_long_is_an_error_naming_the_device() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "3"], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        spec = DeviceSpec("local-cpu-x", threads=1)
        busy = DeviceSpec("local-cpu", threads=1)
        with (
            pytest.raises(MeasurementError, match="another process has measured device"),
            device_lock(busy, timeout=0.2),
        ):
            pass
        with device_lock(spec, timeout=0.2) as waited:
            assert waited < 0.2
    finally:
        holder.kill()
        holder.wait(10)
