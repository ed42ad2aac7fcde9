"""Fitting a device's predictors from its stored measurements, and judging them.

:func:`fit_device` is what ``hwnas device fit`` and the end of ``hwnas device profile`` run:
the stored labels are checked, the device's feature set is chosen by its runtime
(:func:`~latency_models.predictors._persist.device_feature_set`), every kind is scored out of
fold and the result saved. :func:`evaluate_device` is ``hwnas device eval``: every kind's and
both baselines' scores side by side with the labels' own repeat agreement.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latency_models._errors import ProfileError

if TYPE_CHECKING:
    from latency_models.predictors._base import BaseLatencyPredictor

_logger = logging.getLogger(__name__)

MIN_FIT_GRAPHS = 10
"""Fewest stored graphs a device's predictor is fitted on."""


@dataclass
class DeviceData:
    """A device's stored training data in the forms the predictor kinds read."""

    device: str
    target: str
    feature_set: str
    features: list[Any]
    y: Any
    hashes: list[str]
    rows: Any = None
    kernel_times: list[Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """What messages call each graph: its hash's first 16 digits."""
        return [f"graph {h[:16]}" for h in self.hashes]


def device_data(device: str, *, target: str = "latency_ms") -> DeviceData:
    """Load a device's measurements: labels, x86 features, op-level rows, kernel times.

    Graphs the op-level features cannot read are left out on an op-level device, with a
    warning naming each graph and why; on an x86 device, op-level kinds are then skipped.

    Raises:
        ValueError: a stored value is not finite > 0 (naming the record).
        UnknownNameError: ``device`` is not registered.
    """
    from latency_models.devices import get_device
    from latency_models.measurement._store import MeasurementStore
    from latency_models.predictors._persist import (
        device_feature_set,
        training_data,
        training_kernel_times,
        training_oplevel,
    )

    spec = get_device(device)
    store = MeasurementStore(spec.name)
    feats, y, hashes = training_data(store, target=target)
    data = DeviceData(spec.name, target, device_feature_set(spec, store), feats, y, hashes)
    rows, bad = training_oplevel(store, hashes)
    if bad:
        data.notes.append(
            f"{len(bad)} graph(s) op-level features cannot read: {'; '.join(bad[:5])}"
        )
        if data.feature_set == "oplevel":
            warnings.warn(
                f"left out {len(bad)} graph(s) whose op-level features cannot be computed: "
                f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}.",
                UserWarning,
                stacklevel=2,
            )
            keep = np.flatnonzero(np.isfinite(rows).all(axis=1))
            data.features = [feats[i] for i in keep]
            data.y, data.hashes, rows = y[keep], [hashes[i] for i in keep], rows[keep]
        else:
            rows = None
    data.rows = rows
    if target == "latency_ms" and data.feature_set == "onnxruntime-x86":
        data.kernel_times = training_kernel_times(store, data.hashes)
    return data


def fit_device(
    device: str,
    *,
    target: str = "latency_ms",
    seed: int = 0,
    extra_metrics: dict[str, Any] | None = None,
    save: bool = True,
) -> tuple[BaseLatencyPredictor, Path | None]:
    """Fit (and save) a device's predictor for ``target`` from its stored measurements.

    Args:
        device: Registered device name.
        target: ``"latency_ms"`` or ``"energy_mj"``.
        seed: Seed of the held-out split and the folds.
        extra_metrics: Added to the predictor's metrics (a profile's load figures).
        save: Write it to :func:`~latency_models.predictor_path`.

    Returns:
        The fitted predictor (``choice_`` holds every kind's scores) and where it was saved.

    Raises:
        ProfileError: fewer than :data:`MIN_FIT_GRAPHS` stored graphs with ``target``.
        ValueError: a stored value is not finite > 0 (naming the record).
    """
    from latency_models.predictors._persist import fit_predictor, predictor_path

    data = device_data(device, target=target)
    if len(data.y) < MIN_FIT_GRAPHS:
        raise ProfileError(
            f"only {len(data.y)} stored graphs with {target} for {data.device!r}; a predictor "
            f"needs at least {MIN_FIT_GRAPHS}. Measure more (`hwnas device profile "
            f"{data.device}`) or import them (`hwnas device import {data.device} FILE`)."
        )
    predictor = fit_predictor(
        data.features, data.y, target=target, device=data.device, seed=seed,
        kernel_times=data.kernel_times, feature_set=data.feature_set, oplevel=data.rows,
        names=data.names,
    )  # fmt: skip
    if FEW_SHOT_MIN <= len(data.y) < FEW_SHOT_LABELS and data.rows is not None:
        predictor = _few_shot_start(predictor, data, seed)
    predictor.metrics_ = {**predictor.metrics_, **(extra_metrics or {})}
    if not save:
        return predictor, None
    path = predictor.save(
        predictor_path(data.device, target), device=data.device, target=target,
        metrics=predictor.metrics_,
    )  # fmt: skip
    return predictor, path


