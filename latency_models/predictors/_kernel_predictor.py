"""Kernel-level latency predictor, learned from each kernel's time in onnxruntime's profile.

``"kernel"`` (:class:`KernelPredictor`) follows nn-Meter: predict every fused kernel, then
sum. Its per-kernel targets are the times onnxruntime's profiler records for each node of
the profiled training graphs (:func:`~._bench.profile_kernels`), lined up with
the feature kernels by :func:`~latency_models.features._kernel_times.align_kernel_times`. A graph
of 40 kernels gives 40 targets, so 300 profiled graphs give thousands, measured in context:
the caches hold what the graph's other kernels left there.

Per kernel kind and dtype (``conv.fp32``...), a kernel costs

    t = c0 + work * exp(z(kernel, graph))

``work`` (:func:`row_work`) is what the kernel must do at full speed: effective MACs for
compute kernels (the channels padded to onnxruntime's NCHWc block, the taps that fall in
the zero padding skipped, as MLAS skips them) plus the weight bytes they read, at a cost
per byte learned per kind and device (:func:`weight_traffic_ratio`); window taps for
``qpool`` (a uint8 MaxPool in NCHW, which onnxruntime runs in a generic loop over every
tap); megabytes moved for the others. Above a work threshold learned per kind and device
(:func:`fit_work_split`) the work is scaled by the drop in time per unit found there: on
two threads onnxruntime runs a small loop on one of them and a large one on both. ``z``
is the log of the time per unit of work,
learned by gradient boosted trees on the kernel's
shape and the graph's total weight and activation bytes (whether its weights are still
cached when it runs). Weights count as read only where some output reads them: an fp32
conv skips its taps that meet only padding, so ResNet-18's last 3x3 convs, on 1x1 maps at
32 px input, read a ninth of their weights and the whole net 19 of its 47 MB, which stay
in a 32 MB L3 between runs (:func:`~latency_models.features._kernel_table.touched_tap_fraction`;
the additive model's weight term counts the same bytes). Trees do not extrapolate; a
kernel bigger than any in training gets the speed of the biggest ones, which is the
physically right limit (throughput saturates), where a tree on the time itself would cap
the time. ``c0`` is a fixed launch
cost (:func:`launch_cost`). The graph's latency is then ``a * sum(t) + b + c * sum(fade(t))``,
fit on the measured latencies: the profiler adds a few microseconds to every kernel it times (``c``
comes out negative), more to short kernels than to long ones on some devices
(:func:`fade`, its time scale chosen per device by :func:`fading_overhead_scale`, or a
constant), and the run has a fixed overhead. Before the trees are fit, each
graph's profiled times are scaled to agree with its latency label
(:func:`match_profiles_to_latency`): a profile is taken at another time than the label's
sessions, in a state of the machine of its own.

``"combined"`` (:class:`CombinedPredictor`) is a weighted geometric mean of this predictor
and the kernel-additive one (fit on whole-graph latencies). Their errors differ in kind: the
kernel model gets big, int8 and memory-bound kernels right (VGG, the 1000-class heads) but
is noisy on deep nets of small kernels; the additive model is the reverse. Which mix is best
differs by device, so the weight is chosen per device, on the device's own profile: the
weight in :data:`WEIGHT_GRID` whose 5-fold out-of-fold predictions of the training graphs
have the lowest MAPE (ties: most within +-10%), each fold holding out whole families of
graphs (:func:`family_folds`; why MAPE: :meth:`CombinedPredictor._cv_weight`). The
weights it picks and the held-out accuracy are in experiments/README.md, section 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latency_models.features._features import COMPUTE_KINDS, GraphFeatures, KernelFeatures
from latency_models.features._kernel_table import (
    WORK_CHANNEL_BLOCK,
    IntArray,
    KernelTable,
    c16,
    effective_mmacs_of,
    fields_matrix,
    kernel_fields,
    kernel_table,
)
from latency_models.features._kernel_times import align_kernel_times
from latency_models.predictors._additive import KernelAdditivePredictor, _fallback_key
from latency_models.predictors._base import BaseLatencyPredictor, FloatArray, _register
from latency_models.predictors._trees import (
    _fit_trees,
    forest_from_state,
    forest_state,
    predict_trees,
)

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Kernel weights :class:`CombinedPredictor` chooses from with ``kernel_weight="auto"``."""
MIN_WEIGHT_CV_GRAPHS = 40
"""With fewer training graphs (or no kernel times) ``"auto"`` takes :data:`FALLBACK_WEIGHT`."""
FALLBACK_WEIGHT = 0.25
KERNEL_OVERHEADS = ("fading", "constant")
"""Forms of the profiler's per-kernel overhead :class:`KernelPredictor` can calibrate."""
WORK_SPLITS = ("learned", "none")
"""Values of ``work_split``: learn each kind's :func:`fit_work_split`, or not."""
MIN_TREE_SAMPLES = 8
"""Kernel kinds with fewer measured kernels get one throughput, not trees."""


