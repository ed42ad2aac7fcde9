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
  (``cost_source`` "predicted (device unreachable)") and measured when it answers again.

The device predictor still screens candidates before training. :class:`PredictorTracker`
records predicted against measured latency for every measured candidate and refits a
:class:`Calibration` of the predictor on them (every ``refit_every`` measurements, or sooner
when its rolling error is high), so its error on the candidates the search explores falls as
the run goes on. Every measurement also goes into the device's measurement store, where the
next ``hwnas device profile`` refits the device predictor on it.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

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

MAX_CALIBRATION_ROWS = 200
"""The newest measured candidates a refit uses (leave-one-out grows with their square)."""

ROLLING_WINDOW = 8
"""Measured candidates in the rolling error of the predictor."""

REFIT_ERROR_PCT = 10.0
"""A rolling median error above this refits the calibration before ``refit_every``."""

_RIDGE = (1.0, 0.25)
"""Pull of the calibration's slope and int8 term towards the uncorrected predictor (in
pseudo-observations): the slope needs a spread of latencies to be known, the int8 term only
a few candidates of each kind."""


def int8_share(config: Mapping[str, Any]) -> float:
    """Share of a config's quantizable layers below 32 bits (0..1)."""
    bits = dict(config.get("bits") or {})
    if not bits:
        return 0.0
    return sum(1 for b in bits.values() if int(b) < 32) / len(bits)


CALIBRATION_TERMS = ("identity", "scale", "slope", "int8")
"""The calibrations a refit chooses among, by leave-one-out error: none; a constant factor;
a power law of the prediction; and a power law with a factor for the int8 share."""


