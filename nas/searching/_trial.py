"""One candidate of a search: apply, export, predict its cost, recover and evaluate it.

:func:`evaluate_trial` is what a worker (the driver itself, or a Ray task) runs for one
trial. It takes a :class:`TrialContext` (shipped to Ray once) and a small payload (the trial
number and its config as a dict) and returns a plain dict: the objective values, the
constraint values and the user attributes to record. It never raises for a bad candidate:
an error comes back as ``{"error": ...}`` and the driver records a failed trial.

Phases, each timed into ``user_attrs["timings_s"]``:

1. ``apply``: ``space.apply(base, config)``, a physically smaller model.
2. ``export``: ONNX with int8 layers as static QDQ (calibrated on training images).
3. ``predict``: latency (and energy, if the device has a measured-energy predictor) from the
   device's predictors, the latency through the search's running calibration
   (``nas.searching._costs.Calibration``, sent in the payload); memory computed from the graph
   (weights at their bit-widths plus peak activations); energy otherwise estimated
   analytically and labelled so.
4. a candidate predicted far outside the budget stops here, recorded as infeasible with no
   accuracy (``rejected_before_training``).
5. ``train``: BatchNorm recalibration and a short fine-tune against the base model with the
   task's loss (distillation by default).
6. ``eval``: the task's score on its validation data (top-1, or its metric; named in
   ``user_attrs["metric"]``), of the quantized ONNX graph in onnxruntime when the config has
   layers below 32 bits (what will run), else of the torch model.

With ``ctx.measure_costs`` a trained candidate's graph comes back in the result
(``"graph"``, ONNX bytes), for the driver to measure on the device (``_costs``): workers
never measure, so measurements never share cores with training.

Successive halving (``_halving``) recovers a candidate in rungs: the payload names the
rung's total ``"steps"`` and asks to ``"keep_state"``; the result then carries the weights
and the recovery's state (``"state"``, bytes), which the next rung's payload brings back as
``"resume"`` to continue the same recovery (:func:`continue_trial`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._objectives import OBJECTIVES, Objective
from nas.searching._budget import Budget

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nas.tasks._recovery import RecoveryState
    from nas.tasks._tasks import Task

_logger = logging.getLogger(__name__)

FAIL_TRIALS_ENV = "HWNAS_FAIL_TRIALS"
"""Testing hook: comma-separated trial numbers whose evaluation raises on purpose."""

BYTES_PER_MB = 1e6


def computed_objectives() -> tuple[Objective, ...]:
    """The registered objectives computed from a candidate's graph."""
    return tuple(o for o in OBJECTIVES.values() if o.source == "computed")


class InjectedTrialFailure(RuntimeError):
    """Raised for the trial numbers listed in ``$HWNAS_FAIL_TRIALS`` (tests only)."""


@dataclass
class TrialContext:
    """Everything a worker needs to evaluate candidates (shipped to Ray once).

    Attributes:
        task: The task (base model, train/val data, example input).
        space: The compression space of the base model.
        device: The target ``DeviceSpec``.
        predictors: Target (``latency_ms``, ``energy_mj``) -> fitted predictor.
        energy_source: ``"measured-predictor"`` or ``"estimated"``.
        objectives: Objective names, in the order of the study's values.
        budget: The budget.
        base_accuracy: The base model's score: top-1 in %, or the task metric's score.
        recovery_steps: Distillation steps per candidate.
        recovery_batch_size: Images per distillation step.
        recovery_lr: Learning rate of the distillation.
        reject_factor: Reject before training above this many times a cost limit.
        calibration: Training images that calibrate int8 layers, (N, C, H, W).
        seed: Seed of the recovery (the same for every trial, so trials compare alike).
        fail_trials: Trial numbers that raise on purpose (testing hook).
        measure_costs: Return each trained candidate's graph for the driver to measure.
        computed: The computed objectives (``memory_mb`` and any registered ones), taken
            from the registry where the search started, so that Ray workers have them.
        missing_accuracy: The value of the ``accuracy`` objective for a trial rejected
            before training (0 for top-1; -inf for a task metric's score).
    """

    task: Task
    space: Any
    device: Any
    predictors: dict[str, Any]
    energy_source: str
    objectives: tuple[str, ...]
    budget: Budget
    base_accuracy: float
    recovery_steps: int
    recovery_batch_size: int
    recovery_lr: float
    reject_factor: float
    calibration: torch.Tensor
    seed: int = 0
    fail_trials: frozenset[int] = field(default_factory=frozenset)
    measure_costs: bool = False
    computed: tuple[Objective, ...] = field(default_factory=computed_objectives)
    missing_accuracy: float = 0.0


