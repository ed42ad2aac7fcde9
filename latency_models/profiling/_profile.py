"""Profiling a device: choose graphs, measure them, fit its predictors, sample adaptively.

``profile_device`` is what ``hwnas device profile NAME`` runs (``nas`` adds a task's
compressed variants to the graphs):

1. **Initial set**: a generic sweep (single convs, depthwise convs, 1x1 convs and linears
   at many shapes, small random CNNs; fp32 and int8 QDQ) and, with a task, compressed
   variants of the task's model (random configs of its compression space, plus the
   identity and the smallest config), exported as the search will export them.
2. **Measure** each through :func:`latency_models.measure_cached`, latency and each kernel's
   time (onnxruntime's profiler, :data:`KERNEL_TIMES_S` per graph), so every measurement
   lands in the device's store and a stopped profile resumes where it stopped.
3. **Fit** the default predictor (``combined`` with kernel times) and record its held-out
   accuracy. Adaptive sampling ranks graphs by the additive model's out-of-fold error,
   which is cheap to refit five times a round.
4. **Adaptive sampling** (as nn-Meter does): find the measured graphs with the worst
   out-of-fold error, generate a pool of new candidate graphs, and measure the candidates
   whose graph totals are nearest to those; refit; repeat until the budget is spent.
5. **Save** the latency predictor (and the energy predictor where the store holds enough
   measured energy) to :func:`latency_models.predictor_path`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models._errors import ProfileError
from latency_models.profiling._fit import evaluate_device

__all__ = ["MIN_GRAPHS", "ProfileResult", "evaluate_device", "profile_device"]

if TYPE_CHECKING:
    from latency_models.features._features import GraphFeatures
    from latency_models.predictors._base import BaseLatencyPredictor

_logger = logging.getLogger(__name__)

MIN_ENERGY_RECORDS = 20
"""Measured-energy records needed before an energy predictor is fit."""
KERNEL_TIMES_S = 0.3
"""Seconds of profiled runs per graph for its per-kernel times."""
FINAL_FIT_KERNEL_FITS = 12
"""The final fit costs about this many fits of the ``kernel`` predictor: ``fit_predictor``
fits ``combined`` twice (on the split for its held-out metrics, then on every graph), and
each choice of its mix fits five folds and the final parts. Measured: 11.0x and 11.6x on
120 and 241 graphs of a local-cpu profile (46 and 53 s); the additive parts take
milliseconds, and a kernel fit takes about as long on 120 graphs as on 241 (4.2 vs 4.6 s)."""


@dataclass
class ProfileResult:
    """What a profile did.

    Attributes:
        device: Device name.
        n_graphs: Graphs with a latency measurement in the store at the end.
        n_new: Graphs measured by this call (the rest came from the store).
        metrics: Per target (``"latency_ms"``, ``"energy_mj"``): held-out metrics of the
            saved predictor (see :func:`latency_models.prediction_metrics`).
        paths: Per target: the folder the predictor was saved to.
        rounds: Adaptive sampling rounds run.
        elapsed_s: Wall time, seconds.
    """

    device: str
    n_graphs: int = 0
    n_new: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    rounds: int = 0
    elapsed_s: float = 0.0


MIN_GRAPHS = 10
"""Fewest measured graphs a profile fits predictors on."""


class _Clock:
    def __init__(self, budget_minutes: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_minutes * 60.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


GraphSource = Callable[[int, Any], Iterator[tuple[str, Any]]]
"""``(seed, device spec) -> (name, graph)`` stream of extra graphs, e.g. a task's variants."""


def _candidates(
    extra: GraphSource | None, *, seed: int, start: int, spec: Any, wide: bool = False
) -> Iterator[Any]:
    """Endless stream of (name, graph): the sweep and the extra graphs interleaved."""
    from latency_models.profiling._sweep import sweep_graphs

    int8 = 8 in tuple(spec.precisions)
    sweep = sweep_graphs(
        10**9, seed=seed, int8_share=0.4 if int8 else 0.0, wide=wide,
        mixed_share=0.15 if int8 else 0.0,
    )  # fmt: skip
    for _ in range(start):
        next(sweep)
    variants = None if extra is None else extra(seed + start, spec)
    while True:
        yield next(sweep)
        if variants is not None:
            try:
                yield next(variants)
            except StopIteration:
                variants = None


