"""The base model on the device, and the budget checked against it before any training.

The base model and the cheapest config of the space are measured in interleaved rounds at
the start of a search. Their medians resolve relative limits (``latency_ms=0.5x``) and
decide, on measurement wherever the device answers, whether a budget is already met or out
of reach; both are refused before the first trial.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import BudgetError
from nas._objectives import OBJECTIVES
from nas.searching._budget import parse_budget
from nas.searching._config import SETTINGS_FILE, SearchConfig

if TYPE_CHECKING:
    from nas.searching._trial import TrialContext

_logger = logging.getLogger(__name__)


def check_budget_device(config: SearchConfig, device: Any = None) -> None:
    """Refuse, before any work, a relative budget the device cannot measure.

    Raises:
        BudgetError: ``energy_mj=...x`` on a device without an energy meter.
    """
    from latency_models import get_device

    budget = parse_budget(config.budget)
    spec = device if device is not None else get_device(config.device)
    meter = getattr(spec, "energy_meter", "none")
    if "energy_mj" in budget.relative and meter in (None, "none"):
        raise BudgetError(
            f"budget energy_mj={budget.relative['energy_mj']:g}x needs the base model's energy "
            f"measured, but device {spec.name!r} has no energy meter (energy is estimated "
            "there). Give an absolute limit (energy_mj=VALUE) or use a device with a meter."
        )


def previous_resolution(config: SearchConfig) -> dict[str, float] | None:
    """The resolved budget a resumed search keeps (None for a new search)."""
    if not config.run_dir or not (Path(config.run_dir) / SETTINGS_FILE).is_file():
        return None
    previous = SearchConfig.load(config.run_dir)
    if previous.resolved_budget and dict(previous.budget) == dict(config.budget):
        return dict(previous.resolved_budget)
    return None


BASE_ROUNDS = 3
"""Interleaved rounds in which the base model and the cheapest configs are measured."""


def base_metrics(
    ctx: TrialContext, *, require_measured: bool = False
) -> tuple[dict[str, Any], bytes]:
    """The base model's accuracy, predicted and measured costs (study attr "base"), and graph.

    The base model and the space's cheapest candidates (:meth:`~search_spaces.
    CompressionSpace.cheapest_candidates`: int8 or factorized layers can run slower than
    fp32 on small layers, so the smallest config is not always the fastest) are measured in
    :data:`BASE_ROUNDS` interleaved rounds (drift on a shared machine hits all alike). The
    base's medians are ``base["measured"]``; each cost's lowest median over the candidates is
    ``base["smallest_measured"]`` (``smallest_predicted`` likewise), the config that reached it
    ``base["smallest_configs"]``, the rounds and their spread ``base["measured_runs"]``. A
    device that does not answer leaves the measured values ``None`` (the search then starts on
    predictions, and says so).

    Raises:
        MeasurementError: the device does not answer and ``require_measured``.
    """
    candidates = ctx.space.cheapest_candidates()
    with tempfile.TemporaryDirectory(prefix="hwnas-base-") as tmp:
        costs, graph = costs_of(ctx, ctx.space.identity(), Path(tmp), "base")
        graphs, predicted = {"base": graph}, []
        for i, config in enumerate(candidates):
            cheap, graphs[f"cheap{i}"] = costs_of(ctx, config, Path(tmp), f"cheap{i}")
            predicted.append(cheap)
        runs = _interleaved(ctx, graphs, require_measured)
        base_graph = graph.read_bytes()  # measured again during the search (drift)
    measured = _medians(runs.get("base"), costs["memory_mb"])
    cheap_measured = [
        _medians(runs.get(f"cheap{i}"), p["memory_mb"]) for i, p in enumerate(predicted)
    ]
    lowest_predicted, lowest_measured, which = _lowest(predicted, cheap_measured)
    fastest = which.get("latency_ms", 0)
    configs = {k: ctx.space.summarize(candidates[i]) for k, i in which.items()}
    base: dict[str, Any] = {
        "accuracy": ctx.base_accuracy,
        **costs,
        "energy_source": ctx.energy_source,
        "measured": measured,
        "smallest_predicted": lowest_predicted,
        "smallest_measured": lowest_measured,
        "smallest_configs": configs,
        "calibration_points": _calibration_points(
            costs, measured, candidates, predicted, cheap_measured
        ),
        "measured_runs": _spread(
            {"base": runs["base"], "smallest": runs[f"cheap{fastest}"]} if runs else {}
        ),
    }
    shown = (
        "not measured"
        if measured["latency_ms"] is None
        else f"{measured['latency_ms']:.3f} measured"
    )
    metric = ctx.task.score_name
    _logger.info(
        "base model: %s=%s latency_ms=%.3f predicted (%s) energy_mj=%.3g (%s) "
        "memory_mb=%.3f (computed); fastest of %d cheapest configs: %s",
        metric,
        f"{ctx.base_accuracy:.2f}%" if metric == "top1" else f"{ctx.base_accuracy:.4g}",
        costs["latency_ms"],
        shown,
        costs["energy_mj"],
        ctx.energy_source,
        costs["memory_mb"],
        len(candidates),
        configs.get("latency_ms", "-"),
    )
    return base, base_graph


def _calibration_points(
    costs: dict[str, Any],
    measured: dict[str, Any],
    candidates: list[Any],
    predicted: list[dict[str, float]],
    cheap_measured: list[dict[str, float | None]],
) -> list[dict[str, Any]]:
    """Predicted against measured latency of each graph measured at the start (measured ones).

    The search calibrates its predictor on them before the first candidate
    (:meth:`~nas.searching._calibration.PredictorTracker.start_from`).
    """
    from nas.searching._calibration import int8_share

    graphs = [("base", costs, measured, 0.0)] + [
        (f"cheap{i}", p, m, int8_share(c.to_dict()))
        for i, (c, p, m) in enumerate(zip(candidates, predicted, cheap_measured, strict=True))
    ]
    return [
        {
            "graph": name,
            "predicted_ms": float(p["latency_ms"]),
            "measured_ms": float(m["latency_ms"]),
            "int8_share": share,
        }
        for name, p, m, share in graphs
        if m.get("latency_ms") is not None and p.get("latency_ms") is not None
    ]


def _lowest(
    predicted: list[dict[str, float]], measured: list[dict[str, float | None]]
) -> tuple[dict[str, float], dict[str, float | None], dict[str, int]]:
    """Each cost's lowest predicted and measured value over the candidates, and the deciding one.

    The deciding candidate has the lowest measured value where the device answered, else the
    lowest predicted.
    """
    low_predicted: dict[str, float] = {}
    low_measured: dict[str, float | None] = {}
    which: dict[str, int] = {}
    for k in {**predicted[0], **measured[0]}:
        by_measure = [(m[k], i) for i, m in enumerate(measured) if m.get(k) is not None]
        if k in measured[0]:
            low_measured[k] = min(by_measure)[0] if by_measure else None
        if k in predicted[0]:
            by_prediction = [(p[k], i) for i, p in enumerate(predicted)]
            low_predicted[k] = min(by_prediction)[0]
            which[k] = min(by_measure or by_prediction)[1]
    return low_predicted, low_measured, which


def _interleaved(
    ctx: TrialContext, graphs: dict[str, Path], required: bool
) -> dict[str, list[Any]]:
    """Each graph measured :data:`BASE_ROUNDS` times, round by round ({} when unreachable)."""
    from latency_models import MeasurementError
    from latency_models.measurement._cached import measure_interleaved

    try:
        runs = measure_interleaved(
            graphs, ctx.device, rounds=BASE_ROUNDS, keep=True, max_seconds=2.0
        )
    except MeasurementError as exc:
        if required:
            raise MeasurementError(
                f"{exc}. --costs measured needs the device to answer; use --costs auto to "
                "search on predictions until it does."
            ) from exc
        _logger.warning(
            "cannot measure the base model on %s (%s): the search starts on predicted costs",
            ctx.device.name,
            exc,
        )
        return {}
    return runs


def _medians(runs: list[Any] | None, memory_mb: float) -> dict[str, float | None]:
    if not runs:
        return {"latency_ms": None, "energy_mj": None, "memory_mb": memory_mb}
    energies = [m.energy_mj for m in runs if m.energy_mj is not None]
    return {
        "latency_ms": statistics.median(m.latency_ms for m in runs),
        "energy_mj": statistics.median(energies) if energies else None,
        "memory_mb": memory_mb,
    }


def _spread(runs: dict[str, list[Any]]) -> dict[str, Any] | None:
    if not runs:
        return None
    out: dict[str, Any] = {"rounds": BASE_ROUNDS}
    for name, ms in runs.items():
        values = [float(m.latency_ms) for m in ms]
        median = statistics.median(values)
        out[name] = {
            "latency_ms": median,
            "latency_ms_runs": values,
            "spread_pct": 100.0 * (max(values) - min(values)) / median,
        }
    return out


def _decisive(base: dict[str, Any], key: str, which: str = "") -> tuple[float | None, str]:
    """The measured value of ``key`` where there is one, else the predicted (and its label)."""
    measured = (base.get(f"{which}measured") or {}).get(key)
    if measured is not None:
        return float(measured), "measured"
    predicted = base.get(key) if not which else (base.get(f"{which}predicted") or {}).get(key)
    label = "computed" if OBJECTIVES[key].source == "computed" else "predicted"
    return (None, label) if predicted is None else (float(predicted), label)


def check_budget(ctx: TrialContext, base: dict[str, Any], *, resumed: bool = False) -> None:
    """Refuse a cost budget the base model already meets, or that no config can meet.

    Both are decided on measured costs where the device answered (predicted otherwise), so
    a budget that the base model or the cheapest config meets by measurement is never
    refused as out of reach. The first is refused (not just warned about) because the search
    would spend its trials confirming that no compression is needed; drop or tighten the
    limit. Only cost limits count: ``accuracy_drop`` alone is always met by the base model.
    A ``resumed`` search keeps the limits it started with and only warns: its finished trials
    were judged against them, and a re-measurement on a quieter or busier machine is no
    reason to refuse to go on.
    """
    limits = ctx.budget.cost_limits
    if not limits:
        return
    problem = _budget_problem(ctx, base, limits)
    if problem is None:
        return
    what, fix = problem
    if not resumed:
        raise BudgetError(f"{what}. {fix}")
    _logger.warning(
        "the resumed search keeps the budget it started with, though %s; start a new run "
        "folder to search against a new budget",
        what,
    )


def _budget_problem(
    ctx: TrialContext, base: dict[str, Any], limits: dict[str, float]
) -> tuple[str, str] | None:
    """What is wrong with ``limits`` and how to fix it, or None when the budget is sound."""
    base_costs = {k: _decisive(base, k) for k in limits}
    if all(v is not None and v <= limits[k] for k, (v, _) in base_costs.items()):
        shown = ", ".join(
            f"{k} {v:.4g} ({how}) <= {limits[k]:g}" for k, (v, how) in base_costs.items()
        )
        return (
            f"the uncompressed model already meets the budget ({shown} on {ctx.device.name})",
            "Tighten the limits below the base model's cost (e.g. latency_ms=0.5x), or drop "
            "them to search the whole front.",
        )
    smallest = {k: _decisive(base, k, "smallest_") for k in limits}
    unmet = [k for k, (v, _) in smallest.items() if v is not None and v > limits[k]]
    if not unmet:
        return None
    shown = ", ".join(
        f"{k} {smallest[k][0]:.4g} ({smallest[k][1]}) > {limits[k]:g}" for k in unmet
    )
    cheapest = "; ".join(f"{k}: {base['smallest_configs'][k]}" for k in unmet)
    return (
        f"no config in the search space can meet the budget: even the cheapest ones "
        f"({cheapest}) come to {shown} on {ctx.device.name}",
        "Raise the limits to at least these values, or pick a faster device.",
    )


def costs_of(
    ctx: TrialContext, config: Any, tmp: Path, name: str
) -> tuple[dict[str, float], Path]:
    """The predicted costs of ``config`` and its exported graph (written under ``tmp``)."""
    from nas.searching._trial import export_graph, predict_costs

    model = ctx.space.apply(ctx.task.model, config)
    graph = export_graph(ctx, model, config, tmp / f"{name}.onnx")
    return predict_costs(ctx, graph), graph


__all__ = [
    "BASE_ROUNDS",
    "base_metrics",
    "check_budget",
    "check_budget_device",
    "costs_of",
    "previous_resolution",
]
