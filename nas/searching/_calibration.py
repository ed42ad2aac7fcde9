"""The latency predictor's calibration on a search's own measured candidates.

The device predictor screens candidates before training; :class:`PredictorTracker` records
predicted against measured latency for every measured candidate and refits a
:class:`Calibration` of the predictor on them (every ``refit_every`` measurements, or sooner
when its rolling error is high), choosing by leave-one-out error among no correction, a
factor, a power law and a power law with an int8 term. Its error on the candidates the
search explores is kept per trial and by quarter of the run.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

_logger = logging.getLogger(__name__)

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
        n: Measured candidates it was fit on (0: none; then the identity, or a fit on the
            graphs measured at the search's start).
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
        start: The base model and the space's cheapest configs as measured at the search's
            start (``raw_ms``, ``measured_ms``, ``int8_share``): the first calibration, and
            part of every refit (:meth:`start_from`).
    """

    refit_every: int = 5
    rows: list[dict[str, Any]] = field(default_factory=list)
    refits: list[dict[str, Any]] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    start: list[dict[str, Any]] = field(default_factory=list)

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
            tracker.start = [dict(r) for r in summary.get("start_points", [])]
        return tracker

    def start_from(self, points: Sequence[Mapping[str, Any]] | None) -> None:
        """Calibrate on the graphs measured at the search's start, before any candidate.

        The base model and the cheapest configs span the space's latencies, so a predictor
        that is off by a factor on this device (a short or noisy profile) is corrected before
        it screens the first candidate; left alone, it could reject every candidate before
        training, and with nothing measured the calibration would never learn. A tracker that
        already holds measured candidates (a resumed search) keeps its own calibration.
        """
        usable: list[dict[str, Any]] = [
            {"raw_ms": float(p["predicted_ms"]), "measured_ms": float(p["measured_ms"]),
             "int8_share": float(p.get("int8_share", 0.0)), "graph": str(p.get("graph", ""))}
            for p in points or []
            if (p.get("predicted_ms") or 0) > 0 and (p.get("measured_ms") or 0) > 0
        ]  # fmt: skip
        if self.rows or len(usable) < 3:
            return
        self.start = usable
        fitted, scores = Calibration.choose(
            [r["raw_ms"] for r in usable],
            [r["measured_ms"] for r in usable],
            [r["int8_share"] for r in usable],
        )
        self.calibration = replace(fitted, n=0)
        _logger.info(
            "latency predictor calibrated on the %d graphs measured at the start: %s "
            "(leave-one-out median error %.1f%%, uncalibrated %.1f%%)",
            len(usable),
            fitted.terms,
            scores[fitted.terms],
            scores["identity"],
        )

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
        rows = self.start + self.rows[-MAX_CALIBRATION_ROWS:]
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
            "latency predictor recalibrated on %d measured candidates%s: %s (leave-one-out "
            "median error %.1f%%, uncalibrated %.1f%%; rolling error was %.1f%%)",
            len(rows) - len(self.start),
            f" and {len(self.start)} graphs measured at the start" if self.start else "",
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
            "start_points": self.start,
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


__all__ = [
    "CALIBRATION_TERMS",
    "Calibration",
    "PredictorTracker",
    "int8_share",
    "quarter_errors",
]
