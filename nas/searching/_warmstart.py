"""Sensitivity warm start: compress each decision point alone, then seed the search.

For every channel group (cut to about half), removable block (dropped) and factorizable
layer (lowest rank), the base model is compressed at that point only, its BatchNorm
statistics are recalibrated, and its validation top-1 is taken without fine-tuning. The
drop against the base ranks the points from robust to sensitive; a few configs that
compress the most robust quarter, half and three quarters of the points (the latter two
with int8 layers, where offered) are enqueued as the study's first trials.

The scan is skipped when it would not be cheap: more than :data:`MAX_POINTS` points, or a
projected time above :data:`MAX_SECONDS`.

Under a latency budget the search is also seeded with the uniform baselines a user would try
first (every layer int8 at full width; one width everywhere, in fp32 and in int8): for each
of the three, the widest config predicted within the limit. A search then never reports a
front worse than uniform compression that meets the same budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)

MAX_POINTS = 64
MAX_SECONDS = 60.0
FRACTIONS = (0.25, 0.5, 0.75)
UNIFORM_WIDTHS = (0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
"""Widths tried for the uniform baselines the search is seeded with."""
UNIFORM_MARGIN = 1.1
"""A uniform config predicted up to this many times the limit is still seeded: the
measurement decides."""
_VAL_SAMPLES = 512


def params_of(space: Any, config: Any) -> dict[str, Any]:
    """The trial params that make ``space.sample`` return ``config``.

    Raises:
        ValueError: ``config`` does not fit the space, or the params do not rebuild it.
    """
    params: dict[str, Any] = space.params_of(config)  # each compression kind names its own
    if space.config_from_params(params) != config:
        raise ValueError("params do not round-trip to the config")
    return params


def _variants(space: Any) -> dict[str, Any]:
    """Decision point -> the identity config compressed at that point only."""
    from dataclasses import replace

    identity = space.identity()
    out: dict[str, Any] = {}
    for name, group in space.groups.items():
        half = min(group.choices, key=lambda c: abs(c - group.channels / 2))
        if half < group.channels:
            out[f"width.{name}"] = replace(identity, widths={**identity.widths, name: half})
    for block in space.blocks:
        out[f"drop.{block}"] = replace(identity, dropped_blocks=frozenset({block}))
    for layer, choices in space.ranks.items():
        ranks = [c for c in choices if c is not None]
        if ranks:
            out[f"rank.{layer}"] = replace(identity, ranks={**identity.ranks, layer: min(ranks)})
    return out


def _scan_functions(ctx: TrialContext) -> tuple[Callable[[Any], float], Callable[[Any], None]]:
    """How the scan scores a model and recalibrates its BatchNorm, for the task's data."""
    from nas.tasks._evaluate import task_score
    from nas.tasks._loaders import is_pair, loader_of
    from nas.tasks._stream import recalibrate_bn_stream
    from nas.tasks._train import evaluate, recalibrate_bn

    task = ctx.task
    if not (is_pair(task.train) and is_pair(task.val) and task.metric == "top1"):
        loader = loader_of(task.train, batch_size=64)

        def stream_score(model: Any) -> float:
            return task_score(model, task)

        def stream_recalibrate(model: Any) -> None:
            recalibrate_bn_stream(model, loader, num_samples=256)

        return stream_score, stream_recalibrate
    X_train, _ = task.train
    X_val, y_val = (part[:_VAL_SAMPLES] for part in task.val)

    def score(model: Any) -> float:
        return evaluate(model, X_val, y_val)

    def recalibrate(model: Any) -> None:
        recalibrate_bn(model, X_train, num_samples=256, seed=ctx.seed)

    return score, recalibrate


