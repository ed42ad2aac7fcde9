"""A task: a trained model with its data and metric (what a search compresses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas._errors import TaskError
from nas.tasks._loaders import check_data, first_target, is_pair

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True, eq=False)
class Task:
    """A trained model with its data and metric.

    Data comes as ``(X, y)`` tensors, a ``torch.utils.data.Dataset`` of ``(input, target)``
    items, or a ``DataLoader`` of ``(inputs, targets)`` batches; a Dataset or DataLoader is
    only ever streamed. One item (or batch) of each is checked when the task is built.

    Attributes:
        name: Task name (kebab-case for bundled tasks).
        model: The trained model, in eval mode.
        train: Data for recovery fine-tuning. As tensors: X float32 (N, C, H, W), y (N,)
            (int64 for ``top1``).
        val: Held-out data the metric is computed on; same forms.
        example_input: One input of batch size 1, (1, C, H, W), for tracing and export.
        metric: ``"top1"`` (top-1 accuracy in percent) or a callable
            ``metric(model, loader) -> float`` that iterates ``(inputs, targets)`` batches.
        num_classes: Number of classes; 0 infers ``max(label) + 1`` from tensor data.
        description: One line for ``hwnas tasks``.
        calibration: Inputs that calibrate int8 layers (any data form); default ``train``.
        higher_is_better: Direction of a callable metric (``top1``: True). The search keeps
            a lower-is-better metric as its negation, ``neg_<name>``, in the ``accuracy``
            objective; ``accuracy_drop`` is then in the metric's own units.
        loss: Recovery loss ``loss(student_out, teacher_out, targets) -> scalar tensor``;
            None distils on logits plus cross-entropy on integer targets.
    """

    name: str
    model: nn.Module
    train: Any
    val: Any
    example_input: torch.Tensor
    metric: str | Callable[[Any, Any], float] = "top1"
    num_classes: int = 0
    description: str = ""
    calibration: Any = None
    higher_is_better: bool = True
    loss: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None

    @property
    def metric_name(self) -> str:
        """``"top1"``, or the callable metric's ``__name__`` (``"metric"`` for a lambda)."""
        if isinstance(self.metric, str):
            return self.metric
        name = getattr(self.metric, "__name__", "")
        return name if name.isidentifier() else "metric"

    @property
    def score_name(self) -> str:
        """Name of the higher-is-better score the search keeps (``neg_mse`` for ``mse``)."""
        return self.metric_name if self.higher_is_better else f"neg_{self.metric_name}"

    def __post_init__(self) -> None:
        import torch
        from torch import nn

        if not isinstance(self.model, nn.Module):
            raise TaskError(
                f"Task {self.name!r}: model must be a torch.nn.Module, got "
                f"{type(self.model).__name__}."
            )
        ex = self.example_input
        if not (isinstance(ex, torch.Tensor) and ex.ndim >= 1 and ex.shape[0] == 1):
            raise TaskError(
                f"Task {self.name!r}: example_input must be a tensor of batch size 1, got "
                f"shape {tuple(getattr(ex, 'shape', ()))}. Use X[:1]."
            )
        self._check_metric()
        for part in ("train", "val", "calibration"):
            value = getattr(self, part)
            if value is None and part == "calibration":
                continue
            if isinstance(value, tuple):
                self._check_pair(part, value)
            else:
                check_data(self.name, part, value, ex)
        if self.loss is not None and not callable(self.loss):
            raise TaskError(
                f"Task {self.name!r}: loss must be callable as loss(student_out, teacher_out, "
                f"targets), got {type(self.loss).__name__}."
            )
        if self.loss is None:
            self._check_default_loss()
        if self.num_classes == 0 and self.metric == "top1" and is_pair(self.train):
            labels = (self.train[1], *((self.val[1],) if is_pair(self.val) else ()))
            inferred = int(max(int(y.max()) for y in labels)) + 1
            object.__setattr__(self, "num_classes", inferred)
        elif self.num_classes < 0:
            raise TaskError(
                f"Task {self.name!r}: num_classes must be > 0 (or 0 to infer), got "
                f"{self.num_classes}."
            )
        self.model.eval()

    def _check_metric(self) -> None:
        if isinstance(self.metric, str):
            if self.metric != "top1":
                raise TaskError(
                    f"Task {self.name!r}: metric must be 'top1' or a callable "
                    f"metric(model, loader) -> float, got {self.metric!r}."
                )
            if not self.higher_is_better:
                raise TaskError(f"Task {self.name!r}: top1 is higher-is-better; drop "
                                "higher_is_better=False.")  # fmt: skip
        elif not callable(self.metric):
            raise TaskError(
                f"Task {self.name!r}: metric must be 'top1' or a callable metric(model, "
                f"loader) -> float, got {type(self.metric).__name__}."
            )
        if not isinstance(self.higher_is_better, bool):
            raise TaskError(f"Task {self.name!r}: higher_is_better must be True or False, got "
                            f"{self.higher_is_better!r}.")  # fmt: skip

    def _check_pair(self, part: str, value: tuple[Any, ...]) -> None:
        import torch

        if len(value) != 2:
            raise TaskError(
                f"Task {self.name!r}: {part} must be a tuple (X, y) of tensors, got a tuple of "
                f"length {len(value)}."
            )
        X, y = value
        if not (isinstance(X, torch.Tensor) and X.is_floating_point() and X.ndim >= 2):
            raise TaskError(
                f"Task {self.name!r}: {part} X must be a float tensor (N, C, H, W), got "
                f"{type(X).__name__} {getattr(X, 'dtype', '')}."
            )
        top1 = self.metric == "top1"
        labels = isinstance(y, torch.Tensor) and (
            not top1 or (y.dtype == torch.int64 and y.ndim == 1)
        )
        if not labels:
            kind = "an int64 tensor of shape (N,)" if top1 else "a tensor"
            raise TaskError(
                f"Task {self.name!r}: {part} y must be {kind}, got "
                f"{type(y).__name__} {getattr(y, 'dtype', '')} "
                f"{tuple(getattr(y, 'shape', ()))}. Convert with y.long()."
            )
        if len(X) != len(y) or len(X) == 0:
            raise TaskError(
                f"Task {self.name!r}: {part} X and y must have the same non-zero length, "
                f"got {len(X)} and {len(y)}."
            )
        if tuple(X.shape[1:]) != tuple(self.example_input.shape[1:]):
            raise TaskError(
                f"Task {self.name!r}: {part} X has shape {tuple(X.shape)}, which disagrees "
                f"with example_input {tuple(self.example_input.shape)}: every dimension but "
                "the batch must match."
            )

    def _check_default_loss(self) -> None:
        """The default recovery loss needs integer class targets: say so before any trial."""
        import torch

        target = first_target(self.train)
        if not (isinstance(target, torch.Tensor) and not target.is_floating_point()):
            raise TaskError(
                f"Task {self.name!r}: train targets are {type(target).__name__} "
                f"{getattr(target, 'dtype', '')}, but the default recovery loss (distillation "
                "plus cross-entropy) needs integer class labels. Pass loss=FUNCTION(student_out, "
                "teacher_out, targets), e.g. an MSE to the teacher's outputs."
            )


__all__ = ["Task"]
