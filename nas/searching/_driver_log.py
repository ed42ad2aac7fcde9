"""What the search driver reports: a progress bar, one log line per trial, a summary per call.

The driver (:mod:`nas.searching._driver`) calls these; none of them changes a trial or what
the search does next.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nas.searching._budget import COST_OBJECTIVES, OBJECTIVES

if TYPE_CHECKING:
    import optuna

    from nas.searching._config import SearchConfig
    from nas.searching._driver import _Loop
    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)

__all__ = ["best_feasible", "log_summary", "progress", "trial_line"]


@contextlib.contextmanager
def progress(config: SearchConfig, initial: int) -> Iterator[Any]:
    """A tqdm bar over the run's trials while the block runs, or None when it is off.

    While the bar shows, the ``nas`` loggers write through tqdm so lines do not break it.
    """
    bar = None
    if config.show_progress_bar:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]
            from tqdm.contrib.logging import logging_redirect_tqdm  # type: ignore[import-untyped]
        except ImportError:
            _logger.warning("show_progress_bar needs tqdm (pip install tqdm); going on without")
        else:
            bar = tqdm(total=config.n_trials, initial=initial, unit="trial", desc="hwnas search")
            with logging_redirect_tqdm(loggers=[logging.getLogger("nas")]):
                try:
                    yield bar
                finally:
                    bar.close()
            return
    yield None


def trial_line(
    number: int, attrs: dict[str, Any], constraints: dict[str, float], ctx: TrialContext
) -> str:
    """The log line of a told trial: its score, each cost with where it came from, feasibility."""
    predicted = attrs.get("predicted", {})
    measured = attrs.get("measured") or {}
    parts = [f"trial {number}:"]
    if attrs.get("rejected_before_training"):
        parts.append(
            "rejected before training (" + "; ".join(attrs.get("rejected_because", [])) + ")"
        )
    else:
        metric = attrs.get("metric", "top1")
        parts.append(
            f"top1={attrs['accuracy']:.2f}%"
            if metric == "top1"
            else f"{metric}={attrs['accuracy']:.4g}"
        )
    for name in COST_OBJECTIVES:
        if name not in predicted:
            continue
        if OBJECTIVES[name].source == "computed":
            parts.append(f"{name}={predicted[name]:.4g} (computed)")
        elif measured.get(name) is not None:
            parts.append(
                f"{name}={measured[name]:.4g} (measured; predicted {predicted[name]:.4g})"
            )
        else:
            label = (
                ctx.energy_source if name == "energy_mj" else attrs.get("cost_source", "predicted")
            )
            parts.append(f"{name}={predicted[name]:.4g} ({label})")
    if constraints:
        parts.append("feasible" if all(v <= 0 for v in constraints.values()) else "infeasible")
    parts.append(f"[{attrs.get('timings_s', {}).get('total', 0.0):.1f} s]")
    return " ".join(parts)


def best_feasible(study: optuna.Study, objectives: Sequence[str]) -> str:
    """The progress bar's postfix: the front's best trial on the first objective, and its size."""
    try:
        best = study.best_trials
    except Exception:  # no completed trial yet
        return ""
    if not best:
        return "no feasible trial yet"
    first = objectives[0]
    top = (
        max(best, key=lambda t: t.values[0])
        if OBJECTIVES[first].direction == "maximize"
        else min(best, key=lambda t: t.values[0])
    )
    return (
        ", ".join(
            f"{name}={value:.3g}" for name, value in zip(objectives, top.values, strict=True)
        )
        + f" ({len(best)} on front)"
    )


def log_summary(
    study: optuna.Study,
    config: SearchConfig,
    loop: _Loop,
    started: float,
    executor_start_s: float,
    lane: Any,
) -> None:
    """Log what this call of the driver did and keep it in ``study.user_attrs["last_session"]``.

    The rate counts completed trials only, over the minutes since the workers were ready.
    """
    minutes = (time.perf_counter() - started) / 60
    completed = loop.finished - loop.failed  # a trial failing at once must not inflate the rate
    measure_s = lane.seconds if lane is not None else 0.0
    _logger.info(
        "%d trials in %.1f min (%d completed: %.1f trials/min, %d worker(s)); %d failed; "
        "%d rejected before training; %.1f s measuring on the device",
        loop.finished,
        minutes,
        completed,
        completed / minutes if minutes > 0 else float("nan"),
        config.workers,
        loop.failed,
        loop.rejected,
        measure_s,
    )
    drift = [e["ratio"] for e in study.user_attrs.get("base_drift") or []]
    if lane is not None and lane.drift and drift:
        _logger.info(
            "base model measured again %d times during the search: %.2fx to %.2fx of its "
            "latency at the start (study attr base_drift)",
            len(lane.drift),
            min(drift[-len(lane.drift) :]),
            max(drift[-len(lane.drift) :]),
        )
    study.set_user_attr(
        "last_session",
        {
            "trials": loop.finished,
            "failed": loop.failed,
            "minutes": round(minutes, 3),
            "trials_per_min": round(completed / minutes, 3) if minutes > 0 else None,
            "workers": config.workers,
            "executor_start_s": round(executor_start_s, 2),
            "rejected_before_training": loop.rejected,
            "measure_s": round(measure_s, 3),
            "timeout_s": config.timeout_s,
            "timed_out": loop.timed_out,
            "pruned": loop.pruned,
        },
    )
