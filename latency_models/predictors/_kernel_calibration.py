"""Calibration of the kernel predictor: launch costs, work splits and profiler overhead.

Per kernel kind, :class:`~._kernel_predictor.KernelPredictor` fits a fixed launch cost
``c0`` (:func:`launch_cost`) and, for compute kinds, the cost of a weight byte against a MAC
(:func:`weight_traffic_ratio`). Above a work threshold learned per kind and device
(:func:`fit_work_split`) the work is scaled by the drop in time per unit found there: on
two threads onnxruntime runs a small loop on one of them and a large one on both.

The graph's latency is then ``a * sum(t) + b + c * sum(fade(t))`` (:func:`_calibrate`), fit
on the measured latencies: the profiler adds a few microseconds to every kernel it times
(``c`` comes out negative), more to short kernels than to long ones on some devices
(:func:`fade`, its time scale chosen per device by :func:`fading_overhead_scale`, or a
constant), and the run has a fixed overhead. Before the trees are fit, each graph's profiled
times are scaled to agree with its latency label (:func:`match_profiles_to_latency`): a
profile is taken at another time than the label's sessions, in a state of the machine of
its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latency_models.features._features import GraphFeatures
from latency_models.predictors._base import FloatArray


def launch_cost(t_ms: FloatArray, work: FloatArray) -> float:
    """Fixed cost (ms) of one kernel of a kind: the intercept of ``t ~ c0 + r * work``.

    Fit on the kind's profiled kernels by least squares on relative error and bounded to
    ``[0, 0.9 x]`` the 5th-percentile time. The bound alone as ``c0`` takes nearly all of a
    small kernel's time for launch: the smallest ``qpool`` of a training set (10 us) then
    runs at a tenth of the speed per tap of the big ones, the trees learn "small pools are
    fast", and a 56,000-tap pool is predicted at a third of its 125 us.
    """
    cap = 0.9 * float(np.percentile(t_ms, 5))
    a = np.stack([1 / t_ms, work / t_ms], axis=1)
    c0, rate = np.linalg.lstsq(a, np.ones_like(t_ms), rcond=None)[0]
    return float(min(max(c0, 0.0), cap)) if rate > 0 else cap


def weight_traffic_ratio(raw: FloatArray, t_ms: FloatArray) -> float:
    """Time per weight byte read over time per MAC, of one compute kind on this device.

    ``t ~ c0 + r_mac * MMACs + r_byte * MB`` fit on the kind's profiled kernels (relative
    error, non-negative coefficients); the ratio ``r_byte / r_mac`` (MACs a byte costs)
    makes :func:`~._kernel_rows.row_work` count weight traffic as well as arithmetic, so a
    kernel that reads many weights for few MACs (a 1x1 conv on a 1x1 map, a GEMV) is not
    given the speed of one that reuses each weight over many pixels. Without it, the trees
    must learn that from the few such kernels in the training graphs: on a 2-vCPU AVX2 host
    with an 8 MB L3, ``conv1x1.fp32`` 720 -> 240 on a 1x1 map (691 KB of weights) in
    MobileNetV2 at 32 px is then predicted at 26 us against 54 us profiled. Gemm's weights
    are its MACs (one each), so its ratio comes out 0; on that host's ``local-cpu`` the
    others are 0.9 (``conv1x1.fp32``), 2.4 (``conv.fp32``), 4.2 (``dwconv.fp32``) and
    0.2-0.6 (int8) MACs a byte.
    """
    from scipy.optimize import nnls

    a = np.stack([np.ones_like(t_ms), raw[:, 17] / 1e6, raw[:, 2] / 1e6], axis=1) / t_ms[:, None]
    coef = nnls(a, np.ones_like(t_ms))[0]
    return float(coef[2] / coef[1]) if coef[1] > 0 else 0.0


NO_SPLIT = (math.inf, 1.0)
"""A kind's :func:`fit_work_split` when its time per unit of work does not drop: no threshold."""

SPLIT_MIN_GAIN = 0.5
"""Share of the one-rate fit's squared relative error a :func:`fit_work_split` must stay below."""


def _relative_fit(t_ms: FloatArray, columns: Sequence[FloatArray]) -> tuple[float, FloatArray]:
    """``t ~ columns @ coef`` by least squares on relative error: (squared error, coef)."""
    a = np.stack(columns, axis=1) / t_ms[:, None]
    coef = np.asarray(np.linalg.lstsq(a, np.ones_like(t_ms), rcond=None)[0], dtype=np.float64)
    r = a @ coef - 1.0
    return float(r @ r), coef


