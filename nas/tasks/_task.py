"""A task: a trained classifier with its data and metric (what a search compresses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas._errors import TaskError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True, eq=False)
class Task:
    """A trained classifier with its data and metric.

    Attributes:
        name: Task name (kebab-case for bundled tasks).
        model: The trained model, in eval mode.
        train: ``(X, y)`` for recovery fine-tuning: X float32 (N, C, H, W), y int64 (N,).
        val: ``(X, y)`` held out, used to report accuracy; same layout.
        example_input: One input of batch size 1, (1, C, H, W), for tracing and export.
        metric: Only "top1" (top-1 accuracy in percent) for now.
        num_classes: Number of classes; 0 infers ``max(label) + 1`` from the data.
        description: One line for ``hwnas tasks``.
    """

    name: str
    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    example_input: torch.Tensor
    metric: str = "top1"
    num_classes: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        import torch
        from torch import nn

        if not isinstance(self.model, nn.Module):
            raise TaskError(
                f"Task {self.name!r}: model must be a torch.nn.Module, got "
                f"{type(self.model).__name__}."
            )
        for part in ("train", "val"):
            value = getattr(self, part)
            if not (isinstance(value, tuple) and len(value) == 2):
                raise TaskError(
                    f"Task {self.name!r}: {part} must be a tuple (X, y) of tensors, got "
                    f"{type(value).__name__}."
                )
            X, y = value
            if not (isinstance(X, torch.Tensor) and X.is_floating_point() and X.ndim >= 2):
                raise TaskError(
                    f"Task {self.name!r}: {part} X must be a float tensor (N, C, H, W), got "
                    f"{type(X).__name__} {getattr(X, 'dtype', '')}."
                )
            if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.ndim == 1):
                raise TaskError(
                    f"Task {self.name!r}: {part} y must be an int64 tensor of shape (N,), got "
                    f"{type(y).__name__} {getattr(y, 'dtype', '')} "
                    f"{tuple(getattr(y, 'shape', ()))}. Convert with y.long()."
                )
            if len(X) != len(y) or len(X) == 0:
                raise TaskError(
                    f"Task {self.name!r}: {part} X and y must have the same non-zero length, "
                    f"got {len(X)} and {len(y)}."
                )
        ex = self.example_input
        if not (isinstance(ex, torch.Tensor) and ex.ndim >= 1 and ex.shape[0] == 1):
            raise TaskError(
                f"Task {self.name!r}: example_input must be a tensor of batch size 1, got "
                f"shape {tuple(getattr(ex, 'shape', ()))}. Use X[:1]."
            )
        if self.metric != "top1":
            raise TaskError(f"Task {self.name!r}: metric must be 'top1', got {self.metric!r}.")
        if self.num_classes == 0:
            inferred = int(max(int(self.train[1].max()), int(self.val[1].max()))) + 1
            object.__setattr__(self, "num_classes", inferred)
        elif self.num_classes < 0:
            raise TaskError(
                f"Task {self.name!r}: num_classes must be > 0 (or 0 to infer), got "
                f"{self.num_classes}."
            )
        self.model.eval()


__all__ = ["Task"]
