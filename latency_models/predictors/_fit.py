"""Fitting a device's predictor: checked labels, every kind scored, the best one kept."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models.features._features import GraphFeatures
from latency_models.predictors._base import (
    PREDICTORS,
    TARGETS,
    BaseLatencyPredictor,
    featurize,
)
from latency_models.predictors._metrics import prediction_metrics

if TYPE_CHECKING:
    from latency_models._graph import GraphLike

_logger = logging.getLogger(__name__)

DEFAULT_PREDICTOR = "additive"
"""Registry name of the predictor :func:`fit_predictor` fits without per-kernel times."""
KERNEL_PREDICTOR = "combined"
"""Registry name of the predictor :func:`fit_predictor` fits with per-kernel times."""


def fit_predictor(
    graphs: Sequence[GraphLike | GraphFeatures],
    y: Any,
    *,
    target: str = "latency_ms",
    device: str | None = None,
    name: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
    feature_set: str | None = None,
    oplevel: Any = None,
    names: Sequence[str] | None = None,
    groups: Sequence[Any] | None = None,
    choose: bool = True,
) -> BaseLatencyPredictor:
    """Fit a device's predictor: checked labels, every kind scored, the best kept.

    1. Labels that are not finite > 0 are refused, naming the graph. Labels wildly off what
       the graphs' MACs predict (under a tenth of it, or 6 robust sigmas off the rest) are
       named in a warning and left out of the fit (``left_out_``), unless more than a tenth
       are. Milder outliers stay in; the robust fits and scores bound their influence.
    2. The default kind depends on ``feature_set``: on ``"onnxruntime-x86"`` (the kernel
       features describe the device) ``"combined"`` with per-kernel times for a latency
       target, else ``"additive"``; on ``"oplevel"`` (any other runtime) ``"op-level"``.
    3. With ``choose``, every kind and both baselines are scored out of fold on folds that
       hold out whole families (:func:`~._select.score_kinds`); the record is kept as
       ``choice_`` (written into ``meta.json``). On op-level features the best candidate is
       fitted; on x86 features the default is kept unless a baseline beats it, which is
       then used with a warning.
    4. With at least 10 graphs, ``holdout`` of them measure the accuracy (``metrics_``);
       the returned predictor is refit on all graphs.

    Args:
        graphs: Graphs or their :class:`GraphFeatures`, length n.
        y: Measured values, shape (n,), in ms (latency) or mJ (energy).
        target: ``"latency_ms"`` or ``"energy_mj"``.
        device: Device name recorded with the predictor.
        name: Registry name of the predictor class (default: see above; no choice then).
        holdout: Share of graphs for the held-out metrics (0 to skip).
        seed: Seed of the split and the folds.
        kernel_times: Per graph, its :attr:`Measurement.kernel_times` or None.
        feature_set: ``"onnxruntime-x86"`` (default) or ``"oplevel"``
            (:func:`device_feature_set` says which a device's measurements call for).
        oplevel: Op-level rows of the graphs when ``graphs`` are features (computed from
            the graphs otherwise); without them op-level kinds are skipped.
        names: What messages call each graph; default ``graph <index>``.
        groups: Family per graph for the folds; default a structural family.
        choose: Score every kind (a few seconds on hundreds of graphs).

    Returns:
        The fitted predictor, with ``device_``, ``target_``, ``metrics_``, ``choice_`` and
        ``left_out_`` set.

    Raises:
        ValueError: bad target, holdout, feature_set or label (naming the graph).
        FeatureError: a graph cannot be featurized (naming it and why).
    """
    from latency_models.predictors._robust import check_labels

    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}.")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout!r}. Try 0.2.")
    if feature_set not in (None, *FEATURE_SETS):
        raise ValueError(f"feature_set must be one of {list(FEATURE_SETS)}, got {feature_set!r}.")
    label_names = list(names) if names is not None else [f"graph {i}" for i in range(len(graphs))]
    y_arr = check_labels(y, label_names, what=_WHAT[target])
    if kernel_times is not None and len(kernel_times) != len(graphs):
        raise ValueError(
            f"got {len(graphs)} graphs but {len(kernel_times)} kernel_times entries; pass one "
            f"per graph (None where a graph has none)."
        )
    if name is not None and feature_set is None:
        feature_set = PREDICTORS.get(name).feature_set
    data = _FitData.build(graphs, y_arr, label_names, feature_set or "onnxruntime-x86",
                          oplevel, kernel_times, groups)  # fmt: skip
    data.leave_out_suspicious()
    return _fit_chosen(data, name, target, device, holdout, seed, choose)


def _fit_chosen(
    data: _FitData, name: str | None, target: str, device: str | None, holdout: float,
    seed: int, choose: bool,
) -> BaseLatencyPredictor:  # fmt: skip
    """Steps 2-4 of :func:`fit_predictor`."""
    if name is None:
        with_times = data.kernel_times is not None and any(data.kernel_times)
        name = KERNEL_PREDICTOR if with_times and target == "latency_ms" else DEFAULT_PREDICTOR
        name = OPLEVEL_PREDICTOR if data.feature_set == "oplevel" else name
        record = data.choose(name, seed) if choose else {}
    else:
        record = {}
    name, params = _chosen(name, record)
    cls = PREDICTORS.get(name)
    metrics = _held_out(cls, params, data, holdout, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said once already by the choice
        predictor = cls(**params).fit(*data.inputs(cls), data.y, kernel_times=data.kernel_times)
    predictor.device_ = device
    predictor.target_ = target
    predictor.metrics_ = metrics
    predictor.choice_ = record
    predictor.left_out_ = data.left_out
    return predictor


FEATURE_SETS = ("onnxruntime-x86", "oplevel")
"""What a device's predictors read: onnxruntime's x86 kernels, or op-level features."""
OPLEVEL_PREDICTOR = "op-level"
"""Registry name of the default predictor on op-level features (every other runtime)."""
_WHAT = {"latency_ms": "latencies (ms)", "energy_mj": "energies (mJ)"}
_LEAVE_OUT_Z = 6.0
"""Robust z-score of log(label / MACs fit) past which a label is left out. Wide: int8 graphs
legitimately run several times faster per MAC than fp32 ones; near-zero labels (under a
tenth of what their MACs predict) are left out whatever their z-score."""
_MAX_LEFT_OUT = 0.1
"""Most share of labels left out as suspicious; past it they are only named."""


def _chosen(name: str, record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The kind to fit and its params, from the default ``name`` and the choice record."""
    chosen = record.get("chosen")
    if isinstance(chosen, str) and chosen.startswith(f"{OPLEVEL_PREDICTOR}:"):
        return OPLEVEL_PREDICTOR, {"kind": chosen.split(":", 1)[1]}
    if isinstance(chosen, str) and chosen in PREDICTORS.names():
        return chosen, {}
    return name, {}


def _held_out(
    cls: type[BaseLatencyPredictor], params: dict[str, Any], data: _FitData, holdout: float,
    seed: int,
) -> dict[str, float]:  # fmt: skip
    """Metrics of ``cls`` refit on a random split, on the graphs held out (or {})."""
    n = data.y.size
    n_test = round(holdout * n)
    if n < 10 or n_test < 2:
        return {}
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        held = cls(**params).fit(
            *data.inputs(cls, train), data.y[train], kernel_times=data.times_of(train)
        )
        pred = held.predict_features(data.inputs(cls, test)[0])
    metrics = prediction_metrics(data.y[test], pred)
    _logger.info(
        "%s held-out on %d graphs: within_10=%.2f mape=%.1f%% kendall=%.3f",
        cls.name, n_test, metrics["within_10"], metrics["mape"], metrics["kendall"],
    )  # fmt: skip
    return metrics


class _FitData:
    """The graphs of one fit in the forms the kinds read, and what was left out."""

    def __init__(self) -> None:
        self.features: list[GraphFeatures] | None = None
        self.rows: Any = None
        self.y: Any = None
        self.names: list[str] = []
        self.feature_set = "onnxruntime-x86"
        self.kernel_times: list[Any] | None = None
        self.groups: list[Any] | None = None
        self.left_out: list[str] = []

    @classmethod
    def build(
        cls, graphs: Sequence[Any], y: Any, names: list[str], feature_set: str, oplevel: Any,
        kernel_times: Any, groups: Any,
    ) -> _FitData:  # fmt: skip
        from latency_models.features._oplevel import FeatureError
        from latency_models.predictors._oplevel_predictor import oplevel_rows

        data = cls()
        data.y, data.names, data.feature_set = y, names, feature_set
        data.kernel_times = None if kernel_times is None else list(kernel_times)
        data.groups = None if groups is None else list(groups)
        given_features = any(isinstance(g, GraphFeatures) for g in graphs)
        if oplevel is not None:
            data.rows = oplevel_rows(np.asarray(oplevel, dtype=np.float64))
        elif not given_features:
            try:
                data.rows = oplevel_rows(list(graphs), names)
            except FeatureError as exc:
                if feature_set == "oplevel":
                    raise
                _logger.warning("op-level kinds skipped: %s", exc)
        if feature_set == "onnxruntime-x86":
            data.features = featurize(graphs)
        elif data.rows is None:
            raise ValueError(
                "op-level predictors read the graphs: pass the graphs, or their op-level rows "
                "as oplevel=, not only GraphFeatures."
            )
        n = len(graphs)
        if (data.rows is not None and len(data.rows) != n) or y.size != n:
            raise ValueError(f"got {n} graphs but {y.size} target values.")
        return data

    def macs(self) -> Any:
        from latency_models.predictors._oplevel_predictor import MACS_COLUMN

        if self.rows is not None:
            return self.rows[:, MACS_COLUMN]
        return np.array([f.totals.get("macs", 0.0) / 1e6 for f in self.features or []])

    def leave_out_suspicious(self) -> None:
        """Name labels far off the rest in a warning; leave them out unless too many."""
        from latency_models.predictors._robust import suspicious_label_reasons

        if self.y.size < 10:
            return
        flagged = suspicious_label_reasons(
            self.y, self.macs(), self.names, z_max=_LEAVE_OUT_Z, z_max_high=_LEAVE_OUT_Z
        )
        if not flagged:
            return
        shown = "; ".join(f"{n}: {why}" for n, why in flagged[:10])
        more = f" (and {len(flagged) - 10} more)" if len(flagged) > 10 else ""
        if len(flagged) > _MAX_LEFT_OUT * self.y.size:
            warnings.warn(
                f"{len(flagged)} of {self.y.size} labels disagree with the graphs' MACs: "
                f"{shown}{more}. Too many to leave out; kept, so check the measurements.",
                UserWarning,
                stacklevel=3,
            )
            return
        warnings.warn(
            f"left out {len(flagged)} of {self.y.size} labels that look wrong (near zero or "
            f"inconsistent with the rest): {shown}{more}. Remeasure them, or check whether "
            f"the runtime dropped a dead branch.",
            UserWarning,
            stacklevel=3,
        )
        bad = {n for n, _ in flagged}
        self.left_out = [n for n in self.names if n in bad]
        self.subset(np.array([n not in bad for n in self.names]))

    def subset(self, mask: Any) -> None:
        idx = np.flatnonzero(mask)
        self.y = self.y[idx]
        self.names = [self.names[i] for i in idx]
        if self.features is not None:
            self.features = [self.features[i] for i in idx]
        if self.rows is not None:
            self.rows = self.rows[idx]
        self.kernel_times = self.times_of(idx)
        if self.groups is not None:
            self.groups = [self.groups[i] for i in idx]

    def times_of(self, idx: Any) -> list[Any] | None:
        return None if self.kernel_times is None else [self.kernel_times[i] for i in idx]

    def inputs(self, cls: type[BaseLatencyPredictor], idx: Any = None) -> tuple[Any]:
        """``(X,)`` for ``cls``: op-level rows or GraphFeatures, of ``idx`` (default all)."""
        if cls.feature_set == "oplevel":
            return (self.rows if idx is None else self.rows[idx],)
        feats = self.features or []
        return (feats if idx is None else [feats[i] for i in idx],)

    def choose(self, default: str, seed: int) -> dict[str, Any]:
        """Score every kind out of fold; pick per :func:`fit_predictor` step 3."""
        from latency_models.predictors._select import (
            FIT_KINDS,
            KERNEL_KINDS,
            TOLERANCE,
            best_baseline,
            score_kinds,
            spearman_of,
        )

        if self.y.size < 4:
            return {}
        record = score_kinds(
            self.features, self.rows, self.y, groups=self.groups, seed=seed, kinds=FIT_KINDS,
            skip=KERNEL_KINDS if self.feature_set == "onnxruntime-x86" else (),
        )  # fmt: skip
        record["default"] = default
        op_choice = record.pop("op_level_choice")
        chosen = default if op_choice is None else f"{OPLEVEL_PREDICTOR}:{op_choice}"
        if self.feature_set == "oplevel":
            if op_choice in ("macs", "op-count"):
                warnings.warn(
                    f"on these {self.y.size} graphs the richer op-level kinds scored no better "
                    f"than the {op_choice!r} baseline out of fold; using it.",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            chosen = default
            base, own = best_baseline(record), spearman_of(record, default)
            if base is not None and own is not None and base[1] > own + TOLERANCE:
                chosen = f"{OPLEVEL_PREDICTOR}:{base[0]}" if self.rows is not None else "flops"
                warnings.warn(
                    f"the default kind {default!r} lost to the {base[0]!r} baseline out of "
                    f"fold (Spearman {own:.3f} vs {base[1]:.3f}); using the baseline.",
                    UserWarning,
                    stacklevel=3,
                )
        record["chosen"] = chosen
        return record