def effective_mmacs(k: KernelFeatures) -> float:
    """Millions of MACs the runtime computes: channels padded to the block, padding skipped."""
    return float(effective_mmacs_of(fields_matrix([kernel_fields(k)]))[0])


def row_work(raw: FloatArray, key: str, bytes_per_mac: float = 0.0) -> FloatArray:
    """Work unit of the throughput of kernels of ``key``, from their raw rows.

    Effective MMACs for compute kernels, plus their weight traffic: the weight bytes some
    output reads, in MAC-equivalents (``bytes_per_mac`` is the kind's ratio of time per byte
    to time per MAC, :func:`weight_traffic_ratio`); million window taps (outputs times
    window size) for ``qpool``, whose generic loop visits every tap (a 3x3 window costs
    about 9/4 of a 2x2 one at the same output size); MB moved (activations and weights)
    for the others. ``raw`` is :func:`kernel_row` output, before :func:`kernel_rows` logs it.
    """
    kind = key.split(".")[0]
    if kind in COMPUTE_KINDS:
        work = raw[:, 17] + bytes_per_mac * raw[:, 2]
    elif kind == "qpool":
        work = raw[:, 0]  # a pool's MACs count its window taps
    else:
        work = raw[:, 1] + raw[:, 2]
    return np.asarray(work / 1e6 + 1e-3)


_LOGGED = np.array([True] * 5 + [False] * 2 + [True] * 4 + [False] * 4 + [True, False] + [True] * 3
                   + [False] * 2 + [True] * 2)  # fmt: skip
"""Which columns of :func:`kernel_row` go on a log scale (``log1p``)."""


def kernel_row(k: KernelFeatures, graph_weight_bytes: float, graph_bytes: float) -> list[float]:
    """Tree inputs of one kernel in its graph, raw (:func:`kernel_rows` logs the sizes).

    ``graph_weight_bytes`` and ``graph_bytes`` count the weights a run reads
    (:attr:`KernelTable.context`), not the weights the graph stores.
    """
    return [*own_rows(fields_matrix([kernel_fields(k)]))[0], graph_weight_bytes, graph_bytes]


def own_rows(f: FloatArray) -> FloatArray:
    """The kernels' own columns of :func:`kernel_row`, from rows of :func:`fields_matrix`.

    Columns: MACs, activation bytes, the weight bytes some output reads (the taps that
    meet only padding left out, :func:`~.touched_tap_fraction`:
    a 3x3 conv on a 1x1 map reads a ninth of its weights), channels in and out, kernel size,
    stride, groups, output pixels, output and input height, channels aligned to 8 and to 16
    (in, out), output elements, fused ops, effective MACs (:func:`effective_mmacs`, compute
    kernels), int8 im2col elements, output row blocks, a fused post-activation, a fused Add.
    """
    macs, act, wb, cin, cout, kh, kw, stride, groups, pix, h_out, h_in = f[:, :12].T
    numel, n_fused, post, add, kind, int8, _, read = f[:, 12:].T
    taps = kh * kw
    conv_int8 = (kind >= 0) & (kind <= COMPUTE_KINDS.index("conv1x1")) & (int8 > 0)
    im2col = np.where(conv_int8 & ((taps > 1) | (stride > 1)), taps * cin * pix, 0.0)
    return np.column_stack([
        macs, act, wb * read, cin, cout, kh, stride, groups, pix, h_out, h_in,
        cin % 8 == 0, cout % 8 == 0, cin % 16 == 0, cout % 16 == 0, numel, n_fused,
        np.where(kind >= 0, effective_mmacs_of(f) * 1e6, 0.0), im2col,
        h_out * c16(cout) / WORK_CHANNEL_BLOCK, post, add,
    ])  # fmt: skip


def _raw_rows(table: KernelTable) -> FloatArray:
    """:func:`kernel_row` of every row of ``table``: its own columns, then its graph's."""
    return np.hstack([own_rows(table.fields), table.context[table.row_graph]])


