"""Learned latency / energy predictors over graph features (scikit-learn contract).

Four predictors here, registered in :data:`PREDICTORS` under their ``name``:

- ``"flops"`` (:class:`FlopsPredictor`): latency proportional to MACs plus a constant. The
  baseline every report compares against.
- ``"additive"`` (:class:`KernelAdditivePredictor`): each fused kernel costs a non-negative
  combination of its own features (a per-kernel overhead, MACs, bytes moved, penalties for
  small or misaligned channel counts and small feature maps), one coefficient set per kernel
  kind and dtype (``conv.int8``, ``dwconv.fp32``...); a graph costs the sum. Fit jointly on
  whole-graph measurements by non-negative least squares on relative error.
- ``"additive-gbt"`` (:class:`HybridPredictor`): the additive model times a correction
  ``exp(r)``, where ``r`` comes from gradient boosted trees on graph totals fit to the
  additive model's out-of-fold log error.
- ``"graph-gbt"`` (:class:`GraphBoostPredictor`): boosted trees on graph totals alone.

Two more, learned from per-kernel times (``measure(..., kernel_times_s=...)``), live in
:mod:`latency_models._kernel_predictor`: ``"kernel"`` and ``"combined"``.

What :func:`fit_predictor` fits: ``"combined"`` (:data:`KERNEL_PREDICTOR`) when kernel times
are given for a latency target, else ``"additive"`` (:data:`DEFAULT_PREDICTOR`). In
``experiments/predictor_accuracy.py`` (fit on 300 sweep graphs, scored on held-out
ResNet-18/MobileNetV2/VGG-11 at 32-224 px, never in training) ``combined`` is the most
accurate on both CPU devices and ``graph-gbt`` the least (experiments/README.md, section 1).
Trees alone do not extrapolate; the tree correction of ``additive-gbt`` learns
sweep-specific residuals.

Every predictor predicts with numpy only: boosted trees are exported to arrays right after
fitting and traversed here, so a saved predictor gives bit-identical predictions in a process
without scikit-learn's estimators, torch or the training data.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from latency_models._errors import IncompatibleArtifactError
from latency_models._features import (
    COMPUTE_KINDS,
    FEATURE_VERSION,
    GraphFeatures,
    KernelFeatures,
    graph_features,
)
from latency_models._kernel_table import (
    F,
    KernelTable,
    kernel_table,
    kernels_fields,
)
from latency_models._registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    from typing_extensions import Self

    from latency_models._graph import GraphLike

FloatArray = NDArray[np.float64]
_logger = logging.getLogger(__name__)

TARGETS = ("latency_ms", "energy_mj")
"""What a predictor can be fit to: latency in milliseconds, energy per inference in mJ."""


class BaseLatencyPredictor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts a per-inference cost (ms or mJ) of ONNX graphs on one device.

    Contract (scikit-learn's estimator contract, checked by the shared test suite):

    - ``__init__`` stores its keyword arguments unchanged; ``get_params``/``set_params``/
      ``clone`` come from :class:`~sklearn.base.BaseEstimator`.
    - ``fit(graphs, y)`` validates, discards any previous fit, and returns ``self``. Graphs
      are ModelProtos, paths, bytes or precomputed :class:`GraphFeatures`.
    - ``predict(graphs)`` returns an array of shape (n,), finite and >= 0, in the unit of
      the target; before ``fit`` it raises sklearn's ``NotFittedError``.
    - ``score`` is R² (from :class:`~sklearn.base.RegressorMixin`).
    - Fitted state lives in attributes ending in ``_`` and is exported as JSON-able data by
      :meth:`get_state`; :meth:`set_state` restores it (used by :meth:`save`/:meth:`load`).

    Subclasses implement :meth:`_fit_features`, :meth:`_predict_features`,
    :meth:`get_state` and :meth:`set_state`. Instances are not thread-safe while fitting.
    """

    name: ClassVar[str] = ""
    uses_kernel_times: ClassVar[bool] = False
    """Whether :meth:`fit` learns from per-kernel times (others ignore them)."""

    # --- public API -------------------------------------------------------------------
    def fit(
        self,
        X: Sequence[GraphLike | GraphFeatures],
        y: Any,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
    ) -> Self:
        """Fit to measured values.

        Args:
            X: Graphs (or their features), length n.
            y: Measured values, shape (n,), in ms (latency) or mJ (energy), all > 0.
            kernel_times: Optional, per graph: :attr:`Measurement.kernel_times` (each
                kernel's time from onnxruntime's profiler) or None. Used by predictors
                with ``uses_kernel_times``; the others ignore it.

        Returns:
            self, fitted.

        Raises:
            ValueError: lengths differ, fewer than 2 graphs, or a value is not finite > 0.
        """
        feats = featurize(X)
        target = np.asarray(y, dtype=np.float64).ravel()
        if len(feats) != target.size:
            raise ValueError(f"got {len(feats)} graphs but {target.size} target values.")
        if target.size < 2:
            raise ValueError(f"need at least 2 measured graphs to fit, got {target.size}.")
        if not np.all(np.isfinite(target)) or np.any(target <= 0):
            bad = target[~(np.isfinite(target) & (target > 0))][:3]
            raise ValueError(
                f"target values must be finite and > 0, got {bad.tolist()}. Drop failed or "
                f"zero measurements before fitting."
            )
        if kernel_times is not None and len(kernel_times) != len(feats):
            raise ValueError(
                f"got {len(feats)} graphs but {len(kernel_times)} kernel_times entries; pass "
                f"one per graph (None where a graph has none)."
            )
        if self.uses_kernel_times:
            self._fit_kernel_times(feats, target, kernel_times)
        else:
            self._fit_features(feats, target)
        self.n_train_ = int(target.size)
        self.feature_version_ = FEATURE_VERSION
        self.nchwc_block_ = _nchwc_block_of(feats)
        self.runtime_version_ = _runtime_version()
        return self

    def predict(self, X: Sequence[GraphLike | GraphFeatures]) -> FloatArray:
        """Predicted values, shape (n,), in the unit of the fitted target (ms or mJ)."""
        check_is_fitted(self, "n_train_")
        return self.predict_features(featurize(X, nchwc_block=getattr(self, "nchwc_block_", None)))

    def predict_features(self, features: Sequence[GraphFeatures]) -> FloatArray:
        """Like :meth:`predict` on precomputed features (the fast path of a search)."""
        check_is_fitted(self, "n_train_")
        if not features:
            return np.zeros(0)
        versions = {f.feature_version for f in features}
        if versions != {self.feature_version_}:
            raise IncompatibleArtifactError(
                f"this predictor was fit on graph features version {self.feature_version_}, "
                f"got features version {sorted(versions)}: the running hwnas computes features "
                f"differently from the one that fit it. Refit it (`hwnas device profile "
                f"DEVICE`) or run the hwnas version that wrote it."
            )
        block = getattr(self, "nchwc_block_", None)
        blocks = {int(f.totals["nchwc_block"]) for f in features if "nchwc_block" in f.totals}
        if block is not None and blocks - {block}:
            raise IncompatibleArtifactError(
                f"this predictor was fit on graphs laid out for onnxruntime's NCHWc block "
                f"{block}, got features computed for block {sorted(blocks - {block})}: "
                f"compute them with graph_features(graph, nchwc_block={block}), or predict "
                f"from the graphs themselves."
            )
        pred = self._predict_features(list(features))
        return np.maximum(np.nan_to_num(pred, nan=0.0, posinf=0.0), 0.0)

    def save(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        target: str = "latency_ms",
        metrics: Mapping[str, float] | None = None,
    ) -> Path:
        """Write this fitted predictor as JSON (``meta.json`` + ``state.json``) to a folder.

        Args:
            path: Folder to create or overwrite.
            device: Device name recorded in the metadata (checked by :func:`load_predictor`).
            target: What ``y`` was (``"latency_ms"`` or ``"energy_mj"``).
            metrics: Held-out metrics to record (:func:`prediction_metrics` output).

        Returns:
            The folder.
        """
        from latency_models._persist import save_predictor

        return save_predictor(self, path, device=device, target=target, metrics=metrics)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> BaseLatencyPredictor:
        """Load a predictor saved by :meth:`save` (see :func:`load_predictor`)."""
        from latency_models._persist import load_predictor

        return load_predictor(path, device=device)

    def _fit_then(self, features: list[GraphFeatures], y: FloatArray) -> Self:
        """Fit on features without the public checks (for composite predictors)."""
        self._fit_features(features, y)
        return self

    # --- subclass hooks ---------------------------------------------------------------
    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        raise NotImplementedError

    def _fit_kernel_times(
        self,
        features: list[GraphFeatures],
        y: FloatArray,
        kernel_times: Sequence[Sequence[Mapping[str, Any]] | None] | None,
    ) -> None:
        """:meth:`_fit_features` of a predictor with ``uses_kernel_times``."""
        raise NotImplementedError

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data (lists, numbers, strings)."""
        raise NotImplementedError

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state from :meth:`get_state` output."""
        raise NotImplementedError

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags


