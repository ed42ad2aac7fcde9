"""Kernel-level latency predictor, learned from each kernel's time in onnxruntime's profile.

``"kernel"`` (:class:`KernelPredictor`) follows nn-Meter: predict every fused kernel, then
sum. Its per-kernel targets are the times onnxruntime's profiler records for each node of
the profiled training graphs (:func:`~._bench.profile_kernels`), lined up with
the feature kernels by :func:`~latency_models.features._kernel_times.align_kernel_times`. A graph
of 40 kernels gives 40 targets, so 300 profiled graphs give thousands, measured in context:
the caches hold what the graph's other kernels left there.

Per kernel kind and dtype (``conv.fp32``...), a kernel costs

    t = c0 + work * exp(z(kernel, graph))

``work`` is what the kernel must do at full speed (:func:`~._kernel_rows.row_work`), ``z``
the log of the time per unit of work, learned by gradient boosted trees on the kernel's
shape and its graph's size (:func:`~._kernel_rows.kernel_row`). Trees do not extrapolate; a
kernel bigger than any in training gets the speed of the biggest ones, which is the
physically right limit (throughput saturates), where a tree on the time itself would cap
the time. ``c0`` is a fixed launch cost; it, the work split and the calibration of the
summed times to the measured latencies are in :mod:`._kernel_calibration`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latency_models.features._features import COMPUTE_KINDS, GraphFeatures
from latency_models.features._kernel_table import KernelTable, kernel_table
from latency_models.features._kernel_times import align_kernel_times
from latency_models.predictors._additive import KernelAdditivePredictor, _fallback_key
from latency_models.predictors._base import BaseLatencyPredictor, FloatArray, _register
from latency_models.predictors._kernel_calibration import (
    NO_SPLIT,
    _calibrate,
    fade,
    fading_overhead_scale,
    fit_work_split,
    launch_cost,
    match_profiles_to_latency,
    split_work,
    weight_traffic_ratio,
)
from latency_models.predictors._kernel_rows import _raw_rows, kernel_rows, row_work
from latency_models.predictors._trees import (
    _fit_trees,
    forest_from_state,
    forest_state,
    predict_trees,
)

KERNEL_OVERHEADS = ("fading", "constant")
"""Forms of the profiler's per-kernel overhead :class:`KernelPredictor` can calibrate."""
WORK_SPLITS = ("learned", "none")
"""Values of ``work_split``: learn each kind's :func:`fit_work_split`, or not."""
MIN_TREE_SAMPLES = 8
"""Kernel kinds with fewer measured kernels get one throughput, not trees."""


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


def _split_state(split: Sequence[float] | None) -> tuple[float, float]:
    if split is None:
        return NO_SPLIT
    threshold, factor = split
    return float(threshold), float(factor)
