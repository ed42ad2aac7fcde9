"""Verification: measure the feasible Pareto front on the device, after all training.

Each front trial's config is applied and exported again (latency depends on the graph's
structure and precisions, not on the recovered weights), measured through
``latency_models.measure_cached`` (so a graph measured before is not measured twice), and
the measured values are stored in ``trial.user_attrs["measured"]`` beside the predicted
ones. The predictor's error on the front is logged and kept in
``study.user_attrs["verification"]``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.searching._run import Run, set_finished_trial_user_attr

if TYPE_CHECKING:
    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)


def verify_front(run: Run, ctx: TrialContext, *, remeasure: bool = False) -> dict[str, Any]:
    """Measure every feasible Pareto trial of ``run`` on ``ctx.device``.

    Args:
        run: The run (its study is written).
        ctx: The search's context (space, task, device, calibration data).
        remeasure: Measure trials that already carry measured values again.

    Returns:
        The verification summary: per trial ``{"predicted_ms", "measured_ms",
        "error_pct"}``, and the mean absolute percentage error ``latency_mape``.
    """
    from latency_models import measure_cached
    from nas.searching._trial import export_graph
    from search_spaces import CompressionConfig

    front = run.pareto_trials()
    if not front:
        _logger.warning("nothing to verify: no feasible trial on the front")
        return {}
    study = run.study
    per_trial: dict[str, dict[str, float]] = {}
    for trial in front:
        if "measured" in trial.user_attrs and not remeasure:
            measured = trial.user_attrs["measured"]
        else:
            config = CompressionConfig.from_dict(trial.user_attrs["config"])
            with tempfile.TemporaryDirectory(prefix="hwnas-verify-") as tmp:
                model = ctx.space.apply(ctx.task.model, config)
                graph = export_graph(ctx, model, config, Path(tmp) / "front.onnx")
                measurement = measure_cached(graph, ctx.device, remeasure=remeasure)
            measured = {
                "latency_ms": float(measurement.latency_ms),
                "energy_mj": measurement.energy_mj,
                "energy_source": measurement.energy_source,
                "memory_mb": trial.user_attrs["predicted"]["memory_mb"],
                "peak_memory_mb": (
                    measurement.peak_memory_bytes / 1e6
                    if measurement.peak_memory_bytes is not None
                    else None
                ),
                "latency_cv": measurement.cv,
            }
            set_finished_trial_user_attr(study, trial, "measured", measured)
        predicted = float(trial.user_attrs["predicted"]["latency_ms"])
        actual = float(measured["latency_ms"])
        per_trial[str(trial.number)] = {
            "predicted_ms": predicted,
            "measured_ms": actual,
            "error_pct": 100.0 * (predicted - actual) / actual,
        }
    errors = [abs(v["error_pct"]) for v in per_trial.values()]
    summary = {
        "device": ctx.device.name,
        "n_trials": len(per_trial),
        "latency_mape": sum(errors) / len(errors),
        "within_10pct": sum(e <= 10 for e in errors) / len(errors),
        "trials": per_trial,
    }
    study.set_user_attr("verification", summary)
    run.refresh()
    _logger.info(
        "verified %d front trial(s) on %s: latency predictor error %.1f%% mean (max %.1f%%), "
        "%.0f%% within 10%%",
        len(errors),
        ctx.device.name,
        summary["latency_mape"],
        max(errors),
        100 * summary["within_10pct"],
    )
    return summary


__all__ = ["verify_front"]