def kernel_rows(rows: Sequence[Sequence[float]] | FloatArray) -> FloatArray:
    """:func:`kernel_row` outputs as the trees' input matrix (sizes on a log scale)."""
    x = np.array(rows, dtype=np.float64).reshape(len(rows), _LOGGED.size)
    x[:, _LOGGED] = np.log1p(x[:, _LOGGED])
    return x


@_register
class KernelPredictor(BaseLatencyPredictor):
    """Sum of per-kernel times, each learned from onnxruntime's per-kernel profile.

    See the module docstring. Fit with ``kernel_times`` (one
    :attr:`Measurement.kernel_times` per graph, from ``measure(..., kernel_times_s=...)``);
    without them the per-kernel targets come from a kernel-additive fit to the totals,
    which makes this a slower copy of ``"additive"``.

    Args:
        n_estimators: Trees per kernel kind.
        max_depth: Depth of each tree.
        learning_rate: Shrinkage.
        seed: Seed of the trees' row subsampling.
        kernel_overhead: How the calibration counts the time the profiler adds to each
            kernel: ``"fading"`` (more to short kernels than to long ones, its scale fit
            to the training graphs by :func:`fading_overhead_scale`) or ``"constant"``
            (the same for every kernel).
        work_split: ``"learned"``: per kind that onnxruntime's thread pool runs (not the
            compute kinds), find where the time per unit of work drops
            (:func:`fit_work_split`: the runtime's switch to more threads) and scale the
            work above it; ``"none"``: one rate per kind.
    """

    name = "kernel"
    uses_kernel_times = True

    def __init__(
        self,
        *,
        n_estimators: int = 150,
        max_depth: int = 4,
        learning_rate: float = 0.1,
        seed: int | None = 0,
        kernel_overhead: str = "fading",
        work_split: str = "learned",
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed
        self.kernel_overhead = kernel_overhead
        self.work_split = work_split

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        self._fit_kernel_times(features, y, None)

    def _fit_kernel_times(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> None:
        targets = self._kernel_targets(features, y, kernel_times)
        table = kernel_table(features)  # the rows prediction reads, built the same way
        raw_all = _raw_rows(table)
        times_all = np.array(
            [np.nan if t is None else max(float(t), 1e-4) for ts in targets for t in ts]
        )
        key_of_kernel = table.key_of[table.row_of]
        if np.isnan(times_all).all():
            raise ValueError("no kernel of the training graphs has a time to learn from.")
        self.models_: dict[str, dict[str, Any]] = {}
        for code, key in sorted(enumerate(table.key_names), key=lambda ck: ck[1]):
            timed = (key_of_kernel == code) & ~np.isnan(times_all)
            if not timed.any():
                continue
            raw, t_ms = raw_all[table.row_of[timed]], times_all[timed]
            if len(t_ms) < MIN_TREE_SAMPLES:
                z_mid = float(np.median(np.log(t_ms / row_work(raw, key))))
                self.models_[key] = {
                    "c0": 0.0, "z": z_mid, "forest": None, "bytes_per_mac": 0.0, "split": NO_SPLIT
                }  # fmt: skip
                continue
            compute = key.split(".")[0] in COMPUTE_KINDS
            ratio = weight_traffic_ratio(raw, t_ms) if compute else 0.0
            work = row_work(raw, key, ratio)
            split = NO_SPLIT  # MLAS threads the compute kinds by rules of its own
            if self.work_split == "learned" and not compute:
                split = fit_work_split(t_ms, work)
            work = split_work(work, split)
            c0 = launch_cost(t_ms, work)
            z = np.log(np.maximum(t_ms - c0, 2e-4)) - np.log(work)
            forest, _ = _fit_trees(
                kernel_rows(raw), z, n_estimators=self.n_estimators, max_depth=self.max_depth,
                learning_rate=self.learning_rate, seed=self.seed,
            )  # fmt: skip
            self.models_[key] = {"c0": c0, "z": 0.0, "forest": forest, "bytes_per_mac": ratio,
                                 "split": split}  # fmt: skip
        self.keys_ = sorted(self.models_)
        sums, fades = self._kernel_sums(features, table)
        self.calibration_ = _calibrate(sums, fades, y)

    def _kernel_targets(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> list[list[float | None]]:
        if self.work_split not in WORK_SPLITS:
            raise ValueError(
                f"work_split must be one of {WORK_SPLITS}, got {self.work_split!r}. Try 'learned'."
            )
        if self.kernel_overhead not in KERNEL_OVERHEADS:
            raise ValueError(
                f"kernel_overhead must be one of {KERNEL_OVERHEADS}, got "
                f"{self.kernel_overhead!r}. Try 'fading'."
            )
        self.fade_ms_ = math.inf
        if kernel_times is not None and any(kt for kt in kernel_times):
            times: list[list[float | None]] = [
                align_kernel_times(f, kt) if kt else [None] * len(f.kernels)
                for f, kt in zip(features, kernel_times, strict=True)
            ]
            if self.kernel_overhead == "fading":
                self.fade_ms_ = fading_overhead_scale(times, y)
            return match_profiles_to_latency(features, y, times, fade_ms=self.fade_ms_)
        additive = KernelAdditivePredictor()._fit_then(features, y)
        additive.n_train_ = len(features)
        return [[c for _, c in additive.kernel_costs(f)] for f in features]

    def _kernel_sums(
        self, features: Sequence[GraphFeatures], table: KernelTable | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Each graph's predicted kernel times (ms) summed, and their :func:`fade` weights.

        Vectorised per kernel kind.
        """
        sums = np.zeros(len(features))
        if not any(f.kernels for f in features):
            return sums, sums.copy()
        t = kernel_table(features) if table is None else table
        raw_all = _raw_rows(t)
        times = np.zeros(len(raw_all))
        for key, idx in t.rows_by_key().items():
            model = self.models_[key if key in self.models_ else _fallback_key(key, self.keys_)]
            raw = raw_all[idx]
            if model["forest"] is None:
                z = np.full(len(idx), model["z"])
            else:
                z = predict_trees(model["forest"], kernel_rows(raw))
            work = split_work(row_work(raw, key, model["bytes_per_mac"]), model["split"])
            times[idx] = model["c0"] + work * np.exp(np.clip(z, -20, 20))
        total = np.bincount(t.graph_of, weights=times[t.row_of], minlength=len(features))
        fades = np.bincount(
            t.graph_of, weights=fade(times, self.fade_ms_)[t.row_of], minlength=len(features)
        )
        return np.asarray(total, dtype=np.float64), np.asarray(fades, dtype=np.float64)

    def _predict_features(
        self, features: list[GraphFeatures], table: KernelTable | None = None
    ) -> FloatArray:
        a, b, c = self.calibration_
        sums, fades = self._kernel_sums(features, table)
        return np.asarray(a * sums + b + c * fades, dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        models = {
            key: {
                "c0": m["c0"],
                "z": m["z"],
                "forest": None if m["forest"] is None else forest_state(m["forest"]),
                "bytes_per_mac": m["bytes_per_mac"],
                "split": None if math.isinf(m["split"][0]) else list(m["split"]),  # strict JSON
            }
            for key, m in self.models_.items()
        }
        fade_ms = None if math.isinf(self.fade_ms_) else self.fade_ms_  # strict JSON: no inf
        return {"models": models, "calibration": list(self.calibration_), "fade_ms": fade_ms}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.models_ = {
            key: {
                "c0": float(m["c0"]),
                "z": float(m["z"]),
                "forest": None if m["forest"] is None else forest_from_state(m["forest"]),
                "bytes_per_mac": float(m.get("bytes_per_mac", 0.0)),  # files before it: none
                "split": _split_state(m.get("split")),  # None, or files before it: no split
            }
            for key, m in state["models"].items()
        }
        self.keys_ = sorted(self.models_)
        a, b, c = (float(v) for v in state["calibration"])
        self.calibration_ = (a, b, c)
        fade_ms = state.get("fade_ms")
        self.fade_ms_ = math.inf if fade_ms is None else float(fade_ms)


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
    makes :func:`row_work` count weight traffic as well as arithmetic, so a kernel that reads
    many weights for few MACs (a 1x1 conv on a 1x1 map, a GEMV) is not given the speed of
    one that reuses each weight over many pixels. Without it, the trees must learn that
    from the few such kernels in the training graphs: on a 2-vCPU AVX2 host with an 8 MB
    L3, ``conv1x1.fp32`` 720 -> 240 on a 1x1 map (691 KB of weights) in MobileNetV2 at
    32 px is then predicted at 26 us against 54 us profiled. Gemm's weights are its MACs
    (one each), so its ratio comes out 0; on that host's ``local-cpu`` the others are 0.9
    (``conv1x1.fp32``), 2.4 (``conv.fp32``), 4.2 (``dwconv.fp32``) and 0.2-0.6 (int8) MACs
    a byte.
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
    :class:`KernelPredictor` looks for a split in the kinds onnxruntime runs that way (not
    the compute kinds, which MLAS partitions by rules of its own: on the small graphs of
    the tests, one thread, ``gemm.fp32`` "split" at a fourth of the rate, the small-matrix
    inefficiency the trees learn anyway).
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


def _split_state(split: Sequence[float] | None) -> tuple[float, float]:
    if split is None:
        return NO_SPLIT
    threshold, factor = split
    return float(threshold), float(factor)


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


def graph_family(f: GraphFeatures) -> tuple[tuple[str, ...], int]:
    """A graph's family for :func:`family_folds`: its compute and pool kinds and its depth.

    Depth is 1-2 compute kernels (a single-kernel graph), 3-12 or more. A ResNet is
    ``(("conv", "conv1x1", "gemm", "pool"), 2)`` at any width, size or precision; an
    inverted-residual net adds ``"dwconv"``.
    """
    kinds = sorted({k.kind for k in f.kernels if k.kind in (*COMPUTE_KINDS, "pool", "qpool")})
    n = sum(1 for k in f.kernels if k.kind in COMPUTE_KINDS)
    return tuple(kinds), 0 if n <= 2 else (1 if n <= 12 else 2)


def family_folds(features: Sequence[GraphFeatures], folds: int) -> IntArray:
    """Fold of each graph, whole families (:func:`graph_family`) to a fold.

    Families go, largest first, to the fold with the fewest graphs so far. Choosing the
    mix of :class:`CombinedPredictor` on such folds scores it on families its fit did not
    see, which is what the held-out sets of ``experiments/predictor_accuracy.py`` (and a
    user's model) are. The additive model does well on graphs like its training graphs
    and worse on new families, which random folds do not show (random folds keep a graph's
    near twins in training and pick a lower kernel weight; CHANGELOG.md has the numbers).
    """
    fams = [graph_family(f) for f in features]
    names = sorted(set(fams))
    fam = np.array([names.index(x) for x in fams], dtype=np.int64)
    sizes = np.bincount(fam, minlength=len(names))
    load = np.zeros(folds)
    fold_of_family = np.zeros(len(names), dtype=np.int64)
    for g in np.argsort(-sizes, kind="stable"):
        fold_of_family[g] = int(np.argmin(load))
        load[fold_of_family[g]] += sizes[g]
    return np.asarray(fold_of_family[fam], dtype=np.int64)


@_register
class CombinedPredictor(BaseLatencyPredictor):
    """Weighted geometric mean of the ``"kernel"`` and ``"additive"`` predictors.

    Args:
        kernel_weight: Weight of the kernel predictor's log-prediction, in [0, 1], or
            ``"auto"``: chosen from :data:`WEIGHT_GRID` by 5-fold out-of-fold MAPE on the
            training graphs, whole families to a fold (:func:`family_folds`;
            ``kernel_weight_`` holds the choice; five more fits of both parts). Without
            kernel times, or with fewer than :data:`MIN_WEIGHT_CV_GRAPHS` graphs, ``"auto"``
            is :data:`FALLBACK_WEIGHT`.
        alpha: Ridge strength of the additive part.
        n_estimators: Trees per kernel kind of the kernel part.
        max_depth: Depth of those trees.
        learning_rate: Their shrinkage.
        seed: Their seed.
        kernel_overhead: The kernel part's profiler-overhead term (:class:`KernelPredictor`).
        work_split: Whether the kernel part learns where a kind's time per unit of work
            drops (:class:`KernelPredictor`).
    """

    name = "combined"
    uses_kernel_times = True

    def __init__(
        self,
        *,
        kernel_weight: float | str = "auto",
        alpha: float = 1e-4,
        n_estimators: int = 150,
        max_depth: int = 4,
        learning_rate: float = 0.1,
        seed: int | None = 0,
        kernel_overhead: str = "fading",
        work_split: str = "learned",
    ) -> None:
        self.kernel_weight = kernel_weight
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed
        self.kernel_overhead = kernel_overhead
        self.work_split = work_split

    def _parts(self) -> tuple[KernelAdditivePredictor, KernelPredictor]:
        return KernelAdditivePredictor(alpha=self.alpha), KernelPredictor(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, seed=self.seed,
            kernel_overhead=self.kernel_overhead, work_split=self.work_split,
        )  # fmt: skip

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        self._fit_kernel_times(features, y, None)

    def _fit_kernel_times(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> None:
        w = self.kernel_weight
        auto = w == "auto"
        if not (auto or (isinstance(w, (int, float)) and 0 <= w <= 1)):
            raise ValueError(
                f"kernel_weight must be a number in [0, 1] or 'auto', got {w!r}. Try 'auto'."
            )
        timed = kernel_times is not None and any(kernel_times)
        if auto:
            enough = len(features) >= MIN_WEIGHT_CV_GRAPHS
            w = FALLBACK_WEIGHT
            if kernel_times is not None and timed and enough:
                w = self._cv_weight(features, y, kernel_times)
        self.kernel_weight_ = float(w)
        self.additive_, self.kernel_ = self._fit_parts(features, y, kernel_times)

    def _fit_parts(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> tuple[KernelAdditivePredictor, KernelPredictor]:
        additive, kernel = self._parts()
        additive._fit_features(features, y)
        kernel._fit_kernel_times(features, y, kernel_times)
        for part in (additive, kernel):
            part.n_train_ = len(features)
        return additive, kernel

    def _cv_weight(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None],
        folds: int = 5,
    ) -> float:
        """The :data:`WEIGHT_GRID` weight with the lowest out-of-fold MAPE.

        The folds hold out whole families (:func:`family_folds`), as a user's model is a
        family the profile did not measure. ``weight_mape_`` and ``weight_scores_`` (share
        within +-10%) keep each weight's out-of-fold scores.

        MAPE, not the share within +-10% (the target's own measure): the share counts 300
        graphs against a threshold, so it moves in steps and ties between weights and
        changes its choice with the tree seed; the MAPE uses every graph's error and, in
        ``experiments/predictor_accuracy.py``, ranks the weights the same way for all five
        tree seeds (1.0 on ``local-cpu``, 0.75 on ``local-cpu-2t``).
        """
        from latency_models.predictors._metrics import prediction_metrics

        fold = family_folds(features, folds)
        if len(set(fold.tolist())) < folds:  # too few families: graphs at random
            fold = (
                np.random.default_rng(0 if self.seed is None else self.seed).permutation(
                    len(features)
                )
                % folds
            )
        logs = np.zeros((2, len(features)))
        for f in range(folds):
            tr, te = np.flatnonzero(fold != f).tolist(), np.flatnonzero(fold == f).tolist()
            additive, kernel = self._fit_parts(
                [features[i] for i in tr], y[tr], [kernel_times[i] for i in tr]
            )
            held = [features[i] for i in te]
            logs[0, te] = np.log(np.maximum(additive._predict_features(held), 1e-9))
            logs[1, te] = np.log(np.maximum(kernel._predict_features(held), 1e-9))
        scores = []
        for w in WEIGHT_GRID:
            m = prediction_metrics(y, np.exp(w * logs[1] + (1 - w) * logs[0]))
            scores.append((m["mape"], -m["within_10"]))
        self.weight_mape_ = {w: s[0] for w, s in zip(WEIGHT_GRID, scores, strict=True)}
        self.weight_scores_ = {w: -s[1] for w, s in zip(WEIGHT_GRID, scores, strict=True)}
        return float(WEIGHT_GRID[scores.index(min(scores))])

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        w = self.kernel_weight_
        table = kernel_table(features)  # one walk over the kernels for both models
        a = np.log(np.maximum(self.additive_._predict_features(features, table), 1e-9))
        if w == 0:
            return np.asarray(np.exp(a), dtype=np.float64)
        k = np.log(np.maximum(self.kernel_._predict_features(features, table), 1e-9))
        return np.asarray(np.exp(w * k + (1 - w) * a), dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {
            "additive": self.additive_.get_state(),
            "kernel": self.kernel_.get_state(),
            "kernel_weight": self.kernel_weight_,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.additive_, self.kernel_ = self._parts()
        self.additive_.set_state(state["additive"])
        self.kernel_.set_state(state["kernel"])
        # files from before the weight was chosen per device carry it only in the params
        fixed = self.kernel_weight if isinstance(self.kernel_weight, (int, float)) else None
        self.kernel_weight_ = float(
            state.get("kernel_weight", FALLBACK_WEIGHT if fixed is None else fixed)
        )
        for part in (self.additive_, self.kernel_):
            part.n_train_ = 0