PREDICTORS: Registry[type[BaseLatencyPredictor]] = Registry("predictor")
"""Predictor classes by name."""


def _register(cls: type[BaseLatencyPredictor]) -> type[BaseLatencyPredictor]:
    PREDICTORS.add(cls.name, cls)
    return cls


def featurize(
    X: Sequence[GraphLike | GraphFeatures], *, nchwc_block: int | None = None
) -> list[GraphFeatures]:
    """Features of each graph (features pass through unchanged).

    ``nchwc_block`` is the NCHWc block the graphs are laid out for (default this machine's).
    """
    if isinstance(X, (str, bytes)) or not isinstance(X, Sequence):
        raise TypeError(
            f"X must be a sequence of graphs (ModelProto, path, bytes) or GraphFeatures, "
            f"got {type(X).__name__}. Wrap a single graph in a list."
        )
    return [graph_features(g, nchwc_block=nchwc_block) for g in X]


def _nchwc_block_of(features: Sequence[GraphFeatures]) -> int | None:
    """The one NCHWc block ``features`` were computed for (None if they do not say).

    Raises:
        ValueError: they were computed for different blocks.
    """
    blocks = {int(f.totals["nchwc_block"]) for f in features if "nchwc_block" in f.totals}
    if len(blocks) > 1:
        raise ValueError(
            f"the graphs' features were computed for different NCHWc blocks {sorted(blocks)}; "
            f"a device has one: compute them all with graph_features(graph, nchwc_block=N)."
        )
    return blocks.pop() if blocks else None