@dataclass(frozen=True)
class Calibration:
    """A correction of the device predictor, fit on the search's own measured candidates.

    ``log(measured) = a + b * log(predicted) + c * int8_share``. The slope and the int8 term
    are ridge-pulled towards the uncorrected predictor (``b = 1, c = 0``), and a refit keeps
    the simplest of :data:`CALIBRATION_TERMS` whose leave-one-out error on the measured
    candidates is lowest, so that a few noisy measurements cannot make it worse than the
    device predictor alone.

    Attributes:
        coef: ``(a, b, c)``.
        n: Measured candidates it was fit on (0: the identity).
        terms: Which of :data:`CALIBRATION_TERMS` it is.
    """

    coef: tuple[float, float, float] = (0.0, 1.0, 0.0)
    n: int = 0
    terms: str = "identity"

    def apply(self, predicted_ms: float, share: float) -> float:
        """The calibrated latency (ms) of a candidate predicted at ``predicted_ms``."""
        if self.terms == "identity" or not predicted_ms > 0:
            return predicted_ms
        a, b, c = self.coef
        return float(math.exp(a + b * math.log(predicted_ms) + c * share))

    @classmethod
    def fit(
        cls,
        predicted: Sequence[float],
        measured: Sequence[float],
        shares: Sequence[float],
        *,
        terms: str = "int8",
    ) -> Calibration:
        """Ridge least squares in log space with the given ``terms``."""
        p = np.log(np.asarray(predicted, dtype=np.float64))
        m = np.log(np.asarray(measured, dtype=np.float64))
        s = np.asarray(shares, dtype=np.float64)
        n = len(p)
        if terms == "identity":
            return cls(n=n)
        if terms == "scale":
            return cls(coef=(float(np.median(m - p)), 1.0, 0.0), n=n, terms=terms)
        X = np.column_stack([np.ones_like(p), p - p.mean(), s])
        # the prior is the identity in these centred columns: a = mean(p), b = 1, c = 0
        prior = np.array([p.mean(), 1.0, 0.0])
        ridge = [0.0, _RIDGE[0], _RIDGE[1] if terms == "int8" else 1e9]
        weight = np.diag(ridge)
        beta = np.linalg.solve(X.T @ X + weight, X.T @ m + weight @ prior)
        a = float(beta[0] - beta[1] * p.mean())
        return cls(coef=(a, float(beta[1]), float(beta[2])), n=n, terms=terms)

    @classmethod
    def choose(
        cls, predicted: Sequence[float], measured: Sequence[float], shares: Sequence[float]
    ) -> tuple[Calibration, dict[str, float]]:
        """The calibration of the lowest leave-one-out median error, and every kind's error.

        Ties go to the simpler kind (earlier in :data:`CALIBRATION_TERMS`).
        """
        n = len(predicted)
        scores: dict[str, float] = {}
        for terms in CALIBRATION_TERMS:
            errors = []
            for i in range(n):
                keep = [j for j in range(n) if j != i]
                fit = cls.fit(
                    [predicted[j] for j in keep],
                    [measured[j] for j in keep],
                    [shares[j] for j in keep],
                    terms=terms,
                )
                errors.append(abs(fit.apply(predicted[i], shares[i]) / measured[i] - 1.0))
            scores[terms] = 100.0 * float(np.median(errors))
        best = min(
            CALIBRATION_TERMS, key=lambda t: (round(scores[t], 6), CALIBRATION_TERMS.index(t))
        )
        return cls.fit(predicted, measured, shares, terms=best), scores

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (a trial payload carries it to the worker)."""
        return {"coef": list(self.coef), "n": self.n, "terms": self.terms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration:
        """Inverse of :meth:`to_dict`; None gives the identity."""
        if not data:
            return cls()
        a, b, c = (float(x) for x in data["coef"])
        terms = str(data.get("terms", "int8" if int(data["n"]) else "identity"))
        return cls(coef=(a, b, c), n=int(data["n"]), terms=terms)


@dataclass
class PredictorTracker:
    """Predicted against measured latency of a search's candidates, and the calibration.

    Attributes:
        refit_every: Refit the calibration after this many new measurements (0: never).
        rows: Per measured candidate: ``number``, ``predicted_ms`` (what the search decided
            on, calibrated), ``raw_ms`` (the device predictor alone), ``measured_ms``,
            ``error_pct`` (of ``predicted_ms``), ``int8_share``, ``calibration_n``.
        refits: Per refit: ``after`` (measurements), ``coef``, ``rolling_error_pct``.
    """

    refit_every: int = 5
    rows: list[dict[str, Any]] = field(default_factory=list)
    refits: list[dict[str, Any]] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def from_summary(
        cls, summary: Mapping[str, Any] | None, *, refit_every: int
    ) -> PredictorTracker:
        """A tracker that goes on from a stored :meth:`summary` (a resumed search)."""
        tracker = cls(refit_every=refit_every)
        if summary:
            tracker.rows = [dict(r) for r in summary.get("trials", [])]
            tracker.refits = [dict(r) for r in summary.get("refits", [])]
            tracker.calibration = Calibration.from_dict(summary.get("calibration"))
        return tracker

    def add(self, number: int, *, raw_ms: float, predicted_ms: float, measured_ms: float,
            share: float) -> bool:  # fmt: skip
        """Record one measured candidate; refit when due. Returns whether it refit."""
        self.rows.append(
            {
                "number": number,
                "raw_ms": raw_ms,
                "predicted_ms": predicted_ms,
                "measured_ms": measured_ms,
                "error_pct": 100.0 * (predicted_ms - measured_ms) / measured_ms,
                "int8_share": share,
                "calibration_n": self.calibration.n,
            }
        )
        if self.refit_every <= 0:
            return False
        new = len(self.rows) - self.calibration.n
        rolling = self.rolling_error_pct()
        due = new >= self.refit_every or (new >= 2 and rolling > REFIT_ERROR_PCT)
        if not due or len(self.rows) < 3:
            return False
        rows = self.rows[-MAX_CALIBRATION_ROWS:]
        self.calibration, scores = Calibration.choose(
            [r["raw_ms"] for r in rows],
            [r["measured_ms"] for r in rows],
            [r["int8_share"] for r in rows],
        )
        self.calibration = replace(self.calibration, n=len(self.rows))
        self.refits.append(
            {
                "after": len(self.rows),
                "terms": self.calibration.terms,
                "coef": [round(x, 5) for x in self.calibration.coef],
                "loo_median_error_pct": {k: round(v, 2) for k, v in scores.items()},
                "rolling_error_pct": round(rolling, 2),
            }
        )
        _logger.info(
            "latency predictor recalibrated on %d measured candidates: %s (leave-one-out "
            "median error %.1f%%, uncalibrated %.1f%%; rolling error was %.1f%%)",
            len(rows),
            self.calibration.terms,
            scores[self.calibration.terms],
            scores["identity"],
            rolling,
        )
        return True

    def rolling_error_pct(self, window: int = ROLLING_WINDOW) -> float:
        """Median absolute error (%) of the last ``window`` predictions the search used."""
        recent = [abs(r["error_pct"]) for r in self.rows[-window:]]
        return float(statistics.median(recent)) if recent else float("nan")

    def summary(self) -> dict[str, Any]:
        """The study attribute ``predictor_tracking``."""
        return {
            "trials": self.rows,
            "refits": self.refits,
            "calibration": self.calibration.to_dict(),
            "rolling_median_error_pct": _round(self.rolling_error_pct()),
            "quarters_median_error_pct": quarter_errors(self.rows),
        }


def quarter_errors(rows: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """Median absolute error (%) of each quarter of ``rows`` (in measurement order)."""
    n = len(rows)
    out: list[float | None] = []
    for q in range(4):
        part = rows[q * n // 4 : (q + 1) * n // 4]
        out.append(_round(statistics.median(abs(r["error_pct"]) for r in part)) if part else None)
    return out


def _round(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


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


def check_measurement(measurement: Any, device: str) -> None:
    """Refuse a measurement whose latency is not a finite number > 0 (never stored)."""
    from latency_models import MeasurementError

    value = getattr(measurement, "latency_ms", None)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MeasurementError(f"device {device!r} returned a corrupt latency {value!r}")
    energy = getattr(measurement, "energy_mj", None)
    if energy is not None and (not math.isfinite(energy) or energy < 0):
        raise MeasurementError(f"device {device!r} returned a corrupt energy {energy!r}")


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

    def __init__(self, device: Any, *, max_seconds: float = 2.0) -> None:
        self.device = device
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
        for number, graph in waiting:
            result = self._run(number, graph, retrying=True)
            if result.measurement is not None:
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

        start = time.perf_counter()
        try:
            measurement = measure_cached(graph, self.device, max_seconds=self.max_seconds)
        finally:
            self.seconds += time.perf_counter() - start
        check_measurement(measurement, self.device.name)
        return measurement

    def _run(self, number: int, graph: bytes, *, retrying: bool = False) -> LaneResult:
        down = self.down_since is not None and time.monotonic() - self.down_since < RETRY_AFTER_S
        if down and not retrying:
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


__all__ = [
    "COST_MODES",
    "Calibration",
    "LaneResult",
    "MeasurementLane",
    "PredictorTracker",
    "check_measurement",
    "int8_share",
    "measured_costs",
    "predictor_warning",
    "quarter_errors",
    "session_noise_pct",
]