def fail_trials_from_env() -> frozenset[int]:
    """Trial numbers listed in ``$HWNAS_FAIL_TRIALS`` (testing hook)."""
    raw = os.environ.get(FAIL_TRIALS_ENV, "")
    return frozenset(int(part) for part in raw.split(",") if part.strip())


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(timings.get(phase, 0.0) + time.perf_counter() - start, 4)


def export_graph(ctx: TrialContext, model: nn.Module, config: Any, path: Path) -> Path:
    """Export ``model`` (already applied with ``config``) to ONNX at ``path``."""
    from search_spaces import export_onnx

    exported = export_onnx(
        model, config, ctx.task.example_input, path, calibration=ctx.calibration
    )
    return Path(getattr(exported, "path", path))


def predict_costs(ctx: TrialContext, graph: Path) -> dict[str, float]:
    """Predicted ``latency_ms`` and ``energy_mj``, and every computed objective, of ``graph``.

    Computed objectives (``memory_mb`` and any registered with ``nas.register_objective``)
    come from their own ``compute`` function; a value that is not a finite number fails the
    trial with the objective's name.
    """
    from latency_models import estimate_energy_mj

    costs: dict[str, float] = {}
    costs["latency_ms"] = float(ctx.predictors["latency_ms"].predict([graph])[0])
    if "energy_mj" in ctx.predictors:
        costs["energy_mj"] = float(ctx.predictors["energy_mj"].predict([graph])[0])
    else:
        costs["energy_mj"] = float(estimate_energy_mj(graph))
    for objective in ctx.computed:
        assert objective.compute is not None  # checked by Objective
        value = objective.compute(str(graph))
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"objective {objective.name!r} computed {value!r} for this candidate; its "
                "compute function must return a finite number."
            )
        costs[objective.name] = float(value)
    return costs


def is_quantized(config: Any) -> bool:
    """Whether ``config`` has any layer below 32 bits (its accuracy is taken in onnxruntime)."""
    return any(bits < 32 for bits in config.bits.values())


def recover_and_evaluate(
    ctx: TrialContext,
    model: nn.Module,
    config: Any,
    workdir: Path,
    *,
    steps: int,
    timings: dict[str, float],
    state: RecoveryState | None = None,
) -> float:
    """Recover ``model`` in place, then return the task's score on its validation data.

    The score is top-1 in %, or the task's metric (negated when lower is better, see
    :mod:`nas.tasks._evaluate`). Quantized configs are re-exported after recovery and
    scored in onnxruntime. ``state`` continues a stopped recovery and keeps where this one
    stops (:class:`nas.tasks._recovery.RecoveryState`).
    """
    from nas.tasks._evaluate import task_score, task_score_onnx
    from nas.tasks._recovery import recover

    with _timed(timings, "train"):
        recover(
            model,
            ctx.task.model,
            ctx.task,
            steps=steps,
            seed=ctx.seed,
            batch_size=ctx.recovery_batch_size,
            lr=ctx.recovery_lr,
            state=state,
        )
    with _timed(timings, "eval"):
        if is_quantized(config):
            path = export_graph(ctx, model, config, workdir / f"recovered-{steps}.onnx")
            return task_score_onnx(path, ctx.task)
        return task_score(model, ctx.task)