def _runtime_version() -> str | None:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return None


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


# --- boosted trees as arrays ------------------------------------------------------------
_TOTAL_KEYS = (
    "n_kernels", "macs", "macs_int8", "weight_bytes", "activation_bytes",
    "max_activation_bytes", "mean_output_pixels", "int8_mac_share", "misaligned8_mac_share",
    "misaligned16_mac_share", "depthwise_mac_share", "n_conv", "n_dwconv", "n_conv1x1",
    "n_gemm", "n_eltwise", "n_memory", "n_quant", "n_pool",
)  # fmt: skip
_LOG_KEYS = {
    "macs", "macs_int8", "weight_bytes", "activation_bytes", "max_activation_bytes",
    "mean_output_pixels",
}  # fmt: skip


def graph_vector(f: GraphFeatures) -> list[float]:
    """Graph totals as the residual model's input row (sizes on a log scale)."""
    return [
        math.log1p(f.totals.get(k, 0.0)) if k in _LOG_KEYS else f.totals.get(k, 0.0)
        for k in _TOTAL_KEYS
    ]


def export_trees(gbr: Any) -> dict[str, Any]:
    """A fitted ``GradientBoostingRegressor`` (``init="zero"``) as JSON-able arrays."""
    trees = []
    for est in gbr.estimators_[:, 0]:
        t = est.tree_
        trees.append(
            {
                "left": t.children_left.tolist(),
                "right": t.children_right.tolist(),
                "feature": t.feature.tolist(),
                "threshold": t.threshold.tolist(),
                "value": t.value[:, 0, 0].tolist(),
            }
        )
    return {"learning_rate": float(gbr.learning_rate), "trees": trees}