def fit_work_split(
    t_ms: FloatArray, work: FloatArray, *, min_side: int = 3, candidates: int = 40
) -> tuple[float, float]:
    """Where a kind's time per unit of work drops, and by how much: ``(threshold, factor)``.

    onnxruntime runs a loop on a second thread only when its estimated cost is large
    enough (its thread pool uses Eigen's cost model: about 100,000 cycles to start a
    thread); below that, the kernel runs on one thread whatever the device's thread count.
    :class:`~._kernel_predictor.KernelPredictor` looks for a split in the kinds onnxruntime
    runs that way (not the compute kinds, which MLAS partitions by rules of its own: on the
    small graphs of the tests, one thread, ``gemm.fp32`` "split" at a fourth of the rate,
    the small-matrix inefficiency the trees learn anyway).
    Among the training graphs of ``experiments/predictor_accuracy.py`` on ``local-cpu-2t``,
    the 15 profiled int8 NCHW max-pools (``qpool``) of up to 150,000 window taps take
    5-9 ns a tap, as on one thread, and those of 200,000 and more 2.1-3.0 ns: a single rate
    costs a held-out 56,000-tap pool at 180 us against 253 us profiled.

    ``t ~ c0 + r_lo * work`` below the threshold and ``c0 + r_hi * work`` above is fit on
    relative error at each of ``candidates`` thresholds between the kernels (at least
    ``min_side`` on each side); the best is kept if its error is below
    :data:`SPLIT_MIN_GAIN` of the one-rate fit's and ``0 < r_hi < r_lo``. The factor is
    ``r_hi / r_lo``; :func:`split_work` scales the work above the threshold by it. Returns
    :data:`NO_SPLIT` otherwise (on ``local-cpu`` no kind splits; on ``local-cpu-2t`` only
    ``qpool.int8``, at 175,000 taps, factor 0.52).
    """
    n = len(t_ms)
    if n < 2 * min_side + 2:
        return NO_SPLIT
    order = np.argsort(work, kind="stable")
    w, t = work[order], t_ms[order]
    best, best_split = _relative_fit(t, [np.ones(n), w])[0] * SPLIT_MIN_GAIN, NO_SPLIT
    for i in np.unique(np.linspace(min_side, n - min_side, candidates + 1).astype(np.int64)):
        if w[i] <= w[i - 1]:
            continue
        above = np.arange(n) >= i
        rss, (_, r_lo, r_hi) = _relative_fit(
            t, [np.ones(n), np.where(above, 0.0, w), np.where(above, w, 0.0)]
        )
        if rss < best and 0 < r_hi < r_lo:
            best, best_split = rss, (float(np.sqrt(w[i - 1] * w[i])), float(r_hi / r_lo))
    return best_split


def split_work(work: FloatArray, split: Sequence[float]) -> FloatArray:
    """``work`` with the part of a kind above its :func:`fit_work_split` threshold scaled."""
    threshold, factor = split
    return np.asarray(np.where(work >= threshold, work * factor, work), dtype=np.float64)


PROFILE_SCALE_LIMITS = (0.6, 1.4)
"""Bounds of the factor :func:`match_profiles_to_latency` scales one graph's kernel times by."""


def match_profiles_to_latency(
    features: Sequence[GraphFeatures],
    y: FloatArray,
    times: list[list[float | None]],
    *,
    fade_ms: float = math.inf,
) -> list[list[float | None]]:
    """Each graph's kernel times scaled to agree with its measured latency.

    A graph's per-kernel profile (each kernel's best of three short profiler sessions) is
    taken at another time than its latency label (the best of several full sessions); a
    profile taken in a slow spell of a shared machine makes every kernel of that graph look
    slow (re-profiling five training graphs at once can find sums 6-20% below the stored
    ones, with the same latency). The kernel sums are calibrated to the latencies
    over all graphs (``y ~ a * sum + b + c * n``, as for prediction), and each graph's
    times are multiplied by its own ``y / (a * sum + b + c * n)``, bounded by
    :data:`PROFILE_SCALE_LIMITS`. Out of fold on the 300 training graphs of
    ``experiments/predictor_accuracy.py`` (three-session profiles) this takes the kernel
    model from 78% to 81% within +-10% on ``local-cpu`` and from 55% to 68% on
    ``local-cpu-2t``. The calibration is a plain least-squares fit on relative error: the
    smallest graphs weigh most in it, so a slow profile of one of them is only partly
    corrected (a trimmed refit does no better out of fold).
    """
    timed = _timed(times)
    sums = _sums(timed)
    if math.isinf(fade_ms):  # a constant overhead: every kernel counts, timed or not
        fades = np.array([len(f.kernels) for f in features], dtype=np.float64)
    else:
        fades = _fade_sums(timed, fade_ms)
    ok = sums > 0
    if ok.sum() < 3:
        return times
    a, b, c = _calibrate(sums[ok], fades[ok], y[ok])
    factor = np.ones(len(times))
    factor[ok] = np.clip(
        y[ok] / np.maximum(a * sums[ok] + b + c * fades[ok], 1e-9), *PROFILE_SCALE_LIMITS
    )
    return [
        [None if t is None else t * g for t in ts] for ts, g in zip(times, factor, strict=True)
    ]


