"""Learned latency / energy predictors over graph features (scikit-learn contract).

Kinds, registered in :data:`PREDICTORS` under their ``name``: ``flops`` (MACs plus a
constant, the baseline every report compares against) and ``additive`` (a non-negative cost
per fused kernel kind) in :mod:`._additive`; ``graph-gbt`` and ``additive-gbt`` (boosted
trees on graph totals, alone or as a correction) in :mod:`._trees`; ``kernel`` and
``combined`` (learned from per-kernel times) in :mod:`._kernel_predictor` and
:mod:`._combined_predictor`; ``op-level`` (runtime-agnostic op-level features, its model
chosen per device) in :mod:`._oplevel_predictor`; ``transfer`` (few labels, from other
devices' predictors) in :mod:`._transfer_predictor`.
:func:`~latency_models.fit_predictor` fits ``combined`` when kernel times are given for a
latency target, else ``additive``, on onnxruntime-x86 devices, and ``op-level`` elsewhere.
Predictions use numpy only, so a saved predictor predicts bit-identically without
scikit-learn's estimators, torch or the training data.
"""

from __future__ import annotations

# Importing the kinds registers them in PREDICTORS.
from latency_models.predictors import (  # noqa: F401
    _additive,
    _combined_predictor,
    _kernel_predictor,
    _oplevel_predictor,
    _transfer_predictor,
    _trees,
)