def sensitivity(ctx: TrialContext) -> dict[str, float] | None:
    """Score drop of compressing each decision point alone, or ``None`` if not cheap.

    The score is top-1 in points, or the task metric's score (see ``nas.tasks._evaluate``).
    """
    variants = _variants(ctx.space)
    if not variants or len(variants) > MAX_POINTS:
        _logger.info(
            "warm start skipped: %d decision points (scanning is cheap up to %d)",
            len(variants),
            MAX_POINTS,
        )
        return None
    score, recalibrate = _scan_functions(ctx)
    base = score(ctx.task.model)
    drops: dict[str, float] = {}
    start = time.perf_counter()
    for i, (point, config) in enumerate(variants.items()):
        model = ctx.space.apply(ctx.task.model, config)
        recalibrate(model)
        drops[point] = round(base - score(model), 3)
        projected = (time.perf_counter() - start) / (i + 1) * len(variants)
        if projected > MAX_SECONDS:
            _logger.info(
                "warm start skipped: the sensitivity scan would take about %.0f s", projected
            )
            return None
    _logger.info(
        "sensitivity scan: %d points in %.1f s; most robust: %s",
        len(drops),
        time.perf_counter() - start,
        ", ".join(f"{p} ({d:+.3g})" for p, d in sorted(drops.items(), key=lambda x: x[1])[:3]),
    )
    return drops


def informed_configs(ctx: TrialContext, drops: Mapping[str, float]) -> list[Any]:
    """Configs compressing the most robust points (see the module docstring)."""
    from dataclasses import replace

    variants = _variants(ctx.space)
    order = sorted(drops, key=lambda p: drops[p])
    configs = []
    for i, fraction in enumerate(FRACTIONS):
        chosen = order[: max(1, round(fraction * len(order)))]
        config = ctx.space.identity()
        for point in chosen:
            kind, _, key = point.partition(".")
            variant = variants[point]
            if kind == "width":
                config = replace(config, widths={**config.widths, key: variant.widths[key]})
            elif kind == "drop":
                config = replace(config, dropped_blocks=config.dropped_blocks | {key})
            else:
                config = replace(config, ranks={**config.ranks, key: variant.ranks[key]})
        if i > 0:
            config = replace(
                config,
                bits={
                    k: 8 if 8 in choices else config.bits[k]
                    for k, choices in ctx.space.bits.items()
                },
            )
        configs.append(config)
    return configs


def uniform_configs(ctx: TrialContext) -> list[Any]:
    """The widest uniform int8, fp32 and int8 width configs predicted within the latency limit.

    Returns [] without a latency limit. Each candidate is exported and predicted (the
    search's own calibration starts from the device predictor), so this costs a second or so
    per candidate on small models.
    """
    import tempfile
    from pathlib import Path

    from nas.searching._base import costs_of

    limit = ctx.budget.cost_limits.get("latency_ms")
    if limit is None:
        return []
    space = ctx.space
    int8 = any(8 in choices for choices in space.bits.values())
    families: list[list[Any]] = [[space.uniform(width=w) for w in UNIFORM_WIDTHS]]
    if int8:
        families.insert(0, [space.uniform(bits=8)])
        families.append([space.uniform(width=w, bits=8) for w in UNIFORM_WIDTHS])
    chosen: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="hwnas-uniform-") as tmp:
        for family in families:
            for i, config in enumerate(family):  # widest first: the most accurate that fits
                costs, _ = costs_of(ctx, config, Path(tmp), f"uniform-{len(chosen)}-{i}")
                if costs["latency_ms"] <= UNIFORM_MARGIN * limit:
                    chosen.append(config)
                    break
    return chosen


def enqueue_warm_start(study: optuna.Study, ctx: TrialContext) -> int:
    """Scan sensitivities, enqueue informed and uniform configs; return how many."""
    configs: list[Any] = []
    drops = None
    try:
        drops = sensitivity(ctx)
        if drops is not None:
            configs += informed_configs(ctx, drops)
        configs += uniform_configs(ctx)
        params = [params_of(ctx.space, config) for config in configs]
    except Exception as exc:  # a warm start is an optimisation: never fail the search on it
        _logger.warning("warm start skipped: %s: %s", type(exc).__name__, exc)
        return 0
    if drops is not None:
        study.set_user_attr("sensitivity", dict(drops))
    seen = []
    for p in params:
        if p not in seen:
            study.enqueue_trial(p, user_attrs={"warm_start": True})
            seen.append(p)
    _logger.info("warm start: enqueued %d informed and uniform configs", len(seen))
    return len(seen)


__all__ = [
    "enqueue_warm_start",
    "informed_configs",
    "params_of",
    "sensitivity",
    "uniform_configs",
]