def _calibrated_costs(
    ctx: TrialContext,
    graph: Path,
    payload: Mapping[str, Any],
    *,
    attrs: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, float]:
    """:func:`predict_costs` of ``graph``, its latency through the search's running calibration.

    The payload's ``"calibration"`` (``Calibration.to_dict()``) corrects the predicted
    latency; the raw prediction, the calibration's size and the corrected costs go into
    ``attrs``.
    """
    from nas.searching._calibration import Calibration, int8_share

    with _timed(timings, "predict"):
        costs = predict_costs(ctx, graph)
    calibration = Calibration.from_dict(payload.get("calibration"))
    attrs["predicted_raw_latency_ms"] = costs["latency_ms"]
    costs["latency_ms"] = calibration.apply(costs["latency_ms"], int8_share(payload["config"]))
    attrs["calibration_n"] = calibration.n
    attrs["predicted"] = costs
    return costs


def _reject_reasons(ctx: TrialContext, costs: Mapping[str, float]) -> list[str]:
    """Why the predicted ``costs`` are far outside the budget; empty when worth training."""
    return [
        f"{key} predicted {costs[key]:.4g} > {ctx.reject_factor:g} x limit "
        f"{ctx.budget.limits[key]:g}"
        for key in ctx.budget.far_outside(costs, factor=ctx.reject_factor)
    ]


def objective_values(
    objectives: tuple[str, ...],
    accuracy: float | None,
    costs: Mapping[str, float],
    *,
    missing: float = 0.0,
) -> list[float]:
    """The study's values for one trial; a missing accuracy counts as ``missing`` (dominated).

    ``missing`` is 0 for top-1 and -inf for a task metric, whose score may be negative.
    """
    return [
        (accuracy if accuracy is not None else missing) if name == "accuracy" else costs[name]
        for name in objectives
    ]