FADE_GRID_MS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
"""Time scales (ms) :func:`fading_overhead_scale` chooses from."""


def fade(times_ms: FloatArray, fade_ms: float) -> FloatArray:
    """Weight of each kernel in the calibration's per-kernel term: ``exp(-t / fade_ms)``.

    The profiler's cost per kernel it times is largest for the shortest kernels (on two
    threads the second thread wakes up inside each timed kernel) and fades for long ones.
    ``fade_ms = inf`` counts every kernel as 1, a constant overhead.
    """
    if math.isinf(fade_ms):
        return np.ones_like(times_ms)
    return np.asarray(np.exp(-times_ms / fade_ms), dtype=np.float64)


def _timed(times: Sequence[Sequence[float | None]]) -> list[FloatArray]:
    """Each graph's timed kernels (the profiler's entries that are not None), as arrays."""
    return [np.array([x for x in ts if x is not None], dtype=np.float64) for ts in times]


def _sums(timed: Sequence[FloatArray]) -> FloatArray:
    """Each graph's profiled kernel sum."""
    return np.array([t.sum() for t in timed], dtype=np.float64)


def _fade_sums(timed: Sequence[FloatArray], fade_ms: float) -> FloatArray:
    """Each graph's sum of :func:`fade` over its timed kernels."""
    return np.array([fade(t, fade_ms).sum() for t in timed], dtype=np.float64)


def _profile_sums(
    times: Sequence[Sequence[float | None]], fade_ms: float = math.inf
) -> tuple[FloatArray, FloatArray]:
    """Each graph's profiled kernel sum and the sum of its timed kernels' :func:`fade`."""
    timed = _timed(times)
    return _sums(timed), _fade_sums(timed, fade_ms)


def fading_overhead_scale(times: Sequence[Sequence[float | None]], y: FloatArray) -> float:
    """The :data:`FADE_GRID_MS` scale whose calibration fits the latencies best.

    ``y ~ a * sum(t) + b + c * sum(fade(t))`` is fit on the profiled kernel times of the
    graphs for each scale (relative least squares, as :func:`_calibrate`); the scale with
    the lowest residual wins, and ``inf`` (a constant overhead) when it fits no worse.
    """
    timed = _timed(times)
    sums = _sums(timed)
    ok = sums > 0
    if ok.sum() < 10:
        return math.inf
    best, best_rss = math.inf, _calibration_rss(sums[ok], _counts(times)[ok], y[ok])
    for scale in FADE_GRID_MS:
        rss = _calibration_rss(sums[ok], _fade_sums(timed, scale)[ok], y[ok])
        if rss < best_rss:
            best, best_rss = scale, rss
    return best


def _counts(times: Sequence[Sequence[float | None]]) -> FloatArray:
    return np.array([len(ts) for ts in times], dtype=np.float64)


def _calibration_rss(sums: FloatArray, fades: FloatArray, y: FloatArray) -> float:
    a, b, c = _calibrate(sums, fades, y)
    rel = (a * sums + b + c * fades - y) / y
    return float(rel @ rel)


def _calibrate(sums: FloatArray, n: FloatArray, y: FloatArray) -> tuple[float, float, float]:
    """``y ~ a * sums + b + c * n`` by least squares on relative error (a > 0)."""
    a = np.stack([sums, np.ones_like(sums), n], axis=1) / y[:, None]
    coef = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
    if not coef[0] > 0:  # degenerate data: keep the sum as it is
        coef = np.array([1.0, 0.0, 0.0])
    return float(coef[0]), float(coef[1]), float(coef[2])
