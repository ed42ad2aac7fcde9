"""Energy meters: Linux RAPL (powercap) and NVIDIA NVML cumulative energy counters.

This module uses the standard library only (``pynvml`` is imported when an NVML meter is
opened), because the measurement agent imports it on devices that have nothing but
onnxruntime and numpy.

A meter reads a cumulative counter before and after a timed loop; the energy of the loop is
the wrap-aware difference. Both counters measure the whole package or board, so the energy
includes static power and any other work running at the same time: measure on a quiet
device. Reader functions are injectable so the arithmetic is testable on recorded readings.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

RAPL_ROOT = Path("/sys/class/powercap")
"""Where Linux exposes RAPL zones (``intel-rapl:N``, also used by AMD CPUs)."""

METER_KINDS = ("none", "rapl", "nvml")
"""Energy meter names a device may declare."""


class MeterUnavailableError(OSError):
    """A meter cannot be read here; the message says why and how to fix it."""


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Difference between two readings of a counter that wraps to 0 after ``max_range``.

    Args:
        start: Counter reading at the start (counter units, e.g. µJ).
        end: Counter reading at the end.
        max_range: The counter's range: it counts from 0 up to ``max_range`` and wraps.

    Returns:
        ``end - start``, or the wrapped difference when ``end < start`` (at most one wrap
        between the readings is assumed: read more often than the counter's wrap period).

    Raises:
        ValueError: a reading lies outside ``[0, max_range]``.
    """
    for value in (start, end):
        if value < 0 or value > max_range:
            raise ValueError(
                f"counter reading {value} is outside [0, {max_range}]; check max_range "
                "(RAPL: max_energy_range_uj of the same zone)."
            )
    if end >= start:
        return end - start
    return max_range - start + end


def integrate_counter(readings: Sequence[int], max_range: int) -> int:
    """Total increase over a series of readings of one wrapping counter.

    Reading often (more often than the wrap period) lets a long loop survive several wraps.

    Args:
        readings: Successive counter readings (counter units).
        max_range: The counter's range (see :func:`counter_delta`).

    Returns:
        The summed wrap-aware differences of consecutive readings (counter units).
    """
    return sum(counter_delta(a, b, max_range) for a, b in itertools.pairwise(readings))


def _read_text(path: Path) -> str:
    return path.read_text()


class EnergyMeter:
    """A cumulative energy counter.

    Call :meth:`read` before and after the measured work, then :meth:`joules_between` on the
    two readings. ``min_window_s`` is how long the measured work must last for the counter's
    update period not to dominate the result.
    """

    name: str = "none"
    min_window_s: float = 0.0

    def read(self) -> tuple[int, ...]:
        """An opaque reading of the counter(s)."""
        raise NotImplementedError

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        """Energy between two readings, in joules."""
        raise NotImplementedError


@dataclass(frozen=True)
class RaplZone:
    """One RAPL package zone: its ``energy_uj`` file and counter range in µJ."""

    energy_path: Path
    max_range_uj: int


