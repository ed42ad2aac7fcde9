"""The driver loop of a search: ask, evaluate, measure and tell trials.

One driver asks Optuna for candidates and hands them to an executor (in this process, or Ray
tasks: ``_parallel``). A trained candidate's graph comes back with its result and is
measured on the device by the driver's :class:`~nas.searching._costs.MeasurementLane`; the trial is
told with its measured latency (and energy, where metered) as objective and constraint
values, the prediction kept beside it. Ctrl-C fails the trials in flight and keeps the
trained ones (told on their predictions), then re-raises.

``config.timeout_s`` bounds the trial loop's wall clock: once spent, no trial starts; those
in flight finish, are measured and told as usual, so the search ends clean and
resumable. Ray trials record the node that ran them (``user_attrs["node"]``) and, on a Ray
device, the node that measured them (``"measured_node"``); a trial whose Ray worker was lost
is told failed with the reason, and the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.searching._driver_log import best_feasible, log_summary, progress, trial_line
from nas.searching._run import HEARTBEAT_INTERVAL_S, set_finished_trial_user_attr
from nas.searching._trial import TrialContext, evaluate_trial

if TYPE_CHECKING:
    import optuna

    from nas.searching._config import SearchConfig

_logger = logging.getLogger(__name__)


class _Heartbeat:
    """Records heartbeats of in-flight trials in shared storages (Optuna's ask/tell does not)."""

    def __init__(self, study: optuna.Study) -> None:
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self.trial_ids: set[int] = set()
        self._storage: Any = study._storage
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if is_heartbeat_enabled(self._storage):
            self._thread = threading.Thread(target=self._beat, daemon=True, name="hwnas-heartbeat")
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            for trial_id in list(self.trial_ids):
                with contextlib.suppress(Exception):  # a finished trial, a busy database
                    self._storage.record_heartbeat(trial_id)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class _Loop:
    """The driver's state: trials handed out, waiting for measurement, and counts."""

    in_flight: dict[int, Any] = field(default_factory=dict)
    awaiting: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    target: int = 0
    """Trials this call starts; lowered to ``submitted`` when the timeout is spent."""
    deadline: float | None = None
    """``time.monotonic()`` after which no trial starts, or None."""
    timed_out: bool = False
    submitted: int = 0
    finished: int = 0
    rejected: int = 0
    failed: int = 0
    pruned: int = 0
    halving: Any = None
    """The search's ``_halving.SuccessiveHalving``, or None when it is off."""


def drive(
    study: optuna.Study,
    ctx: TrialContext,
    config: SearchConfig,
    *,
    n_new: int,
    base_graph: bytes | None = None,
) -> None:
    """Ask, evaluate, measure and tell ``n_new`` trials, ``config.workers`` at a time.

    A trained candidate is told once it is measured (``_costs``): on a local device the
    driver hands out no new trial until the lane has measured what it holds, so that the
    measurement never overlaps training. Fewer trials start when ``config.timeout_s`` is
    spent first (counted from the moment the workers are ready). ``base_graph``: the base
    model's ONNX graph, measured again every few candidates to see the device drift.
    """
    from nas.searching._calibration import PredictorTracker
    from nas.searching._costs import MeasurementLane, report_drift
    from nas.searching._halving import make_halving
    from nas.searching._parallel import make_executor

    if n_new <= 0:
        return
    started = time.perf_counter()
    executor = make_executor(
        evaluate_trial, ctx, workers=config.workers, address=config.ray_address
    )
    executor_start_s = time.perf_counter() - started
    started = time.perf_counter()
    heartbeat = _Heartbeat(study)
    start_ms = ((study.user_attrs.get("base") or {}).get("measured") or {}).get("latency_ms")
    lane = (
        MeasurementLane(ctx.device, base_graph=base_graph if start_ms else None)
        if ctx.measure_costs
        else None
    )
    tracker = PredictorTracker.from_summary(
        study.user_attrs.get("predictor_tracking"), refit_every=config.refit_every
    )
    if ctx.measure_costs:  # a predictor off by a factor must not reject every candidate
        tracker.start_from((study.user_attrs.get("base") or {}).get("calibration_points"))
    loop = _Loop(target=n_new)
    loop.halving = make_halving(
        study,
        ctx,
        eta=config.halving_eta,
        rungs=config.halving_rungs,
        recovery_steps=config.recovery_steps,
    )
    if config.timeout_s is not None:
        loop.deadline = time.monotonic() + config.timeout_s
    try:
        with progress(config, config.n_trials - n_new) as bar:
            while loop.submitted < loop.target or executor.pending or loop.awaiting:
                _check_deadline(config, executor, loop)
                drain = lane is not None and lane.wants_drain(executor.capacity)
                while (
                    not drain
                    and loop.submitted < loop.target
                    and executor.pending < executor.capacity
                ):
                    _submit(study, ctx, executor, heartbeat, loop, tracker)
                done = _next_done(executor, heartbeat, lane, loop)
                if lane is not None:
                    for result in lane.retry_unmeasured(idle=executor.pending == 0):
                        _late_measurement(study, result, tracker, ctx)
                for trial, outcome, result in done:
                    _finish(study, trial, outcome, result, ctx, tracker, loop)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(best_feasible(study, ctx.objectives), refresh=True)
                if lane is not None:
                    report_drift(study, lane, start_ms, ctx.device.name)
            if lane is not None:
                _last_retries(study, lane, tracker, ctx)
    except KeyboardInterrupt:
        _interrupted(study, executor, loop, ctx)
        raise
    finally:
        heartbeat.stop()
        executor.shutdown()
        if lane is not None:
            lane.shutdown()
    log_summary(study, config, loop, started, executor_start_s, lane)
    if loop.halving is not None:
        loop.halving.summarize()


def _check_deadline(config: SearchConfig, executor: Any, loop: _Loop) -> None:
    """Start no more trials once ``config.timeout_s`` is spent; say so once."""
    if loop.deadline is None or loop.timed_out or loop.submitted >= loop.target:
        return
    if time.monotonic() < loop.deadline:
        return
    loop.timed_out = True
    _logger.warning(
        "timeout of %g s reached after %d of %d trials: no new trial starts, %d running "
        "finish first; run the same command again to resume",
        config.timeout_s,
        loop.submitted,
        loop.target,
        executor.pending,
    )
    loop.target = loop.submitted


def _next_done(
    executor: Any, heartbeat: _Heartbeat, lane: Any, loop: _Loop
) -> list[tuple[Any, dict[str, Any] | BaseException, Any]]:
    """Trials ready to be told: one that finished evaluating, and the lane's measured ones.

    A trained candidate's graph goes to the lane; its trial waits in ``loop.awaiting``.
    """
    done: list[tuple[Any, dict[str, Any] | BaseException, Any]] = []
    if executor.pending:
        number, outcome = executor.wait_one()
        trial = loop.in_flight.pop(number)
        heartbeat.trial_ids.discard(trial._trial_id)
        node = executor.node_of(number)
        if node is not None and isinstance(outcome, dict):
            outcome.setdefault("user_attrs", {})["node"] = node
        if loop.halving is not None:
            outcome = loop.halving.resolve(trial, outcome, executor)
        if outcome is None:  # promoted to its next rung of recovery: still in flight
            loop.in_flight[number] = trial
            heartbeat.trial_ids.add(trial._trial_id)
        elif lane is not None and isinstance(outcome, dict) and "graph" in outcome:
            lane.submit(number, outcome.pop("graph"))
            loop.awaiting[number] = (trial, outcome)
        else:
            done.append((trial, outcome, None))
    if lane is not None:
        idle = executor.pending == 0
        for result in lane.collect(idle=idle, block=idle and loop.submitted >= loop.target):
            trial, outcome = loop.awaiting.pop(result.number)
            done.append((trial, outcome, result))
    return done


def _last_retries(study: optuna.Study, lane: Any, tracker: Any, ctx: TrialContext) -> None:
    """One last try at the trials told on predictions; name those that stay so."""
    for result in lane.retry_unmeasured(idle=True, force=True):
        _late_measurement(study, result, tracker, ctx)
    if lane.unmeasured:
        _logger.warning(
            "trials %s keep predicted costs: device %s did not answer again before the search "
            "ended (export measures the model it writes)",
            lane.unmeasured,
            ctx.device.name,
        )


def _interrupted(study: optuna.Study, executor: Any, loop: _Loop, ctx: TrialContext) -> None:
    """Ctrl-C: keep the trained trials (on predictions), fail the ones in flight."""
    executor.cancel_all()
    for trial, outcome in loop.awaiting.values():
        outcome["user_attrs"]["cost_source"] = "predicted (interrupted before measurement)"
        record(study, trial, outcome, ctx)
    for trial in loop.in_flight.values():
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("error", "interrupted: the search was stopped (Ctrl-C)")
        study.tell(trial, state=_fail_state())
    _logger.warning(
        "search interrupted: %d trials finished since it started, %d in flight marked "
        "failed; run the same command again to resume",
        loop.finished + len(loop.awaiting),
        len(loop.in_flight),
    )


def _submit(
    study: optuna.Study,
    ctx: TrialContext,
    executor: Any,
    heartbeat: _Heartbeat,
    loop: _Loop,
    tracker: Any,
) -> None:
    with warnings.catch_warnings():  # heartbeats are ours (_Heartbeat)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    loop.in_flight[trial.number] = trial  # first, so that Ctrl-C fails it too
    heartbeat.trial_ids.add(trial._trial_id)
    candidate = ctx.space.sample(trial)
    trial.set_user_attr("config", candidate.to_dict())
    trial.set_user_attr("summary", ctx.space.summarize(candidate))
    payload = {
        "number": trial.number,
        "config": candidate.to_dict(),
        "calibration": tracker.calibration.to_dict(),
    }
    if loop.halving is not None:
        payload = loop.halving.first_payload(payload)
    executor.submit(trial.number, payload)
    loop.submitted += 1


def _finish(
    study: optuna.Study,
    trial: Any,
    outcome: dict[str, Any] | BaseException,
    result: Any,
    ctx: TrialContext,
    tracker: Any,
    loop: _Loop,
) -> None:
    """Put a trial's measured costs in place of the predicted ones, then tell it."""
    from nas.searching._costs import MEASURED, PREDICTED

    loop.finished += 1
    if isinstance(outcome, dict) and outcome.get("pruned"):
        from nas.searching._halving import tell_pruned

        loop.pruned += 1
        tell_pruned(study, trial, outcome)
        return
    if isinstance(outcome, BaseException) or "error" in outcome:
        loop.failed += 1
        record(study, trial, outcome, ctx)
        return
    attrs = outcome["user_attrs"]
    if result is not None and result.measurement is not None:
        _apply_measurement(outcome, result.measurement, ctx)
        attrs["cost_source"] = MEASURED
        _track(study, tracker, trial.number, attrs)
    else:
        attrs["cost_source"] = result.reason if result is not None else PREDICTED
    loop.rejected += record(study, trial, outcome, ctx)


def _apply_measurement(outcome: dict[str, Any], measurement: Any, ctx: TrialContext) -> None:
    from nas.searching._costs import measured_costs
    from nas.searching._trial import objective_values

    attrs = outcome["user_attrs"]
    predicted = attrs["predicted"]
    measured = measured_costs(measurement, predicted["memory_mb"])
    costs = {**predicted, "latency_ms": measured["latency_ms"]}
    sources = {"latency_ms": "measured", "memory_mb": "computed", "energy_mj": ctx.energy_source}
    if measured["energy_mj"] is not None:
        costs["energy_mj"] = float(measured["energy_mj"])
        sources["energy_mj"] = "measured"
    attrs["measured"] = measured
    attrs["cost_sources"] = sources
    node = (getattr(measurement, "host_info", None) or {}).get("ray_node_id")
    if node:
        attrs["measured_node"] = node
    outcome["values"] = objective_values(
        ctx.objectives, attrs["accuracy"], costs, missing=ctx.missing_accuracy
    )
    outcome["constraints"] = ctx.budget.violations(
        {**costs, "accuracy": attrs["accuracy"]}, base_accuracy=ctx.base_accuracy
    )


def _track(study: optuna.Study, tracker: Any, number: int, attrs: dict[str, Any]) -> None:
    from nas.searching._calibration import int8_share

    tracker.add(
        number,
        raw_ms=float(attrs.get("predicted_raw_latency_ms", attrs["predicted"]["latency_ms"])),
        predicted_ms=float(attrs["predicted"]["latency_ms"]),
        measured_ms=float(attrs["measured"]["latency_ms"]),
        share=int8_share(attrs.get("config") or {}),
    )
    study.set_user_attr("predictor_tracking", tracker.summary())


def _late_measurement(study: optuna.Study, result: Any, tracker: Any, ctx: TrialContext) -> None:
    """A trial told on predictions, measured once the device answered again."""
    from nas.searching._costs import measured_costs

    trial = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, result.number))  # fmt: skip
    attrs = dict(trial.user_attrs)
    predicted = attrs.get("predicted") or {}
    measured = measured_costs(result.measurement, float(predicted.get("memory_mb", 0.0)))
    set_finished_trial_user_attr(study, trial, "measured", measured)
    node = (getattr(result.measurement, "host_info", None) or {}).get("ray_node_id")
    if node:
        set_finished_trial_user_attr(study, trial, "measured_node", node)
    attrs["measured"] = measured
    _track(study, tracker, result.number, attrs)
    _logger.info(
        "trial %d measured after the device answered again: latency_ms=%.4g (told on a "
        "prediction of %.4g)",
        result.number,
        measured["latency_ms"],
        predicted.get("latency_ms", float("nan")),
    )


def _fail_state() -> Any:
    from optuna.trial import TrialState

    return TrialState.FAIL


def record(study: optuna.Study, trial: optuna.Trial, outcome: Any, ctx: TrialContext) -> int:
    """Tell ``study`` the outcome of ``trial`` and log one line; return 1 if rejected."""
    if isinstance(outcome, BaseException) or "error" in outcome:
        if isinstance(outcome, BaseException):
            error, attrs, trace = f"{type(outcome).__name__}: {outcome}", {}, ""
        else:
            error, attrs, trace = (
                outcome["error"],
                outcome["user_attrs"],
                outcome.get("traceback", ""),
            )
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("error", error)
        study.tell(trial, state=_fail_state())
        _logger.warning(
            "trial %d failed: %s%s", trial.number, error, f"\n{trace}" if trace else ""
        )
        return 0
    attrs = outcome["user_attrs"]
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for key, value in outcome["constraints"].items():
        trial.set_constraint(key, value)
    study.tell(trial, outcome["values"])
    _logger.info("%s", trial_line(trial.number, attrs, outcome["constraints"], ctx))
    return int(bool(attrs.get("rejected_before_training")))


__all__ = ["drive", "record"]
