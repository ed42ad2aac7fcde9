"""Measured costs in the search loop: the measurement lane and the predictor's calibration.

Every candidate the search trains is also measured on the device, and the measurement (not
the prediction) becomes the trial's latency (and energy, where the device has a meter). The
:class:`MeasurementLane` owns the device for the driver:

- a *local* device is measured by the driver only while no trial is training (the driver
  stops handing out trials until the trials in flight are done), so a measurement never
  shares the cores with training;
- a *remote* device (an agent or a Ray node) is measured in a background thread while
  training goes on here; its value lands when it is ready;
- a device that stops answering is not waited for: its trials are told with predicted costs
  (``cost_source`` "predicted (device unreachable)") and measured when it answers again;
- every :data:`DRIFT_EVERY` candidates the base model is measured again, so that a device
  that has become faster or slower since the budget was resolved is seen (:func:`report_drift`).

The device predictor still screens candidates before training, through a calibration refit
on the measured candidates (``nas.searching._calibration``). Every measurement also goes into the
device's measurement store, where the next ``hwnas device profile`` refits the device
predictor on it. :func:`predictor_warning` is the quality gate a search applies to a
stored or freshly profiled predictor.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_logger = logging.getLogger(__name__)

COST_MODES = ("auto", "measured", "predicted")
"""``--costs``: ``measured`` (every trained candidate measured; an unreachable device is an
error at the start), ``predicted`` (predictions only, the front measured at the end) and
``auto`` (measured wherever the device answers; the default)."""

MEASURED = "measured"
PREDICTED = "predicted"
UNREACHABLE = "predicted (device unreachable)"

RETRY_AFTER_S = 30.0
"""Seconds before an unreachable device is tried again."""

DRIFT_EVERY = 10
"""Candidates measured between two re-measurements of the base model."""

DRIFT_WARN = 0.2
"""Change of the base model's latency from the search's start that is warned about (0.2: 20%)."""


def measured_costs(measurement: Any, memory_mb: float) -> dict[str, Any]:
    """A trial's ``measured`` attribute from a :class:`latency_models.Measurement`."""
    return {
        "latency_ms": float(measurement.latency_ms),
        "energy_mj": measurement.energy_mj,
        "energy_source": measurement.energy_source,
        "memory_mb": memory_mb,
        "peak_memory_mb": (
            measurement.peak_memory_bytes / 1e6
            if measurement.peak_memory_bytes is not None
            else None
        ),
        "latency_cv": measurement.cv,
        "n_runs": measurement.n_runs,
    }


POOR_MAPE_PCT = 20.0
"""A held-out error above this makes a predictor poor, whatever the noise floor."""


def session_noise_pct(records: Any) -> float | None:
    """The device's noise floor: median spread (%) of graphs measured in several sessions.

    ``(slowest / fastest - 1)`` of each graph's sessions on the same runtime and host, the
    median over graphs with at least two; None with fewer than five such graphs.
    """
    sessions: dict[tuple[str, str, str], list[float]] = {}
    for rec in records:
        m = rec.measurement
        value = getattr(m, "latency_ms", None)
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            key = (rec.graph_hash, m.runtime_version, m.host)
            sessions.setdefault(key, []).append(float(value))
    spreads = [100.0 * (max(v) / min(v) - 1.0) for v in sessions.values() if len(v) >= 2]
    return float(statistics.median(spreads)) if len(spreads) >= 5 else None


def predictor_warning(
    metrics: Mapping[str, Any], device: str, *, noise_pct: float | None = None
) -> str | None:
    """A warning when a predictor's held-out error is poor for its device, else None.

    Poor: a held-out mean error (MAPE) above :data:`POOR_MAPE_PCT`, or above twice the
    device's noise floor (at least 10%), or a profile taken while the host was busy.
    """
    fix = (
        f"Measure on a quiet machine (`hwnas device check {device}` shows the noise), "
        f"re-profile with `hwnas device profile {device}`, or keep --costs auto/measured "
        "so that every trained candidate is measured"
    )
    if metrics.get("noisy_profile"):
        load = metrics.get("profile_max_load")
        return (
            f"the predictor of {device} was profiled while the host was busy (load average up "
            f"to {load}); its predictions may be far off. {fix}."
        )
    mape = metrics.get("mape")
    if not isinstance(mape, (int, float)) or not math.isfinite(mape):
        return None
    within = metrics.get("within_10")
    shown = f"held-out error {mape:.1f}% (mean)" + (
        f", {100 * within:.0f}% of graphs within ±10%" if isinstance(within, (int, float)) else ""
    )
    floor = f"; noise floor {noise_pct:.1f}%" if noise_pct is not None else ""
    if mape > POOR_MAPE_PCT or (noise_pct is not None and mape > max(10.0, 2 * noise_pct)):
        return f"the latency predictor of {device} is poor: {shown}{floor}. {fix}."
    return None