def _measure_one(
    name: str, graph: Any, spec: Any, store: Any, options: dict[str, Any]
) -> tuple[GraphFeatures, float] | None:
    """Measure ``graph`` (or find it stored) and store its features.

    The features are laid out for the NCHWc block of the host that measured the graph (its
    ``host_info``), which a device behind an agent or on a Ray node may not share with this
    machine.
    """
    from latency_models._errors import MeasurementError
    from latency_models._graph import graph_hash
    from latency_models.features._features import graph_features
    from latency_models.measurement._cached import measure_cached
    from latency_models.predictors._persist import measured_nchwc_block

    feats = graph_features(graph)
    try:
        m = measure_cached(graph, spec, store=store, features=feats.to_dict(), **options)
    except MeasurementError as exc:
        _logger.warning("skipping %s: %s", name, exc)
        return None
    block = measured_nchwc_block(m)
    if block is not None and block != feats.totals["nchwc_block"]:
        feats = graph_features(graph, nchwc_block=block)
        store.set_features(graph_hash(graph), feats.to_dict())
    return feats, float(m.latency_ms)


def _oof_errors(feats: list[GraphFeatures], y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold relative error of the default predictor on each measured graph."""
    from latency_models.predictors._base import PREDICTORS
    from latency_models.predictors._persist import DEFAULT_PREDICTOR

    n = len(feats)
    folds = np.random.default_rng(seed).permutation(n) % min(5, n)
    err = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(min(5, n)):
            tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            p = PREDICTORS.get(DEFAULT_PREDICTOR)().fit([feats[i] for i in tr], y[tr])
            err[te] = np.abs(p.predict_features([feats[i] for i in te]) / y[te] - 1.0)
    return err


def _nearest(pool: list[GraphFeatures], worst: list[GraphFeatures], k: int) -> list[int]:
    """Indices of the ``k`` pool graphs nearest (standardised graph totals) to ``worst``."""
    from latency_models.predictors._trees import graph_vector

    if not pool or not worst:
        return []
    a = np.array([graph_vector(f) for f in pool])
    b = np.array([graph_vector(f) for f in worst])
    mu, sd = a.mean(axis=0), a.std(axis=0) + 1e-9
    d = np.linalg.norm(((a - mu) / sd)[:, None, :] - ((b - mu) / sd)[None, :, :], axis=2)
    return [int(i) for i in np.argsort(d.min(axis=1))[:k]]


def profile_device(
    device: str,
    *,
    extra: GraphSource | None = None,
    wide: bool = False,
    budget_minutes: float = 10.0,
    initial_share: float = 0.5,
    round_size: int = 8,
    seed: int = 0,
    max_seconds_per_graph: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> ProfileResult:
    """Measure ``device`` and fit its predictors within a time budget (see module docs).

    Args:
        device: Registered device name.
        extra: More graphs to measure beside the sweep, interleaved with it (``nas`` passes
            a task's compressed variants).
        wide: Measure the wide sweep (ImageNet-size kernels and networks, up to 224 px and 3
            GMACs, a second or more each) rather than the small one (up to 128 px).
        budget_minutes: Wall-clock budget in minutes, the final fit included: its time is
            estimated (:data:`FINAL_FIT_KERNEL_FITS` times one timed kernel fit after the
            initial set) and kept back from adaptive sampling. A budget whose initial set
            alone leaves less than that still runs past it by the difference.
        initial_share: Share of the budget for the initial set; the rest is adaptive. The
            initial set goes on past it until :data:`MIN_GRAPHS` graphs are measured (or
            the budget is spent): a fit needs them, and adaptive rounds need a fit.
        round_size: Graphs added per adaptive round.
        seed: Seed of the sweep, the configs and the splits; the same seed lists the same
            graphs, so a rerun finds the earlier ones in the store.
        max_seconds_per_graph: Cap of one graph's timed loop, seconds.
        progress: Called with one line per step (the CLI prints them).

    Returns:
        The :class:`ProfileResult`.

    Raises:
        ProfileError: ``budget_minutes`` <= 0, or fewer than :data:`MIN_GRAPHS` graphs could be
            measured within it.
        UnknownNameError: ``device`` is not registered.
    """
    from latency_models.devices import get_device
    from latency_models.measurement._store import MeasurementStore

    if not (isinstance(budget_minutes, (int, float)) and budget_minutes > 0):
        raise ProfileError(f"budget_minutes must be > 0, got {budget_minutes!r}. Try 10.")
    spec = get_device(device)
    run = _Profiling(
        spec=spec,
        store=MeasurementStore(spec.name),
        # each graph's kernels are timed too (onnxruntime's profiler): the kernel-level
        # predictor's targets, for about a third more measuring time per graph
        options={"max_seconds": max_seconds_per_graph, "kernel_times_s": KERNEL_TIMES_S},
        clock=_Clock(budget_minutes),
        say=progress or (lambda msg: None),
        result=ProfileResult(device=spec.name),
    )
    run.say(
        f"profiling {spec.name}: {len(run.store)} graphs already in the store, budget "
        f"{budget_minutes} min, {'wide' if wide else 'small'} sweep"
    )
    # 1-2. initial set, resumable through the store
    _initial_set(run, _candidates(extra, seed=seed, start=0, spec=spec, wide=wide), initial_share)
    # 3-4. fit, then adaptive rounds
    feats, y, reserve_s = _first_fit_data(run, budget_minutes)
    pool_stream = _candidates(extra, seed=seed + 1, start=0, spec=spec, wide=wide)
    feats = _adaptive_rounds(run, pool_stream, feats, y, seed=seed, round_size=round_size,
                             reserve_s=reserve_s)  # fmt: skip
    # 5. final fit and save
    _final_fits(run, seed)
    run.result.n_graphs = len(feats)
    run.result.elapsed_s = run.clock.elapsed()
    return run.result


@dataclass
class _Profiling:
    """What the steps of one :func:`profile_device` call share."""

    spec: Any
    store: Any
    options: dict[str, Any]
    clock: _Clock
    say: Callable[[str], None]
    result: ProfileResult
    loads: list[float] = field(default_factory=list)
    """This host's load average after each graph (local devices)."""


def _initial_set(run: _Profiling, stream: Iterator[Any], initial_share: float) -> None:
    """Measure graphs from ``stream`` for the initial share of the budget.

    Goes on past that share (within the budget) until :data:`MIN_GRAPHS` graphs are
    measured, as a fit needs them.
    """
    clock, measured = run.clock, 0
    while clock.elapsed() < clock.budget_s * initial_share or (
        measured < MIN_GRAPHS and clock.left() > 0
    ):
        name, graph = next(stream)
        before = len(run.store)
        if _measure_one(name, graph, run.spec, run.store, run.options) is None:
            continue
        measured += 1
        run.loads.append(os.getloadavg()[0])
        run.result.n_new += len(run.store) - before
        if measured % 10 == 0:
            run.say(f"  measured {measured} graphs ({clock.elapsed():.0f} s)")


def _first_fit_data(
    run: _Profiling, budget_minutes: float
) -> tuple[list[GraphFeatures], np.ndarray, float]:
    """The measured graphs' features and latencies, and the seconds to keep for the final fit.

    Raises:
        ProfileError: fewer than :data:`MIN_GRAPHS` graphs were measured.
    """
    from latency_models.predictors._persist import training_data, training_kernel_times

    feats, y, hashes = training_data(run.store)
    if len(feats) < MIN_GRAPHS:
        raise ProfileError(
            f"only {len(feats)} graphs measured on {run.spec.name} within {budget_minutes} "
            f"min; a predictor needs at least {MIN_GRAPHS}. Give a larger --budget-minutes."
        )
    reserve_s = _final_fit_reserve_s(feats, y, training_kernel_times(run.store, hashes))
    run.say(f"  keeping {reserve_s:.0f} s of the budget for the final fit")
    return feats, y, reserve_s


def _adaptive_rounds(
    run: _Profiling,
    pool_stream: Iterator[Any],
    feats: list[GraphFeatures],
    y: np.ndarray,
    *,
    seed: int,
    round_size: int,
    reserve_s: float,
) -> list[GraphFeatures]:
    """Measure the new graphs nearest the worst-predicted ones until ``reserve_s`` is left.

    Returns the features of every measured graph at the end.
    """
    from latency_models.features._features import graph_features
    from latency_models.predictors._persist import training_data

    clock, result = run.clock, run.result
    while clock.left() > reserve_s:
        err = _oof_errors(feats, y, seed + result.rounds)
        worst = [feats[i] for i in np.argsort(err)[::-1][:round_size]]
        run.say(
            f"  round {result.rounds + 1}: {len(feats)} graphs, out-of-fold mape "
            f"{100 * err.mean():.1f}%, worst {100 * err.max():.0f}%"
        )
        pool: list[tuple[str, Any, GraphFeatures]] = []
        block = int(feats[0].totals["nchwc_block"])  # the device's layout, as measured
        while len(pool) < 4 * round_size and clock.left() > reserve_s:
            name, graph = next(pool_stream)
            pool.append((name, graph, graph_features(graph, nchwc_block=block)))
        for i in _nearest([p[2] for p in pool], worst, round_size):
            if clock.left() <= reserve_s:
                break
            before = len(run.store)
            _measure_one(pool[i][0], pool[i][1], run.spec, run.store, run.options)
            run.loads.append(os.getloadavg()[0])
            result.n_new += len(run.store) - before
        result.rounds += 1
        feats, y, _ = training_data(run.store)
    return feats


def _final_fits(run: _Profiling, seed: int) -> None:
    """Fit and save the latency and energy predictors, and say how each did."""
    spec = run.spec
    load = _busy_host(spec, run.loads)
    if load.get("noisy_profile"):
        _logger.warning(
            "%s was profiled while other work ran on this host (load average %.1f, median "
            "%.1f, with %d measuring thread(s) of its own): the predictor is labelled noisy. "
            "Re-profile on a quiet machine (`hwnas device profile %s`).",
            spec.name,
            load["profile_max_load"],
            load["profile_median_load"],
            spec.threads,
            spec.name,
        )
    for target in ("latency_ms", "energy_mj"):
        fitted = _final_fit(spec.name, target, seed, load, run.say)
        if fitted is None:
            continue
        predictor, path = fitted
        run.result.metrics[target] = dict(predictor.metrics_)
        run.result.paths[target] = path
        run.say(f"  {target}: {_fit_summary(predictor)} -> {path}")


def _fit_summary(predictor: BaseLatencyPredictor) -> str:
    """The saved predictor's kind, mix, training size and held-out accuracy, in one line."""
    m = predictor.metrics_
    mix = getattr(predictor, "kernel_weight_", None)
    how = "chosen out of fold" if hasattr(predictor, "weight_scores_") else "fallback"
    held = (
        f"held-out within 10% {100 * m['within_10']:.0f}%, mape {m['mape']:.1f}%, "
        f"kendall {m['kendall']:.3f}"
        if "within_10" in m
        else "too few graphs for a held-out check"
    )
    return (
        f"{predictor.name}"
        + ("" if mix is None else f" (kernel weight {mix:g}, {how})")
        + f", {predictor.n_train_} graphs, {held}"
    )


BUSY_LOAD = 1.0
"""Load average beyond the device's own measuring threads that labels a profile noisy."""


def _busy_host(spec: Any, loads: list[float]) -> dict[str, Any]:
    """The profile's load figures, and ``noisy_profile`` when the host was busy."""
    if spec.kind != "local" or not loads:
        return {}
    median = float(np.median(loads))
    return {
        "profile_max_load": round(max(loads), 2),
        "profile_median_load": round(median, 2),
        "noisy_profile": float(median - spec.threads >= BUSY_LOAD),
    }


def _final_fit_reserve_s(feats: list[GraphFeatures], y: Any, kernel_times: list[Any]) -> float:
    """Seconds the final fit will take: one ``kernel`` fit timed, times the fits it makes."""
    from latency_models.predictors._kernel_predictor import KernelPredictor

    if not any(kernel_times):
        return 0.0  # the additive model alone: milliseconds
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        KernelPredictor().fit(feats, y, kernel_times=kernel_times)
    return FINAL_FIT_KERNEL_FITS * (time.monotonic() - start)


def _final_fit(
    device: str, target: str, seed: int, load: dict[str, Any], say: Callable[[str], None]
) -> tuple[BaseLatencyPredictor, Path] | None:
    """Fit and save ``target``'s predictor (None where too few energies were measured)."""
    from latency_models.profiling._fit import device_data, fit_device

    if target == "energy_mj":
        try:
            n = len(device_data(device, target=target).y)
        except ValueError as exc:  # a stored energy that is no energy
            say(f"  energy: {exc}; no energy predictor fit")
            return None
        if n < MIN_ENERGY_RECORDS:
            say(f"  energy: {n} measured-energy records, no energy predictor fit")
            return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        predictor, path = fit_device(device, target=target, seed=seed, extra_metrics=load)
    for w in caught:  # labels left out, a baseline preferred: said on the progress lines
        if "left out" in str(w.message) or "baseline" in str(w.message):
            say(f"  {target}: {w.message}")
    assert path is not None
    return predictor, path