FEW_SHOT_LABELS = 30
"""Below this many labels a device starts from other devices' predictors where any exist."""
FEW_SHOT_MIN = 6
FEW_SHOT_TIE = 0.01
"""Out-of-fold Spearman by which the few-shot start may trail fitting from scratch."""


def _few_shot_start(
    scratch: BaseLatencyPredictor, data: DeviceData, seed: int
) -> BaseLatencyPredictor:
    """The transfer predictor when it scores no worse out of fold than ``scratch``.

    Either way the choice record gains a ``transfer`` entry (or why it was not tried) and
    ``more_measurements``: whether, out of fold, more labels still raised the accuracy.
    """
    from latency_models.measurement._store import MeasurementStore
    from latency_models.predictors._choice import (
        fold_indices,
        out_of_fold_predictions,
        score_predictions,
    )
    from latency_models.predictors._metrics import prediction_metrics
    from latency_models.predictors._oplevel_predictor import oplevel_families
    from latency_models.predictors._persist import reference_predictors, training_graphs
    from latency_models.predictors._transfer import TransferRegressor
    from latency_models.predictors._transfer_predictor import TransferPredictor, transfer_inputs

    record = dict(getattr(scratch, "choice_", None) or {})
    cands = dict(record.get("candidates", {}))
    refs = reference_predictors(data.device, data.target)
    left = set(getattr(scratch, "left_out_", None) or [])
    keep = [i for i, n in enumerate(data.names) if n not in left]
    y, rows = data.y[keep], data.rows[keep]
    if not refs:
        cands["transfer"] = {"skipped": "no other device has a saved predictor to start from"}
        record.update(candidates=cands, more_measurements=_more(rows, y, None, seed))
        scratch.choice_ = record
        return scratch
    graphs = training_graphs(MeasurementStore(data.device), [data.hashes[i] for i in keep])
    Z = transfer_inputs(refs, graphs)
    folds, _ = fold_indices(len(y), oplevel_families(rows), seed=seed)
    oof = out_of_fold_predictions(lambda: TransferRegressor(n_reference=len(refs)), Z, y, folds)
    cands["transfer"] = {**score_predictions(y, oof), "references": [r.device_ for r in refs]}
    chosen = str(record.get("chosen", scratch.name)).split(":")[-1]
    own = (cands.get(chosen) or {}).get("spearman")
    rho = cands["transfer"]["spearman"]
    record.update(candidates=cands, more_measurements=_more(Z, y, len(refs), seed))
    if own is not None and not (rho is not None and rho >= own - FEW_SHOT_TIE):
        scratch.choice_ = record
        return scratch
    record["chosen"] = "transfer"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        few = TransferPredictor().fit(graphs, y, references=refs)
    few.device_, few.target_, few.left_out_ = data.device, data.target, sorted(left)
    few.metrics_ = {f"oof_{k}": v for k, v in prediction_metrics(y, oof).items()}
    few.choice_ = record
    return few