_UNREACHABLE_ERRORS = ("AgentUnreachableError", "AgentTimeoutError", "AgentBusyError")


@dataclass
class LaneResult:
    """One finished measurement of the lane: a ``Measurement`` or why there is none."""

    number: int
    measurement: Any | None
    reason: str = ""


class MeasurementLane:
    """Measures the search's candidates on the device without overlapping training.

    Args:
        device: The ``DeviceSpec``.
        max_seconds: Cap on each measurement's timed loop (s).
    """

    def __init__(
        self, device: Any, *, max_seconds: float = 2.0, base_graph: bytes | None = None
    ) -> None:
        self.device = device
        self.base_graph = base_graph
        self.drift: list[tuple[int, float]] = []  # (candidates measured, base latency ms)
        self._measured = 0
        self._drift_told = 0
        self.local = getattr(device, "kind", "local") == "local"
        self.max_seconds = max_seconds
        self.down_since: float | None = None
        self._queue: list[tuple[int, bytes]] = []
        self._retry: list[tuple[int, bytes]] = []
        self._futures: dict[int, tuple[Future[Any], bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.seconds = 0.0

    @property
    def pending(self) -> int:
        """Candidates submitted and not yet returned (unreachable ones waiting excluded)."""
        return len(self._queue) + len(self._futures)

    @property
    def unmeasured(self) -> list[int]:
        """Trial numbers told with predicted costs, waiting for the device to answer."""
        return [n for n, _ in self._retry]

    def submit(self, number: int, graph: bytes) -> None:
        """Queue the candidate graph of trial ``number``."""
        if self.local:
            self._queue.append((number, graph))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hwnas-measure")
        self._futures[number] = (self._pool.submit(self._measure, graph), graph)

    def wants_drain(self, capacity: int) -> bool:
        """Whether the driver should stop handing out trials so that the lane can measure."""
        return self.local and len(self._queue) >= max(1, capacity)

    def collect(self, *, idle: bool, block: bool = False) -> list[LaneResult]:
        """Finished measurements.

        Args:
            idle: No trial is training now: a local device may be measured.
            block: Wait for a remote device's measurements in flight.
        """
        out: list[LaneResult] = []
        if self.local and idle:
            queue, self._queue = self._queue, []
            for number, graph in queue:
                out.append(self._run(number, graph))
        for number, (future, graph) in list(self._futures.items()):
            if block or future.done():
                del self._futures[number]
                out.append(self._result(number, future, graph=graph))
        return out

    def retry_unmeasured(self, *, idle: bool, force: bool = False) -> list[LaneResult]:
        """Measure the trials told with predicted costs, once the device answers again."""
        if not self._retry or not (idle or not self.local):
            return []
        due = (
            force or self.down_since is None or time.monotonic() - self.down_since > RETRY_AFTER_S
        )
        if not due:
            return []
        waiting, self._retry = self._retry, []
        self.down_since = None
        results = []
        for i, (number, graph) in enumerate(waiting):
            result = self._run(number, graph, retrying=True)
            if result.measurement is None:  # still down (queued again): keep the rest waiting
                self._retry.extend(w for w in waiting[i + 1 :] if w not in self._retry)
                break
            results.append(result)
        return results

    def shutdown(self) -> None:
        """Stop the background thread (remote devices)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- measuring ----------------------------------------------------------------------

    def _measure(self, graph: bytes) -> Any:
        from latency_models import measure_cached
        from latency_models.measurement._measure import check_measurement

        if self._down_recently():  # a remote graph queued after the device stopped answering
            raise ConnectionError(f"device {self.device.name!r} did not answer a moment ago")
        start = time.perf_counter()
        try:
            measurement = measure_cached(graph, self.device, max_seconds=self.max_seconds)
        finally:
            self.seconds += time.perf_counter() - start
        check_measurement(measurement, self.device.name)
        self._measured += 1
        if self.base_graph is not None and self._measured % DRIFT_EVERY == 0:
            self._measure_base()
        return measurement

    def _measure_base(self) -> None:
        """The base model again, beside the candidates (a failure here fails no trial)."""
        from latency_models import measure_cached
        from latency_models.measurement._measure import check_measurement

        assert self.base_graph is not None
        start = time.perf_counter()
        try:
            m = measure_cached(
                self.base_graph, self.device, remeasure=True, max_seconds=self.max_seconds
            )
            check_measurement(m, self.device.name)
            self.drift.append((self._measured, float(m.latency_ms)))
        except Exception as exc:  # the next candidate finds out whether the device is down
            _logger.debug("base model not re-measured on %s: %s", self.device.name, exc)
        finally:
            self.seconds += time.perf_counter() - start

    def take_drift(self) -> list[tuple[int, float]]:
        """Re-measurements of the base model not yet taken: (candidates measured, ms)."""
        new = self.drift[self._drift_told :]
        self._drift_told += len(new)
        return new

    def _down_recently(self) -> bool:
        return self.down_since is not None and time.monotonic() - self.down_since < RETRY_AFTER_S

    def _run(self, number: int, graph: bytes, *, retrying: bool = False) -> LaneResult:
        if self._down_recently() and not retrying:
            self._retry.append((number, graph))
            return LaneResult(number, None, UNREACHABLE)
        future: Future[Any] = Future()
        try:
            future.set_result(self._measure(graph))
        except Exception as exc:
            future.set_exception(exc)
        return self._result(number, future, graph=graph)

    def _result(
        self, number: int, future: Future[Any], *, graph: bytes | None = None
    ) -> LaneResult:
        try:
            return LaneResult(number, future.result())
        except Exception as exc:
            if type(exc).__name__ in _UNREACHABLE_ERRORS or isinstance(exc, ConnectionError):
                if self.down_since is None:
                    _logger.warning(
                        "device %s does not answer (%s); trials go on with predicted costs "
                        "and are measured when it answers again",
                        self.device.name,
                        exc,
                    )
                self.down_since = time.monotonic()
                if graph is not None:
                    self._retry.append((number, graph))
                return LaneResult(number, None, UNREACHABLE)
            _logger.warning(
                "trial %d could not be measured on %s: %s", number, self.device.name, exc
            )
            return LaneResult(number, None, f"{PREDICTED} (measurement failed: {exc})")


def report_drift(study: Any, lane: MeasurementLane, start_ms: float | None, device: str) -> None:
    """Keep the lane's new base re-measurements (study attr ``base_drift``); warn on a change.

    The first re-measurement more than :data:`DRIFT_WARN` off the base latency measured at the
    search's start is warned about: the budget's limit, resolved against that value, and the
    candidates measured before and after no longer compare alike.
    """
    new = lane.take_drift()
    if not new or not start_ms:
        return
    history = list(study.user_attrs.get("base_drift") or [])
    warned = any(abs(e["ratio"] - 1.0) > DRIFT_WARN for e in history)
    for measured, ms in new:
        ratio = ms / start_ms
        history.append({"candidates_measured": measured, "latency_ms": ms, "ratio": ratio})
        if abs(ratio - 1.0) > DRIFT_WARN and not warned:
            warned = True
            _logger.warning(
                "the base model now measures %.4g ms on %s, %.2fx the %.4g ms measured at the "
                "search's start: the device runs %s than when the budget was resolved, so "
                "candidates measured now and then do not compare alike. Keep other work off "
                "the device (`hwnas device check %s` shows its noise); an export judges a "
                "relative budget side by side with the base model again",
                ms,
                device,
                ratio,
                start_ms,
                "slower" if ratio > 1 else "faster",
                device,
            )
    study.set_user_attr("base_drift", history)


__all__ = [
    "COST_MODES",
    "LaneResult",
    "MeasurementLane",
    "measured_costs",
    "predictor_warning",
    "report_drift",
    "session_noise_pct",
]
