"""Training and evaluation of classification models.

* :func:`train` fits a base model from scratch (SGD, one-cycle schedule, random shifts).
* :func:`evaluate` gives top-1 accuracy in percent.
* :func:`recalibrate_bn` re-estimates BatchNorm statistics after pruning.

Distillation and the search's per-trial recovery build on these (:mod:`nas.tasks._recovery`).
Everything is deterministic for a given seed and thread count: batches and shifts come from
a seeded :class:`torch.Generator`, never from the global RNG.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.tasks._batchnorm import reestimate_bn

_logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "evaluate",
    "num_threads",
    "recalibrate_bn",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a from-scratch training run (part of a task's recipe hash).

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per step.
        lr: Peak learning rate of the one-cycle schedule.
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 penalty on conv/linear weights (not on BN or biases).
        max_shift: Random translation of each image by up to this many pixels (0 = off).
        label_smoothing: Cross-entropy label smoothing.
        seed: Seeds initialisation, batch order and augmentation.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_shift: int = 2
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"TrainConfig.epochs and batch_size must be >= 1, got epochs={self.epochs}, "
                f"batch_size={self.batch_size}."
            )
        if self.max_shift < 0:
            raise ValueError(f"TrainConfig.max_shift must be >= 0, got {self.max_shift}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the old count after.

    ``None`` leaves the count alone.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def distilling(student: nn.Module, teacher: nn.Module) -> Iterator[None]:
    """Teacher in eval mode, student in train mode for a distillation block.

    However the block ends, the teacher's mode is restored and the student left in eval mode.
    """
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    try:
        yield
    finally:
        teacher.train(teacher_was_training)
        student.eval()


def optimizer_step(opt: torch.optim.Optimizer, value: torch.Tensor) -> None:
    """One step on the loss ``value``: clear gradients, backpropagate, update."""
    opt.zero_grad(set_to_none=True)
    value.backward()  # type: ignore[no-untyped-call]
    opt.step()


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image in (N, C, H, W) by up to ``max_shift`` pixels, filling the border."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    fill = float(x.amin())
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim > 1 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> nn.Module:
    """Train ``model`` in place on ``(X, y)`` with cross-entropy; return it in eval mode.

    Args:
        model: A freshly initialised classifier.
        X: Images, float32 (N, C, H, W).
        y: Labels, int64 (N,).
        config: Hyperparameters.

    Returns:
        ``model``, trained, in eval mode.
    """
    check_xy(X, y)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = max(1, len(X) // config.batch_size)  # drop the last partial batch
    optimizer = torch.optim.SGD(
        _param_groups(model, config.weight_decay),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=config.epochs * steps_per_epoch,
        pct_start=0.2,
    )
    model.train()
    began = time.perf_counter()
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(X), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            xb = _random_shift(X[idx], config.max_shift, generator)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
        elapsed = time.perf_counter() - began
        _logger.info(  # a first training takes minutes: say how far it is
            "training: epoch %d/%d, loss %.4f (%.1f s; about %.0f s left)",
            epoch + 1,
            config.epochs,
            total_loss / steps_per_epoch,
            time.perf_counter() - start,
            elapsed / (epoch + 1) * (config.epochs - epoch - 1),
        )
    return model.eval()


def check_xy(X: torch.Tensor, y: torch.Tensor | None, *, labels: bool = True) -> None:
    """X a float batch; y, if given, labels (N,) or, without ``labels``, any targets (N, ...)."""
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or not X.is_floating_point():
        raise TypeError(
            f"X must be a floating-point torch.Tensor of shape (N, ...), got "
            f"{type(X).__name__} {getattr(X, 'dtype', '')} {tuple(getattr(X, 'shape', ()))}."
        )
    if y is None:
        return
    ok = isinstance(y, torch.Tensor) and (
        y.shape == (len(X),) or (not labels and len(y) == len(X))
    )
    if not ok:
        raise ValueError(
            f"y must be a torch.Tensor of shape ({len(X)}{',' if labels else ', ...'}) matching "
            "X, got "
            f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))}."
        )


@torch.no_grad()
def predict_logits(model: nn.Module, X: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``model`` (switched to eval mode, then restored) on ``X``, batched."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500
) -> float:
    """Top-1 accuracy of ``model`` on ``(X, y)``, in percent (0..100).

    The model runs in eval mode; its previous mode is restored afterwards.
    """
    check_xy(X, y)
    if len(X) == 0:
        raise ValueError("cannot evaluate on an empty set: X has 0 rows.")
    logits = predict_logits(model, X, batch_size=batch_size)
    return float((logits.argmax(dim=1) == y).float().mean()) * 100.0


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    X: torch.Tensor,
    *,
    num_samples: int = 1024,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance from ``X``; return the model.

    Pruning changes what each BN sees, so the stored statistics go stale. Running stats are
    reset, then ``num_samples`` random images from ``X`` are forwarded in train mode with
    ``momentum=None`` (an exact cumulative average). Weights are not touched; the model is
    returned in eval mode, each BN's momentum restored.
    """
    check_xy(X, None)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X), generator=generator)[: min(num_samples, len(X))]
    return reestimate_bn(
        model, (X[idx[i : i + batch_size]] for i in range(0, len(idx), batch_size))
    )