def _more(X: Any, y: Any, n_reference: int | None, seed: int) -> dict[str, Any]:
    """Whether more labels still help (out-of-fold Spearman over label subsets), and how many.

    With ``n_reference`` the curve is the transfer model's, else the op-count model's.
    """
    from latency_models.features._oplevel import OPLEVEL_FEATURES
    from latency_models.predictors._baselines import OpCountBaseline, opcount_columns
    from latency_models.predictors._robust import one_blas_thread
    from latency_models.predictors._transfer import TransferRegressor, label_curve

    cols = opcount_columns(OPLEVEL_FEATURES)

    def factory() -> Any:
        if n_reference is None:
            return OpCountBaseline(columns=cols)
        return TransferRegressor(n_reference=n_reference)

    if len(y) < 12:
        return {"more_would_help": True, "suggest": 30 - len(y)}
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = label_curve(X, y, factory=factory, seed=seed)
    curve["suggest"] = len(y) if curve["more_would_help"] else 0
    return curve


def describe_choice(predictor: BaseLatencyPredictor) -> list[str]:
    """Lines saying which kind was fitted and how every kind scored out of fold."""
    record = getattr(predictor, "choice_", None) or {}
    kind = getattr(predictor, "kind_", None)
    lines = [f"fitted {predictor.name}" + (f" ({kind})" if kind else "")]
    if record.get("candidates"):
        lines.append(f"out of fold on {_split_words(record.get('split', {}))}:")
        lines += [
            f"  {line}" for line in score_table(record["candidates"], mark=record.get("chosen"))
        ]
    more = record.get("more_measurements")
    if more:
        lines.append(
            f"measuring about {more['suggest']} more graphs should help most"
            if more.get("suggest")
            else "more measurements would add little (out-of-fold accuracy has levelled off)"
        )
    left = getattr(predictor, "left_out_", None)
    if left:
        lines.append(f"left out {len(left)} label(s): {', '.join(left[:10])}")
    return lines


def _split_words(split: dict[str, Any]) -> str:
    kind = "families held out" if split.get("kind") == "group" else "single graphs held out"
    return f"{split.get('n_graphs', '?')} graphs, {split.get('n_folds', '?')} folds, {kind}"


BASELINE_NAMES = ("macs", "op-count")


def score_table(candidates: dict[str, Any], *, mark: str | None = None) -> list[str]:
    """One aligned line per kind: Spearman, share within ±10%, MAPE (or why skipped)."""
    chosen = (mark or "").split(":")[-1]
    lines = [f"{'kind':<22} {'Spearman':>8} {'±10%':>6} {'MAPE':>7}"]
    for name, s in candidates.items():
        label = name + (" (baseline)" if name in BASELINE_NAMES else "")
        label += " *" if name in (chosen, mark) else ""
        if "skipped" in s:
            lines.append(f"{label:<22} skipped: {s['skipped']}")
            continue
        rho = s.get("spearman")
        lines.append(
            f"{label:<22} {'n/a' if rho is None else f'{rho:.3f}':>8} "
            f"{100 * s['within_10']:5.1f}% {s['mape']:6.1f}%"
        )
    return lines


def repeat_agreement(records: Any, *, target: str = "latency_ms") -> dict[str, Any]:
    """How well a device's labels agree with themselves: graphs measured at least twice.

    For each graph measured twice or more on the same runtime version and host, its two
    newest values are compared.

    Returns:
        ``{"n": graphs compared}``, plus ``within_10`` (share whose two values are within
        ±10% of each other) and ``median_abs_log_ratio`` when ``n`` > 0.
    """
    if hasattr(records, "records"):
        records = records.records(with_onnx=False)
    values: dict[tuple[str, str, str], list[float]] = {}
    for rec in records:
        v = getattr(rec.measurement, target, None)
        if v is not None and math.isfinite(float(v)) and float(v) > 0:
            key = (rec.graph_hash, rec.runtime_version, rec.host)
            values.setdefault(key, []).append(float(v))
    pairs = np.array([v[-2:] for v in values.values() if len(v) >= 2])
    if len(pairs) == 0:
        return {"n": 0}
    rel = np.abs(pairs[:, 0] - pairs[:, 1]) / pairs.min(axis=1)
    return {
        "n": len(pairs),
        "within_10": float(np.mean(rel <= 0.10)),
        "median_abs_log_ratio": float(np.median(np.abs(np.log(pairs[:, 0] / pairs[:, 1])))),
    }


