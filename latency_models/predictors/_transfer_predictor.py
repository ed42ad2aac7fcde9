"""``transfer``: a device with few labels, as a robust function of other devices' predictors.

A new device with 10-30 measurements starts from the predictors already fitted for other
devices (:class:`~._transfer.TransferRegressor`: their predictions' geometric mean,
rescaled, plus corrections that grow only as the labels support them). The reference
predictors are copied into this one's state, so it predicts alone, whatever happens to the
other devices later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latency_models.features._oplevel import OPLEVEL_FEATURES, OPLEVEL_VERSION
from latency_models.predictors._base import (
    PREDICTORS,
    BaseLatencyPredictor,
    FloatArray,
    _register,
    feature_version_of,
)
from latency_models.predictors._oplevel_predictor import oplevel_rows
from latency_models.predictors._robust import check_labels, one_blas_thread
from latency_models.predictors._transfer import TransferRegressor, stack_references

if TYPE_CHECKING:
    from typing_extensions import Self

STATE_VERSION = 1
FEW_FEATURES = ("mmacs_total", "mbytes_total", "count_total")
"""The op-level features beside the references' predictions."""
_FEW = [OPLEVEL_FEATURES.index(n) for n in FEW_FEATURES]
_MIN_MS = 1e-6


def transfer_inputs(references: Sequence[BaseLatencyPredictor], graphs: Any) -> FloatArray:
    """The :class:`TransferRegressor` input of ``graphs``: references' predictions, features."""
    rows = oplevel_rows(graphs)
    R = np.column_stack([np.maximum(r.predict(graphs), _MIN_MS) for r in references])
    return stack_references(R, rows[:, _FEW])


@_register
class TransferPredictor(BaseLatencyPredictor):
    """Few-shot predictor: other devices' predictors, rescaled and corrected by a few labels.

    ``fit(graphs, y, references=[...])`` needs the graphs themselves (each reference
    featurizes them its own way) and at least one fitted reference predictor.

    Args:
        alpha: Ridge penalty pulling the model toward the references' rescaled mean.
    """

    name = "transfer"
    feature_set: ClassVar[str] = "oplevel"
    needs_references: ClassVar[bool] = True

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(
        self,
        X: Any,
        y: Any,
        kernel_times: Any = None,
        *,
        references: Sequence[BaseLatencyPredictor] | None = None,
        names: Sequence[str] | None = None,
    ) -> Self:
        """Fit to graphs ``X`` and labels ``y`` (> 0) given fitted ``references``.

        Raises:
            ValueError: no references, a bad label (naming the graph) or lengths differ.
        """
        if not references:
            raise ValueError(
                "a transfer predictor needs at least one fitted predictor of another device "
                "(references=[device_predictor(name), ...])."
            )
        t = check_labels(y, names)
        Z = transfer_inputs(references, X)
        if len(Z) != t.size:
            raise ValueError(f"got {len(Z)} graphs but {t.size} target values.")
        with one_blas_thread():
            model = TransferRegressor(n_reference=len(references), alpha=self.alpha).fit(Z, t)
        self.references_ = list(references)
        self.model_ = _freeze(model)
        self.n_train_ = int(t.size)
        self.feature_version_ = OPLEVEL_VERSION
        self.nchwc_block_ = None
        self.runtime_version_ = None
        return self

    def predict(self, X: Any) -> FloatArray:
        """Predicted values of graphs, shape (n,)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_train_")
        Z = transfer_inputs(self.references_, X)
        pred = _predict(self.model_, Z, len(self.references_))
        return np.maximum(np.nan_to_num(pred, nan=0.0, posinf=0.0), 0.0)

    def predict_features(self, features: Any) -> FloatArray:
        """Same as :meth:`predict`: the references need the graphs themselves."""
        return self.predict(features)

    def get_state(self) -> dict[str, Any]:
        """Fitted state, the reference predictors' own states included."""
        refs = [
            {
                "class": r.name,
                "params": r.get_params(deep=False),
                "device": getattr(r, "device_", None),
                "feature_version": r.feature_version_,
                "nchwc_block": getattr(r, "nchwc_block_", None),
                "state": r.get_state(),
            }
            for r in self.references_
        ]
        return {"state_version": STATE_VERSION, "references": refs, "model": self.model_}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted state; refuses a newer state version or unreadable references."""
        version = state.get("state_version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise ValueError(
                f"transfer state_version {version!r}; this hwnas reads {STATE_VERSION}"
            )
        refs = []
        for ref in state["references"]:
            cls = PREDICTORS.get(str(ref["class"]))
            if ref["feature_version"] != feature_version_of(cls) or cls is TransferPredictor:
                raise ValueError(f"reference {ref.get('device')!r} was fit on other features")
            r = cls(**ref["params"])
            r.set_state(ref["state"])
            r.n_train_, r.feature_version_ = 1, ref["feature_version"]
            r.nchwc_block_, r.runtime_version_ = ref["nchwc_block"], None
            r.device_ = ref.get("device")
            refs.append(r)
        model = dict(state["model"])
        k = len(refs)
        for key, n in (("ref_mean", k), ("ref_scale", k), ("feat_mean", len(_FEW)),
                       ("feat_scale", len(_FEW)), ("coef", k + len(_FEW))):  # fmt: skip
            arr = np.asarray(model[key], dtype=np.float64)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"transfer state {key!r} must be {n} finite numbers")
        if not np.isfinite(float(model["intercept"])):
            raise ValueError("transfer state 'intercept' must be a finite number")
        self.references_, self.model_ = refs, model


def _freeze(model: TransferRegressor) -> dict[str, Any]:
    return {
        "ref_mean": model.ref_mean_.tolist(),
        "ref_scale": model.ref_scale_.tolist(),
        "feat_mean": model.feat_mean_.tolist(),
        "feat_scale": model.feat_scale_.tolist(),
        "coef": model.huber_.coef_.tolist(),
        "intercept": float(model.huber_.intercept_),
    }


def _predict(state: Mapping[str, Any], Z: FloatArray, k: int) -> FloatArray:
    log_r = np.log(Z[:, :k])
    feats = np.log1p(np.maximum(Z[:, k:], 0.0))
    design = np.hstack([
        (log_r - np.asarray(state["ref_mean"])) / np.asarray(state["ref_scale"]),
        (feats - np.asarray(state["feat_mean"])) / np.asarray(state["feat_scale"]),
    ])  # fmt: skip
    log_y = log_r.mean(axis=1) + design @ np.asarray(state["coef"]) + state["intercept"]
    return np.asarray(np.exp(log_y))