def evaluate_trial(ctx: TrialContext, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one candidate; never raises for a bad candidate (see the module docstring).

    Args:
        ctx: The shared context.
        payload: ``{"number": trial number, "config": CompressionConfig.to_dict()}`` and
            optionally ``"calibration"`` (``Calibration.to_dict()``), ``"steps"`` (recovery
            steps instead of ``ctx.recovery_steps``), ``"keep_state"`` (return the state to
            continue from) and ``"resume"`` (a rung's ``"state"``: see
            :func:`continue_trial`).

    Returns:
        ``{"number", "values", "constraints", "user_attrs"}`` (and ``"graph"``, ONNX bytes,
        when ``ctx.measure_costs`` and the candidate was trained; ``"steps"``,
        ``"trained"`` and ``"state"`` with ``"keep_state"``), or ``{"number", "error",
        "user_attrs"}`` when the evaluation raised.
    """
    from nas.tasks._recovery import RecoveryState
    from search_spaces import CompressionConfig

    if "resume" in payload:
        return continue_trial(ctx, payload)
    number = int(payload["number"])
    steps = int(payload.get("steps", ctx.recovery_steps))
    state = RecoveryState() if payload.get("keep_state") else None
    timings: dict[str, float] = {}
    attrs: dict[str, Any] = {"timings_s": timings}
    start = time.perf_counter()
    try:
        if number in ctx.fail_trials:
            raise InjectedTrialFailure(f"trial {number} fails on purpose (${FAIL_TRIALS_ENV})")
        config = CompressionConfig.from_dict(payload["config"])
        with tempfile.TemporaryDirectory(prefix="hwnas-trial-") as tmp:
            workdir = Path(tmp)
            with _timed(timings, "apply"):
                model = ctx.space.apply(ctx.task.model, config)
            with _timed(timings, "export"):
                graph = export_graph(ctx, model, config, workdir / "candidate.onnx")
            costs = _calibrated_costs(ctx, graph, payload, attrs=attrs, timings=timings)
            graph_bytes = graph.read_bytes() if ctx.measure_costs else None
            attrs["energy_source"] = ctx.energy_source
            reasons = _reject_reasons(ctx, costs)
            accuracy: float | None = None
            attrs["rejected_before_training"] = bool(reasons)
            if reasons:
                attrs["rejected_because"] = reasons
            else:
                accuracy = recover_and_evaluate(
                    ctx, model, config, workdir, steps=steps, timings=timings, state=state
                )
        attrs["accuracy"] = accuracy
        attrs["metric"] = ctx.task.score_name
        values = objective_values(ctx.objectives, accuracy, costs, missing=ctx.missing_accuracy)
        constraints = ctx.budget.violations(
            {**costs, "accuracy": accuracy}, base_accuracy=ctx.base_accuracy
        )
        timings["total"] = round(time.perf_counter() - start, 4)
        result: dict[str, Any] = {
            "number": number,
            "values": values,
            "constraints": constraints,
            "user_attrs": attrs,
        }
        if graph_bytes is not None and accuracy is not None:
            result["graph"] = graph_bytes
        if state is not None and accuracy is not None:
            result["steps"] = result["trained"] = state.steps_done
            result["state"] = pack_state(model, state)
        return result
    except Exception as exc:  # a failed trial is recorded, and the search goes on
        return _error(number, exc, attrs, start)


def continue_trial(ctx: TrialContext, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Continue a candidate's recovery from a rung's state, up to ``payload["steps"]`` in all.

    The model is rebuilt from its config, given the rung's weights, and recovered for the
    steps still missing with the optimizer and batch order where the rung left them (no BN
    recalibration): the same weights as one uninterrupted recovery. Costs are not predicted
    again (the structure has not changed).

    Returns:
        ``{"number", "steps", "trained", "user_attrs": {"accuracy", "timings_s"}}``
        (``"steps"`` in all, ``"trained"`` in this call; and ``"state"`` with
        ``"keep_state"``), or ``{"number", "error", "user_attrs"}``.
    """
    from search_spaces import CompressionConfig

    number = int(payload["number"])
    timings: dict[str, float] = {}
    attrs: dict[str, Any] = {"timings_s": timings}
    start = time.perf_counter()
    try:
        config = CompressionConfig.from_dict(payload["config"])
        with _timed(timings, "apply"):
            model = ctx.space.apply(ctx.task.model, config)
            state = unpack_state(payload["resume"], model)
        before = state.steps_done
        with tempfile.TemporaryDirectory(prefix="hwnas-trial-") as tmp:
            attrs["accuracy"] = recover_and_evaluate(
                ctx,
                model,
                config,
                Path(tmp),
                steps=int(payload["steps"]) - state.steps_done,
                timings=timings,
                state=state,
            )
        timings["total"] = round(time.perf_counter() - start, 4)
        result: dict[str, Any] = {
            "number": number,
            "steps": state.steps_done,
            "trained": state.steps_done - before,
            "user_attrs": attrs,
        }
        if payload.get("keep_state"):
            result["state"] = pack_state(model, state)
        return result
    except Exception as exc:  # a failed trial is recorded, and the search goes on
        return _error(number, exc, attrs, start)


def _error(number: int, exc: Exception, attrs: dict[str, Any], start: float) -> dict[str, Any]:
    attrs["timings_s"]["total"] = round(time.perf_counter() - start, 4)
    return {
        "number": number,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=8),
        "user_attrs": attrs,
    }


def pack_state(model: nn.Module, state: RecoveryState) -> bytes:
    """A recovered model's weights and its recovery's state, as bytes for the next rung."""
    import torch

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "recovery": state.to_dict()}, buffer)
    return buffer.getvalue()


def unpack_state(data: bytes, model: nn.Module) -> RecoveryState:
    """Load :func:`pack_state`'s weights into ``model`` (same config); return the state."""
    import torch

    from nas.tasks._recovery import RecoveryState

    packed = torch.load(io.BytesIO(data), weights_only=True)
    model.load_state_dict(packed["model"])
    return RecoveryState.from_dict(packed["recovery"])


__all__ = [
    "FAIL_TRIALS_ENV",
    "InjectedTrialFailure",
    "TrialContext",
    "continue_trial",
    "evaluate_trial",
    "export_graph",
    "fail_trials_from_env",
    "is_quantized",
    "objective_values",
    "pack_state",
    "predict_costs",
    "recover_and_evaluate",
    "unpack_state",
]