def evaluate_device(
    device: str, *, target: str = "latency_ms", holdout: float = 0.25, seed: int = 1
) -> dict[str, Any]:
    """Held-out accuracy of the device's predictor, every kind and both baselines.

    Refits the saved predictor's class on a split of the store (the saved one has seen
    every graph) and reports :func:`latency_models.prediction_metrics` on the rest beside
    the FLOPs baseline and the noise floor; then scores every kind and both baselines out
    of fold on family-held-out folds (:func:`~latency_models.predictors._select.score_kinds`)
    and the labels' repeat agreement (:func:`repeat_agreement`).

    Returns:
        Dict with ``metrics``, ``baseline`` (FLOPs-proportional), ``noise`` (within-run
        relative standard error of the median, median over graphs, in %), ``n_train``,
        ``n_test``, ``predictor`` (class name), ``saved_metrics`` (from ``meta.json``),
        ``kinds`` (out-of-fold scores per kind, baselines ``macs`` and ``op-count``
        included), ``split``, ``feature_set`` and ``repeat``.

    Raises:
        PredictorNotFoundError: the device has no saved predictor.
        ProfileError: fewer than :data:`MIN_FIT_GRAPHS` stored graphs.
    """
    from latency_models.measurement._store import MeasurementStore
    from latency_models.predictors._persist import device_predictor
    from latency_models.predictors._select import KERNEL_KINDS, score_kinds

    saved = device_predictor(device, target)
    data = device_data(device, target=target)
    if len(data.y) < MIN_FIT_GRAPHS:
        raise ProfileError(
            f"only {len(data.y)} stored graphs for {device!r}; run `hwnas device profile "
            f"{device}` first."
        )
    out = _held_out_report(saved, data, holdout, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        x86 = data.feature_set == "onnxruntime-x86"
        record = score_kinds(
            data.features, data.rows, data.y, seed=seed, skip=KERNEL_KINDS if x86 else ()
        )
    record["candidates"] = _with_auto(record)
    out.update(kinds=record["candidates"], split=record["split"], feature_set=data.feature_set)
    store = MeasurementStore(data.device)
    out["repeat"] = repeat_agreement(store, target=target)
    rse = []
    by_hash = {r.graph_hash: r.measurement for r in store.records(with_onnx=False)}
    for h in data.hashes:
        m = by_hash.get(h)
        if m is not None and m.cv is not None and m.n_runs and math.isfinite(m.cv):
            rse.append(1.2533 * m.cv / math.sqrt(m.n_runs))  # standard error of a median
    out["noise"] = {"median_rse_pct": 100 * float(np.median(rse)) if rse else float("nan")}
    out["saved_metrics"] = dict(saved.metrics_)
    return out


def _with_auto(record: dict[str, Any]) -> dict[str, Any]:
    """The candidates, with ``op-level`` (the model choice's pick) first among them."""
    pick = record.get("op_level_choice")
    cands = dict(record["candidates"])
    if pick is None:
        return cands
    return {"op-level": {**cands[pick], "picks": pick}, **cands}


def _held_out_report(
    saved: BaseLatencyPredictor, data: DeviceData, holdout: float, seed: int
) -> dict[str, Any]:
    from latency_models.predictors._base import PREDICTORS
    from latency_models.predictors._metrics import prediction_metrics

    n = len(data.y)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(2, round(holdout * n))
    te, tr = order[:n_test], order[n_test:]
    out: dict[str, Any] = {"predictor": saved.name, "n_train": len(tr), "n_test": len(te)}
    times = data.kernel_times
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for key, name in (("metrics", saved.name), ("baseline", "flops")):
            p = PREDICTORS.get(name)(**(saved.get_params() if name == saved.name else {}))
            oplevel = p.feature_set == "oplevel"
            if oplevel and data.rows is None:
                continue
            X = data.rows if oplevel else data.features

            def pick(idx: Any, X: Any = X, oplevel: bool = oplevel) -> Any:
                return X[idx] if oplevel else [X[i] for i in idx]

            p.fit(
                pick(tr),
                data.y[tr],
                kernel_times=None if times is None else [times[i] for i in tr],
            )
            out[key] = prediction_metrics(data.y[te], p.predict_features(pick(te)))
            if key == "metrics" and hasattr(p, "kernel_weight_"):
                out["kernel_weight"] = p.kernel_weight_
    return out
