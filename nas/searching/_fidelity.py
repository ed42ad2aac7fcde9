"""Fidelity of the search: does the short recovery rank candidates like a longer one?

The search judges each candidate after a short distillation (``recovery_steps``). For a
sample of trained trials, :func:`fidelity_check` recovers the same configs again with a
longer fine-tune and reports Kendall's tau between the two accuracy rankings: near 1, the
short recovery is a faithful proxy; low, the search ranks by noise and needs more steps.
:func:`rank_agreement` is the same tau for any two fidelities (successive halving reports it
between its rungs).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.searching._run import Run
    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)


def _sample(trials: list[Any], n: int) -> list[Any]:
    """``n`` trials spread evenly over the range of short-recovery accuracies."""
    ordered = sorted(trials, key=lambda t: t.user_attrs["accuracy"])
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1)
    return [ordered[round(i * step)] for i in range(n)]


def rank_agreement(short: Sequence[float], long: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau between two accuracy lists of the same candidates, and its p-value.

    Both are NaN with fewer than two pairs or when either list is constant.
    """
    from scipy.stats import kendalltau

    if len(short) < 2 or len(set(short)) < 2 or len(set(long)) < 2:
        return float("nan"), float("nan")
    tau, p_value = kendalltau(short, long)
    return float(tau), float(p_value)


def fidelity_check(
    run: Run, ctx: TrialContext, *, n_trials: int = 8, steps: int = 0
) -> dict[str, Any]:
    """Re-train a sample of ``run``'s trials with a longer recovery and compare rankings.

    Args:
        run: A finished (or partly finished) run.
        ctx: The search's context (task, space, calibration data, recovery settings).
        n_trials: Trials to re-train (spread over the accuracy range).
        steps: Steps of the longer recovery; 0 for ten times ``ctx.recovery_steps``.

    Returns:
        ``{"kendall_tau", "p_value", "short_steps", "long_steps", "trials": {number:
        {"short", "long"}}}``, also stored as ``study.user_attrs["fidelity"]``.
    """
    from nas.searching._trial import recover_and_evaluate
    from search_spaces import CompressionConfig

    long_steps = steps or 10 * max(1, ctx.recovery_steps)
    trained = [
        t
        for t in run.completed_trials()
        if t.user_attrs.get("accuracy") is not None
        and not t.user_attrs.get("rejected_before_training")
    ]
    sample = _sample(trained, n_trials)
    if len(sample) < 3:
        _logger.warning("fidelity check needs at least 3 trained trials, found %d", len(sample))
        return {}
    from nas.tasks._train import num_threads

    pairs: dict[str, dict[str, float]] = {}
    with num_threads(1):  # like the trials it re-runs: one core, no oversubscription
        for trial in sample:
            config = CompressionConfig.from_dict(trial.user_attrs["config"])
            model = ctx.space.apply(ctx.task.model, config)
            with tempfile.TemporaryDirectory(prefix="hwnas-fidelity-") as tmp:
                accuracy = recover_and_evaluate(
                    ctx, model, config, Path(tmp), steps=long_steps, timings={}
                )
            short_accuracy = float(trial.user_attrs["accuracy"])
            pairs[str(trial.number)] = {"short": short_accuracy, "long": accuracy}
            _logger.info(
                "fidelity: trial %d top1 %.2f%% after %d steps, %.2f%% after %d",
                trial.number,
                short_accuracy,
                ctx.recovery_steps,
                accuracy,
                long_steps,
            )
    short = [p["short"] for p in pairs.values()]
    long = [p["long"] for p in pairs.values()]
    tau, p_value = rank_agreement(short, long)
    report = {
        "kendall_tau": tau,
        "p_value": p_value,
        "short_steps": ctx.recovery_steps,
        "long_steps": long_steps,
        "trials": pairs,
    }
    run.study.set_user_attr("fidelity", report)
    _logger.info(
        "fidelity of the short recovery: Kendall tau %.3f over %d trials (%d vs %d steps)",
        tau,
        len(pairs),
        ctx.recovery_steps,
        long_steps,
    )
    return report


__all__ = ["fidelity_check", "rank_agreement"]
