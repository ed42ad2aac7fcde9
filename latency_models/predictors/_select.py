"""Out-of-fold scores of every predictor kind and both baselines, on the same family folds.

A fit is never silently worse than a simple baseline: beside the kinds on onnxruntime's x86
kernel features (``additive``, ``graph-gbt``, ``additive-gbt``) and the op-level candidates
of :func:`~._choice.default_candidates`, the MACs-proportional (``macs``) and op-count
(``op-count``) baselines are scored out of fold on folds that hold out whole families of
graphs. :func:`score_kinds` returns the JSON-able record kept in a predictor's metadata.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from latency_models.features._features import GraphFeatures
from latency_models.features._oplevel import OPLEVEL_FEATURES
from latency_models.predictors._base import PREDICTORS
from latency_models.predictors._choice import (
    choose_model,
    default_candidates,
    fold_indices,
    score_predictions,
)
from latency_models.predictors._oplevel_predictor import cut_large_families, oplevel_families
from latency_models.predictors._robust import one_blas_thread

_logger = logging.getLogger(__name__)

GRAPH_KINDS = {"additive": 8, "graph-gbt": 20, "additive-gbt": 20}
"""Kinds on :class:`GraphFeatures` scored out of fold, and the training graphs each needs."""
FIT_KINDS = ("additive", "additive-gbt")
"""The x86 kinds a fit scores (``graph-gbt``'s Huber trees take seconds a fold; ``hwnas
device eval`` scores it too)."""
KERNEL_KINDS = ("combined", "kernel")
"""Kinds that learn from per-kernel times: too slow to refit per fold, so not scored."""
BASELINES = ("macs", "op-count")
"""The two baselines every kind is compared with."""
TOLERANCE = 0.02
"""Spearman by which a baseline must beat the default kind before it replaces it."""


def graph_families(features: Sequence[GraphFeatures], *, n_splits: int = 5) -> list[str]:
    """A structural family per graph from its kernel totals (kinds used and size class).

    As :func:`~._oplevel_predictor.oplevel_families`, for when only :class:`GraphFeatures`
    are at hand; a family larger than a fold's share is cut into MACs ranges.
    """
    keys = ("n_conv", "n_dwconv", "n_conv1x1", "n_gemm", "n_eltwise", "n_memory", "n_quant",
            "n_pool")  # fmt: skip
    out = []
    for f in features:
        used = "".join("1" if f.totals.get(k, 0.0) > 0 else "0" for k in keys)
        out.append(f"{used}/{int(np.log2(1 + f.totals.get('n_kernels', 0.0)))}")
    macs = [f.totals.get("macs", 0.0) for f in features]
    return cut_large_families(out, macs, n_splits=n_splits)


def score_kinds(
    features: Sequence[GraphFeatures] | None,
    rows: Any,
    y: Any,
    *,
    groups: Sequence[Any] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    skip: Sequence[str] = KERNEL_KINDS,
    kinds: Sequence[str] = tuple(GRAPH_KINDS),
) -> dict[str, Any]:
    """Out-of-fold scores of every kind that the inputs allow, on shared family folds.

    Args:
        features: :class:`GraphFeatures` of the graphs, or None (x86 kinds are skipped).
        rows: Op-level rows (n, len(OPLEVEL_FEATURES)), or None (op-level kinds skipped;
            ``macs`` is then the ``flops`` kind).
        y: Labels > 0 (ms or mJ), shape (n,).
        groups: Family per graph; default a structural family (:func:`oplevel_families`).
        n_splits: Most folds.
        seed: Seed of the folds.
        skip: Kinds recorded as skipped (those that need per-kernel times).
        kinds: Kinds of :data:`GRAPH_KINDS` to score on ``features``.

    Returns:
        ``{"candidates": {kind: scores or {"skipped": why}}, "split": {...},
        "op_level_choice": the op-level candidate model choice picks, or None}``. Scores
        are those of :func:`~._choice.score_predictions`.
    """
    with one_blas_thread():
        return _score_kinds(features, rows, y, groups, n_splits, seed, skip, kinds)


def _score_kinds(
    features: Sequence[GraphFeatures] | None, rows: Any, y: Any, groups: Sequence[Any] | None,
    n_splits: int, seed: int, skip: Sequence[str], kinds: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    t = np.asarray(y, dtype=np.float64)
    if groups is None:
        groups = (
            oplevel_families(rows, n_splits=n_splits) if rows is not None
            else graph_families(features or [], n_splits=n_splits)
        )  # fmt: skip
    scores: dict[str, dict[str, Any]] = {}
    keep = np.ones(t.size, dtype=bool)
    op_choice = None
    if rows is not None:
        cands = default_candidates(OPLEVEL_FEATURES, seed=seed)
        choice = choose_model(rows, t, candidates=cands, groups=groups, n_splits=n_splits,
                              seed=seed)  # fmt: skip
        op_choice = choice.name
        scores.update(choice.to_dict()["candidates"])
        split = dict(choice.split)
        keep[split["excluded_from_scores"]] = False
    else:
        folds, split = fold_indices(t.size, groups, n_splits=n_splits, seed=seed)
        split["excluded_from_scores"] = []
        scores["op-count"] = {"skipped": "needs the graphs (op-level features)"}
    if features is not None:
        folds, _ = fold_indices(t.size, groups, n_splits=n_splits, seed=seed)
        min_train = min(len(tr) for tr, _ in folds)
        wanted = {k: GRAPH_KINDS[k] for k in kinds}
        wanted = wanted if rows is not None else {"flops": 3, **wanted}
        for kind, need in wanted.items():
            if min_train < need:
                scores[kind] = {"skipped": f"needs {need} training graphs per fold"}
                continue
            pred = _out_of_fold(kind, list(features), t, folds)
            scores[kind] = score_predictions(t[keep], pred[keep])
        if rows is None:
            scores["macs"] = scores.pop("flops")
    for kind in skip:
        scores.setdefault(kind, {"skipped": "learns from per-kernel times; not refit per fold"})
    return {"candidates": _no_nan(scores), "split": split, "op_level_choice": op_choice}


def _out_of_fold(kind: str, features: list[GraphFeatures], t: Any, folds: Any) -> Any:
    cls = PREDICTORS.get(kind)
    pred = np.full(t.size, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for train, test in folds:
            model = cls().fit([features[i] for i in train], t[train])
            pred[test] = model.predict_features([features[i] for i in test])
    return pred


def _no_nan(scores: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        k: {m: (None if isinstance(v, float) and np.isnan(v) else v) for m, v in s.items()}
        for k, s in scores.items()
    }


def spearman_of(record: dict[str, Any], kind: str) -> float | None:
    """A kind's out-of-fold Spearman in a :func:`score_kinds` record (None if not scored)."""
    s = record["candidates"].get(kind, {})
    value = s.get("spearman")
    return None if value is None else float(value)


def best_baseline(record: dict[str, Any]) -> tuple[str, float] | None:
    """The baseline with the highest out-of-fold Spearman, or None if neither was scored."""
    scored = [(b, s) for b in BASELINES if (s := spearman_of(record, b)) is not None]
    return max(scored, key=lambda bs: bs[1]) if scored else None
