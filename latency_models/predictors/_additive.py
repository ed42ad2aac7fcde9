"""The FLOPs baseline and the kernel-additive predictor (``flops``, ``additive``)."""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils.validation import check_is_fitted

from latency_models.features._features import (
    COMPUTE_KINDS,
    GraphFeatures,
    KernelFeatures,
)
from latency_models.features._kernel_table import (
    F,
    KernelTable,
    kernel_table,
    kernels_fields,
)
from latency_models.predictors._base import (
    BaseLatencyPredictor,
    FloatArray,
    _register,
)

if TYPE_CHECKING:
    pass

_logger = logging.getLogger(__name__)


# --- FLOPs baseline ---------------------------------------------------------------------
@_register
class FlopsPredictor(BaseLatencyPredictor):
    """Baseline: ``y = a * MACs + b``, fit by least squares on relative error (a, b >= 0)."""

    name = "flops"

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        from scipy.optimize import nnls

        a = np.array([[f.totals["macs"] / 1e6, 1.0] for f in features])
        coef, _ = nnls(a / y[:, None], np.ones_like(y))
        self.coef_ = coef

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        a = np.array([[f.totals["macs"] / 1e6, 1.0] for f in features])
        return np.asarray(a @ self.coef_, dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {"coef": self.coef_.tolist()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)


# --- kernel-additive --------------------------------------------------------------------
_BASIS = (
    "count", "mmacs", "act_mb", "weight_mb", "mmacs_small_c", "mmacs_misaligned8",
    "mmacs_misaligned16", "mmacs_small_map", "act_mb_spill",
)  # fmt: skip

CACHE_BYTES = 1 << 20
"""Per-core cache size (bytes) past which a kernel's activations stream from L3/DRAM rather
than L2 (the ``act_mb_spill`` basis term; 1 MiB of L2 per core on the AMD EPYC and recent
Intel server cores hwnas was tuned on). A matching weight term overfit (held-out MAPE 21%
vs 17% on local-cpu) and was dropped."""


def kernel_basis(f: FloatArray) -> FloatArray:
    """The additive model's :data:`_BASIS` for rows of :func:`fields_matrix`, (n, len(_BASIS))."""
    m = f[:, F["macs"]] / 1e6
    act_mb = f[:, F["activation_bytes"]] / 1e6
    cin, cout, kind = f[:, F["in_channels"]], f[:, F["out_channels"]], f[:, F["compute_kind"]]
    compute = kind >= 0
    dwconv, gemm = kind == COMPUTE_KINDS.index("dwconv"), kind == COMPUTE_KINDS.index("gemm")
    small_c = compute & ~dwconv & (np.minimum(cin, cout) < 16)
    misaligned = compute & ((cin % 8 != 0) | (cout % 8 != 0))
    misaligned16 = compute & ((cin % 16 != 0) | (cout % 16 != 0))
    small_map = compute & ~gemm & (f[:, F["output_pixels"]] <= 64)
    read_mb = f[:, F["weight_bytes"]] * f[:, F["touched_taps"]] / 1e6  # padding-only taps unread
    return np.column_stack([
        np.ones(len(f)), m, act_mb, read_mb, m * small_c, m * misaligned,
        m * misaligned16, m * small_map, act_mb * (f[:, F["activation_bytes"]] > CACHE_BYTES),
    ])  # fmt: skip


PENALTY_CAP = 8.0
"""Largest per-MAC penalty (small channel counts, misaligned channels, small maps) of the
additive model, as a multiple of its kernel kind's per-MAC rate in a fit without penalties:
such a kernel runs a few times slower per MAC (a 2-channel conv padded to a 16-channel
block: 8x), not hundreds."""
_PENALTIES = [_BASIS.index(b) for b in _BASIS if b.startswith("mmacs_")]


def _penalty_columns(n_keys: int) -> NDArray[np.bool_]:
    """Which columns of the additive design are per-MAC penalties (the constant is not)."""
    nb = len(_BASIS)
    cols = np.zeros(n_keys * nb + 1, dtype=bool)
    for i in range(n_keys):
        cols[i * nb + np.array(_PENALTIES)] = True
    return cols


def _penalty_bounds(rates: FloatArray, n_keys: int) -> FloatArray:
    """Upper bounds of the additive coefficients: penalties <= PENALTY_CAP x the MAC rate."""
    nb = len(_BASIS)
    penalty = np.flatnonzero(_penalty_columns(n_keys))
    rate_of = penalty // nb * nb + _BASIS.index("mmacs")  # the same kind's rate column
    ub = np.full(rates.shape, np.inf)
    ub[penalty] = np.maximum(PENALTY_CAP * rates[rate_of], 1e-12)
    return ub


MIN_KEY_GRAPHS = 2
"""Training graphs a kernel kind must be in for the additive model to predict it by its own
weights (fewer: by its closest well-seen kind's, :func:`_fallback_key`). It still has its
own weights in the fit, so that its graph's residual does not bend another kind's. A kind
in one graph has its weights fixed by that graph's residual alone: among the 300 training
graphs of ``experiments/predictor_accuracy.py``, ``eltwise.fp32`` (an Add and a Relu of
64-77 KB) and ``gconv.fp32`` are in one graph each, and their own weights cost a held-out
224 px network's four 450 KB residual Adds at 1.4 ms each (2.8x the network's latency on
``local-cpu-2t``; the effect of pooling: CHANGELOG.md). Any threshold from 2 to 5 pools the
same two kinds there; 2 pools least in a small profile, where many kinds are in few graphs
and the closest kind (int8 for fp32, say) is a rough stand-in."""


def _fallback_key(key: str, known: Sequence[str]) -> str:
    """The closest known kernel key for an unseen one: same kind, then related kinds."""
    kind, dtype = key.split(".")
    other = "fp32" if dtype == "int8" else "int8"
    related = {
        "conv": ["conv1x1", "dwconv", "gemm"],
        "conv1x1": ["conv", "gemm", "dwconv"],
        "dwconv": ["gconv", "conv", "conv1x1"],
        "gconv": ["dwconv", "conv", "conv1x1"],
        "qpool": ["pool"],
        "gemm": ["conv1x1", "conv"],
    }.get(kind, ["eltwise", "memory", "pool", "reduce", "quant"])
    for cand in [f"{kind}.{other}"] + [f"{r}.{d}" for r in related for d in (dtype, other)]:
        if cand in known:
            return cand
    return sorted(known)[0]


@_register
class KernelAdditivePredictor(BaseLatencyPredictor):
    """Sum of per-kernel costs, one non-negative linear cost model per kernel kind and dtype.

    A kernel of key ``kind.dtype`` costs ``w_key · phi(kernel)`` with ``phi`` = (1, MACs,
    activation bytes, weight bytes read, MACs if fewer than 16 channels, MACs if channels are not
    multiples of 8, the same for 16, MACs if the output map has <= 64 pixels), plus one
    constant per graph.
    All weights are fit jointly, non-negative, so that the sum matches the measured totals
    in relative terms (rows weighted by ``1/y``), with a small ridge penalty. A kind in
    fewer than :data:`MIN_KEY_GRAPHS` training graphs (``pooled_``) is predicted by the
    weights of its closest well-seen kind: its own are fixed by one graph's residual.

    Args:
        alpha: Ridge strength on the (column-normalised) weights; 0 disables it.
        relative: Fit relative rather than absolute error (recommended: latencies span
            several orders of magnitude).
    """

    name = "additive"

    def __init__(self, *, alpha: float = 1e-4, relative: bool = True) -> None:
        self.alpha = alpha
        self.relative = relative

    def _check_params(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}. Try 1e-4.")

    def _design(
        self, features: Sequence[GraphFeatures], *, warn: bool, table: KernelTable | None = None
    ) -> FloatArray:
        t = kernel_table(features) if table is None else table
        keys: list[str] = self.keys_
        index = {k: i for i, k in enumerate(keys)}
        ops = set(self.ops_)
        nb = len(_BASIS)
        block_of_key = np.empty(len(t.key_names), dtype=np.int64)
        for c, key in enumerate(t.key_names):
            block = index.get(key)
            if warn and (block is None or key.startswith("other.")):
                for r in np.flatnonzero(t.key_of == c):  # an unknown kind, or an unseen op
                    if block is None or t.first[r].op not in ops:
                        self._warn_unknown(t.first[r], key if block is not None else None)
            if block is None or (warn and key in self.pooled_):  # predicting: pooled too
                block = index[self._cost_key(key)]
            block_of_key[c] = block
        blocks = block_of_key[t.key_of]
        width = len(keys) * nb + 1
        cells = t.graph_of[:, None] * width + (blocks[t.row_of][:, None] * nb + np.arange(nb))
        counts = np.bincount(
            cells.ravel(),
            weights=kernel_basis(t.fields)[t.row_of].reshape(-1),
            minlength=len(features) * width,
        )
        a = np.asarray(counts, dtype=np.float64).reshape(len(features), width)
        a[:, -1] = 1.0
        return a

    def _cost_key(self, key: str) -> str:
        """The kind whose weights cost a kernel of ``key`` in a prediction.

        Its own, if it was in at least :data:`MIN_KEY_GRAPHS` training graphs; else the
        closest such kind (:func:`_fallback_key`).
        """
        if key in self.keys_ and key not in self.pooled_:
            return key
        return _fallback_key(key, [k for k in self.keys_ if k not in self.pooled_])

    def _warn_unknown(self, k: KernelFeatures, key: str | None) -> None:
        warned: set[str] = self.__dict__.setdefault("_warned_ops", set())
        if k.op in warned:
            return
        warned.add(k.op)
        target = key or _fallback_key(k.key, self.keys_)
        warnings.warn(
            f"op {k.op!r} (ONNX {k.source_op!r}, {k.key}) was not in this predictor's training "
            f"graphs; its cost is extrapolated from the {target!r} kernels by MACs and bytes. "
            f"Profile graphs that contain it (hwnas device profile) to predict it properly, "
            f"or silence with warnings.filterwarnings('ignore', message='op ').",
            UserWarning,
            stacklevel=4,
        )

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        from scipy.optimize import nnls

        self._check_params()
        self.__dict__.pop("_warned_ops", None)
        graphs_with = Counter(key for f in features for key in {k.key for k in f.kernels})
        self.keys_ = sorted(graphs_with) or ["memory.fp32"]
        # a kind in too few graphs keeps its own weights in the fit (its graphs' residual
        # would bend another kind's), but predicts as its closest well-seen kind
        self.pooled_ = sorted(k for k in graphs_with if graphs_with[k] < MIN_KEY_GRAPHS)
        if len(self.pooled_) == len(self.keys_):
            self.pooled_ = []
        self.ops_ = sorted({k.op for f in features for k in f.kernels})
        a = self._design(features, warn=False)
        w = 1.0 / y if self.relative else np.ones_like(y)
        aw, yw = a * w[:, None], y * w
        scale = np.sqrt((aw**2).sum(axis=0))
        scale[scale == 0] = 1.0
        an = aw / scale
        if self.alpha > 0:
            an = np.vstack([an, math.sqrt(self.alpha) * np.eye(an.shape[1])])
            yw = np.concatenate([yw, np.zeros(an.shape[1])])
        coef, _ = nnls(an, yw, maxiter=50 * an.shape[1])
        coef = coef / scale
        # A penalty learned from a few small kernels can be hundreds of times the kind's own
        # rate, and a large kernel of that shape is then predicted 100x too slow. Bound each
        # penalty by PENALTY_CAP times the kind's per-MAC rate in a fit without penalties.
        penalty = _penalty_columns(len(self.keys_))
        plain = ~penalty
        base, _ = nnls(an[:, plain], yw, maxiter=50 * int(plain.sum()))
        rates = np.zeros_like(coef)
        rates[plain] = base / scale[plain]
        self.penalty_bounds_ = _penalty_bounds(rates, len(self.keys_))
        if np.any(coef > self.penalty_bounds_):
            from scipy.optimize import lsq_linear

            fit = lsq_linear(
                an, yw, bounds=(np.zeros_like(coef), self.penalty_bounds_ * scale), method="bvls"
            )
            coef = fit.x / scale
        self.coef_ = coef

    def _predict_features(
        self, features: list[GraphFeatures], table: KernelTable | None = None
    ) -> FloatArray:
        a = self._design(features, warn=True, table=table)
        return np.asarray(a @ self.coef_, dtype=np.float64)

    def kernel_costs(self, features: GraphFeatures) -> list[tuple[KernelFeatures, float]]:
        """Each kernel of one graph with its predicted cost (target unit): where time goes."""
        check_is_fitted(self, "n_train_")
        nb = len(_BASIS)
        index = {k: i for i, k in enumerate(self.keys_)}
        basis = kernel_basis(kernels_fields(features.kernels))
        out = []
        for k, phi in zip(features.kernels, basis, strict=True):
            key = self._cost_key(k.key)
            w = self.coef_[index[key] * nb : index[key] * nb + nb]
            out.append((k, float(np.dot(w, phi))))
        return out

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {
            "basis": list(_BASIS),
            "keys": list(self.keys_),
            "pooled": list(self.pooled_),
            "ops": list(self.ops_),
            "coef": self.coef_.tolist(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        if list(state["basis"]) != list(_BASIS):
            raise ValueError(f"kernel basis {state['basis']} differs from this hwnas's {_BASIS}.")
        self.keys_ = list(state["keys"])
        self.pooled_ = list(state.get("pooled", []))  # files before it pooled none
        self.ops_ = list(state["ops"])
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