class RaplMeter(EnergyMeter):
    """Linux powercap RAPL: sums the ``energy_uj`` counters of all package zones.

    Args:
        root: The powercap folder (``/sys/class/powercap``; tests pass a fake tree).
        reader: Reads a file's text (tests inject recorded readings or errors).

    Raises:
        MeterUnavailableError: no package zone exists, or ``energy_uj`` is not readable
            (since Linux 5.10 it is readable by root only).
    """

    name = "rapl"
    min_window_s = 0.2  # the counter updates about every millisecond

    def __init__(
        self, root: Path = RAPL_ROOT, *, reader: Callable[[Path], str] = _read_text
    ) -> None:
        self._reader = reader
        zones = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)
        if not zones:
            raise MeterUnavailableError(
                f"no RAPL package zone under {root} (not a Linux x86 host, or the powercap "
                "interface is not exposed in this VM or container)."
            )
        self.zones: list[RaplZone] = []
        for zone in zones:
            energy = zone / "energy_uj"
            max_range = int(self._read(zone / "max_energy_range_uj"))
            self.zones.append(RaplZone(energy, max_range))
        self.read()  # fail now, not in the middle of a measurement

    def _read(self, path: Path) -> str:
        try:
            return self._reader(path).strip()
        except PermissionError as exc:
            raise MeterUnavailableError(
                f"cannot read {path}: permission denied. Since Linux 5.10 RAPL counters are "
                f"readable by root only; run the measurement as root or `sudo chmod a+r "
                f"{path}` (this exposes power side channels; see CVE-2020-8694)."
            ) from exc
        except FileNotFoundError as exc:
            raise MeterUnavailableError(f"RAPL file {path} does not exist.") from exc

    def read(self) -> tuple[int, ...]:
        """Current ``energy_uj`` of each package zone (µJ)."""
        return tuple(int(self._read(z.energy_path)) for z in self.zones)

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        """Energy of all package zones between two readings (J), wrap-aware."""
        total_uj = sum(
            counter_delta(s, e, z.max_range_uj)
            for s, e, z in zip(start, end, self.zones, strict=True)
        )
        return total_uj / 1e6


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU board energy from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since load).

    The counter updates slowly: every 108 ms on an H200 (driver 580, measured by
    ``experiments/gpu_device_check.py``), in steps of that period's energy, so a window of
    ``min_window_s`` = 2 s reads within one step (about 5%) of the true energy; 1 s would
    allow 11%. On that GPU the meter agreed with NVML's sampled power within 0.5% at idle
    (80 W) and 0.05% under a bf16 matmul load (692 W).

    Args:
        index: The GPU: its NVML index, or its UUID (``"GPU-..."``, as
            ``CUDA_VISIBLE_DEVICES`` may name it). NVML numbers GPUs in PCI bus order; CUDA
            does too only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so on a host with several
            GPUs name them by UUID or set that variable.
        read_mj: Returns the counter in mJ (tests inject recorded readings); by default
            ``pynvml`` is imported and the GPU queried.

    Raises:
        MeterUnavailableError: ``pynvml`` is missing, or NVML or the GPU has no counter (a
            MIG instance has none of its own).
    """

    name = "nvml"
    min_window_s = 2.0
    _MAX = 2**64 - 1  # unsigned long long; in practice it never wraps

    def __init__(self, index: int | str = 0, *, read_mj: Callable[[], int] | None = None) -> None:
        if read_mj is None:
            read_mj = _nvml_reader(index)
        self._read_mj = read_mj
        self.read()

    def read(self) -> tuple[int, ...]:
        """The board's total energy counter (mJ)."""
        try:
            return (int(self._read_mj()),)
        except MeterUnavailableError:
            raise
        except Exception as exc:  # pynvml.NVMLError and friends
            raise MeterUnavailableError(f"reading the NVML energy counter failed: {exc}") from exc

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        """Board energy between two readings (J)."""
        return counter_delta(start[0], end[0], self._MAX) / 1e3


def _nvml_reader(index: int | str) -> Callable[[], int]:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailableError(
            "the NVML meter needs pynvml: `pip install nvidia-ml-py`."
        ) from exc
    try:
        pynvml.nvmlInit()
        if isinstance(index, str):
            handle = pynvml.nvmlDeviceGetHandleByUUID(index)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # NVMLError: no driver, no GPU, counter not supported (pre-Volta)
        raise MeterUnavailableError(
            f"NVML energy counter unavailable on GPU {index}: {exc}"
        ) from exc

    def read_mj() -> int:
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    return read_mj


def visible_gpu() -> int | str:
    """The GPU this process runs on, as NVML names it: ``CUDA_VISIBLE_DEVICES``'s first entry.

    An index, or a ``GPU-``/``MIG-`` UUID passed through as a string; 0 when unset or empty.
    """
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    return first if first.startswith(("GPU-", "MIG-")) else 0


def open_meter(kind: str) -> tuple[EnergyMeter | None, str]:
    """Open the energy meter ``kind`` if it can be read here.

    Args:
        kind: One of :data:`METER_KINDS`.

    Returns:
        ``(meter, "")``, or ``(None, reason)`` saying why energy will not be measured.

    Raises:
        ValueError: ``kind`` is not a known meter.
    """
    if kind not in METER_KINDS:
        raise ValueError(f"energy meter must be one of {list(METER_KINDS)}, got {kind!r}.")
    if kind == "none":
        return None, "the device declares no energy meter"
    try:
        if kind == "rapl":
            return RaplMeter(), ""
        return NvmlMeter(visible_gpu()), ""
    except MeterUnavailableError as exc:
        return None, str(exc)


def rapl_readable(root: Path = RAPL_ROOT) -> bool:
    """Whether RAPL package energy can be read on this machine (cheap; no exception)."""
    try:
        RaplMeter(root)
    except (MeterUnavailableError, OSError, ValueError):
        return False
    return True