def predict_trees(forest: Mapping[str, Any], x: FloatArray) -> FloatArray:
    """Sum of tree outputs times the learning rate, by numpy traversal; shape (n,).

    Matches sklearn's ``predict`` for ``init="zero"`` (a sample goes left when
    ``x[feature] <= threshold``, as in sklearn's ``Tree.apply``). All trees are traversed
    at once, a level at a time, as complete binary trees (:func:`_tree_arrays`): a node's
    children are ``2i + 1`` and ``2i + 2``, so a step is arithmetic, not a child lookup.
    Rows go in chunks that bound the memory.
    """
    feat, thr, val, depth, size = (
        forest["_arrays"] if "_arrays" in forest else _tree_arrays(forest)
    )
    x32 = np.ascontiguousarray(x, dtype=np.float32)  # sklearn compares float32 features
    n_rows, n_cols = x32.shape
    if feat.size and int(feat.max()) >= n_cols:  # a flat index would read another row
        raise ValueError(
            f"a tree splits on feature {int(feat.max())} of rows with {n_cols} features; the "
            "predictor file is damaged or from another hwnas. Refit it."
        )
    n_trees = len(forest["trees"])
    base = (np.arange(n_trees, dtype=np.int32) * size)[None, :]
    flat_x = x32.ravel()
    total = np.zeros(n_rows)
    chunk = max(1, _TRAVERSAL_ELEMENTS // max(n_trees, 1))
    for lo in range(0, n_rows, chunk):
        hi = min(n_rows, lo + chunk)
        row_base = (np.arange(lo, hi, dtype=np.int32) * n_cols)[:, None]
        node = np.zeros((hi - lo, n_trees), dtype=np.int32)
        for _ in range(depth):
            at = base + node
            right = flat_x.take(row_base + feat.take(at)) > thr.take(at)
            node = 2 * node + 1 + right
        total[lo:hi] = val.take(base + node).sum(axis=1)
    return np.asarray(total * float(forest["learning_rate"]), dtype=np.float64)


_TRAVERSAL_ELEMENTS = 1 << 16
"""Rows x trees traversed at once by :func:`predict_trees` (bounds its memory)."""

MAX_TREE_DEPTH = 10
"""Deepest tree the predictors fit or load: traversal stores each as a complete binary tree."""


def forest_state(forest: Mapping[str, Any]) -> dict[str, Any]:
    """A fitted forest as JSON-able data (without its traversal arrays)."""
    return {k: v for k, v in forest.items() if k != "_arrays"}


def forest_from_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`forest_state`: the forest with its traversal arrays rebuilt.

    Raises:
        ValueError: the state is not a well-formed forest (a damaged or tampered file).
    """
    forest = dict(state)
    _check_forest(forest)
    forest["_arrays"] = _tree_arrays(forest)
    return forest


def _check_forest(forest: Mapping[str, Any]) -> None:
    """Check a loaded forest: shapes, child indices, features and finite numbers.

    sklearn numbers a node's children after the node, so requiring that makes every path end
    (a tree cannot point back to itself) and bounds it by the tree's size.
    """
    rate, trees = forest.get("learning_rate"), forest.get("trees")
    if (
        not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or not isinstance(trees, list)
    ):
        raise ValueError("a forest needs a finite learning_rate and a list of trees.")
    for n, t in enumerate(trees):
        lt, rt, ft = (np.asarray(t[k]) for k in ("left", "right", "feature"))
        th, v = (np.asarray(t[k], dtype=np.float64) for k in ("threshold", "value"))
        size = lt.size
        if size == 0 or any(a.shape != (size,) for a in (lt, rt, ft, th, v)):
            raise ValueError(f"tree {n}: its node arrays are empty or of different lengths.")
        if any(a.dtype.kind not in "iu" for a in (lt, rt, ft)):
            raise ValueError(f"tree {n}: child and feature indices must be whole numbers.")
        internal, index = lt != -1, np.arange(size)
        if np.any((rt != -1) != internal) or np.any(
            internal & ((lt <= index) | (rt <= index) | (lt >= size) | (rt >= size) | (ft < 0))
        ):
            raise ValueError(
                f"tree {n}: a child index is out of range or not after its parent, or a "
                "feature index is negative."
            )
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(th[internal]))):
            raise ValueError(f"tree {n}: a threshold or value is not a finite number.")


def _tree_arrays(forest: Mapping[str, Any]) -> tuple[Any, ...]:
    """All trees as complete binary trees of one depth: (feature, threshold, value, depth, size).

    Tree ``t``'s node ``i`` is entry ``t * size + i`` of the flat arrays, its children
    ``2i + 1`` (``x[feature] <= threshold``) and ``2i + 2``; ``depth`` is the longest
    root-to-leaf path of any tree and ``size = 2**(depth + 1) - 1``. A leaf above the last
    level becomes a node with an infinite threshold (every row goes left) whose subtree
    holds the leaf's value.
    """
    trees = forest["trees"]
    depth = max((_depth(t["left"], t["right"]) for t in trees), default=0)
    if depth > MAX_TREE_DEPTH:
        raise ValueError(
            f"a tree of depth {depth} is deeper than MAX_TREE_DEPTH={MAX_TREE_DEPTH}; "
            f"refit with max_depth <= {MAX_TREE_DEPTH}."
        )
    size = 2 ** (depth + 1) - 1
    feat = np.zeros((max(len(trees), 1), size), dtype=np.int32)
    thr = np.full((max(len(trees), 1), size), np.inf)
    val = np.zeros((max(len(trees), 1), size))
    for i, t in enumerate(trees):
        lt, rt = np.asarray(t["left"]), np.asarray(t["right"])
        ft, th, v = np.asarray(t["feature"]), np.asarray(t["threshold"]), np.asarray(t["value"])
        src = np.array([0])  # sklearn node at each slot of the current level
        for level in range(depth + 1):
            slots = np.arange(2**level - 1, 2 ** (level + 1) - 1)
            leaf = lt[src] == -1
            feat[i, slots] = np.where(leaf, 0, ft[src])
            thr[i, slots] = np.where(leaf, np.inf, th[src])
            val[i, slots] = v[src]
            src = np.stack([np.where(leaf, src, lt[src]), np.where(leaf, src, rt[src])], 1).ravel()
    return feat.ravel(), thr.ravel(), val.ravel(), depth, size


def _depth(left: Sequence[int], right: Sequence[int]) -> int:
    """Longest root-to-leaf path of one sklearn tree (its ``children_left/right`` arrays)."""
    lt, rt = np.asarray(left), np.asarray(right)
    d, level = 0, np.array([0])
    while d <= MAX_TREE_DEPTH:  # deeper is refused: stop before a level outgrows memory
        level = level[lt[level] != -1]
        if not level.size:
            return d
        level = np.concatenate([lt[level], rt[level]])
        d += 1
    return d


def _fit_trees(
    x: FloatArray, r: FloatArray, *, n_estimators: int, max_depth: int, learning_rate: float,
    seed: int | None,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    from sklearn.ensemble import GradientBoostingRegressor

    if not (isinstance(max_depth, int) and 1 <= max_depth <= MAX_TREE_DEPTH):
        raise ValueError(
            f"max_depth must be an integer from 1 to {MAX_TREE_DEPTH}, got {max_depth!r}. Try 4."
        )
    gbr = GradientBoostingRegressor(
        init="zero",
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=0.8,
        min_samples_leaf=max(3, min(10, x.shape[0] // 20)),
        loss="huber",
        random_state=seed,
    ).fit(x, r)
    return forest_from_state(export_trees(gbr)), gbr


@_register
class GraphBoostPredictor(BaseLatencyPredictor):
    """Gradient boosted trees on graph totals, predicting log(y) minus a log-MAC trend.

    Good inside the training distribution, weak outside it (trees do not extrapolate):
    kept as a comparison and for graphs whose kernels the additive model cannot see.

    Args:
        n_estimators: Trees.
        max_depth: Depth of each tree.
        learning_rate: Shrinkage.
        seed: Random seed of the row subsampling.
    """

    name = "graph-gbt"

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        seed: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        base = FlopsPredictor()._fit_then(features, y)
        self.base_coef_ = base.coef_
        ly = np.log(y) - np.log(np.maximum(base._predict_features(features), 1e-9))
        x = np.array([graph_vector(f) for f in features])
        self.forest_, _ = _fit_trees(
            x, ly, n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        base = FlopsPredictor()
        base.coef_ = self.base_coef_
        b = np.maximum(base._predict_features(features), 1e-9)
        x = np.array([graph_vector(f) for f in features])
        return np.asarray(b * np.exp(predict_trees(self.forest_, x)), dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {"base_coef": self.base_coef_.tolist(), "forest": forest_state(self.forest_)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.base_coef_ = np.asarray(state["base_coef"], dtype=np.float64)
        self.forest_ = forest_from_state(state["forest"])


@_register
class HybridPredictor(BaseLatencyPredictor):
    """Kernel-additive model corrected by boosted trees on graph totals.

    ``y = additive(g) * exp(trees(totals(g), log additive(g)))``: the additive model carries
    the scale (it extrapolates to bigger or unseen architectures because it adds up kernels);
    the trees learn what it misses (cache effects, layout changes, threading) as a bounded
    log-ratio. The trees are fit on *out-of-fold* additive predictions, so they learn the
    additive model's error on unseen graphs rather than its training residuals.

    Args:
        alpha: Ridge strength of the additive part.
        n_estimators: Trees of the correction.
        max_depth: Depth of each tree.
        learning_rate: Shrinkage of the correction.
        n_folds: Folds for the out-of-fold additive predictions (min 2).
        seed: Seed of the folds and the trees.
    """

    name = "additive-gbt"

    def __init__(
        self,
        *,
        alpha: float = 1e-4,
        n_estimators: int = 150,
        max_depth: int = 2,
        learning_rate: float = 0.05,
        n_folds: int = 5,
        seed: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_folds = n_folds
        self.seed = seed

    def _fit_features(self, features: list[GraphFeatures], y: FloatArray) -> None:
        if not (isinstance(self.n_folds, int) and self.n_folds >= 2):
            raise ValueError(f"n_folds must be an int >= 2, got {self.n_folds!r}. Try 5.")
        n = len(features)
        oof = np.empty(n)
        folds = np.random.default_rng(self.seed).permutation(n) % min(self.n_folds, n)
        for fold in np.unique(folds):
            tr, te = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            m = KernelAdditivePredictor(alpha=self.alpha)
            m._fit_features([features[i] for i in tr], y[tr])
            m.__dict__["_warned_ops"] = {k.op for i in te for k in features[i].kernels}
            oof[te] = m._predict_features([features[i] for i in te])
        self.additive_ = KernelAdditivePredictor(alpha=self.alpha)._fit_then(features, y)
        self.additive_.n_train_ = n
        oof = np.maximum(oof, 1e-9)
        x = self._rows(features, oof)
        self.forest_, _ = _fit_trees(
            x, np.log(y) - np.log(oof), n_estimators=self.n_estimators,
            max_depth=self.max_depth, learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip

    @staticmethod
    def _rows(features: Sequence[GraphFeatures], base: FloatArray) -> FloatArray:
        return np.array(
            [[*graph_vector(f), math.log(b)] for f, b in zip(features, base, strict=True)]
        )

    def _predict_features(self, features: list[GraphFeatures]) -> FloatArray:
        base = np.maximum(self.additive_._predict_features(features), 1e-9)
        # The correction is a bounded refinement (x0.25..x4), never the whole prediction.
        corr = np.clip(predict_trees(self.forest_, self._rows(features, base)), -1.4, 1.4)
        return np.asarray(base * np.exp(corr), dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""
        return {"additive": self.additive_.get_state(), "forest": forest_state(self.forest_)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state."""
        self.additive_ = KernelAdditivePredictor(alpha=self.alpha)
        self.additive_.set_state(state["additive"])
        self.additive_.n_train_ = 0
        self.forest_ = forest_from_state(state["forest"])


DEFAULT_PREDICTOR = "additive"
"""Registry name of the predictor :func:`fit_predictor` fits without per-kernel times."""
KERNEL_PREDICTOR = "combined"
"""Registry name of the predictor :func:`fit_predictor` fits with per-kernel times."""

# Registers "kernel" and "combined" (they build on the classes above).
from latency_models import _kernel_predictor  # noqa: E402, F401
