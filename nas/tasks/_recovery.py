"""Accuracy recovery of a compressed model: knowledge distillation from the base model.

* :func:`distillation_loss` is the default per-batch loss.
* :func:`distill` fine-tunes a compressed student against the teacher's logits.
* :func:`recover` is what the search runs once per trial: recalibrate BN, then distill.
* :class:`RecoveryState` lets a recovery stop and continue later as if it never stopped.

Batches come from a seeded :class:`torch.Generator`, never from the global RNG, so a
recovery is deterministic for a given seed and thread count.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nas.tasks._train import (
    check_xy,
    distilling,
    optimizer_step,
    predict_logits,
    recalibrate_bn,
)

if TYPE_CHECKING:
    from nas.tasks._task import Task

__all__ = ["RecoveryState", "distill", "distillation_loss", "recover"]

_Loss = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass
class RecoveryState:
    """Where a distillation stopped: enough to continue it as if it had never stopped.

    :func:`distill` and :func:`recover` fill it in place when given one. A later call with
    the same state (``steps_done > 0``) skips the BN recalibration and resumes the optimizer
    and the batch order, so that 5 steps and then 11 more give the weights of 16 steps at
    once. Successive halving (``nas.searching._halving``) ships it between rungs.

    Attributes:
        steps_done: Optimizer steps taken so far, over every call.
        optimizer: The optimizer's ``state_dict()``.
        generator: The batch generator's state (a uint8 tensor).
        order: The current pass's permutation of the training rows.
        position: Rows of ``order`` already used.
    """

    steps_done: int = 0
    optimizer: dict[str, Any] | None = None
    generator: torch.Tensor | None = None
    order: torch.Tensor | None = None
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``torch.load(..., weights_only=True)`` reads back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecoveryState:
        """The state :meth:`to_dict` wrote."""
        return cls(**data)


def distillation_loss(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    y: torch.Tensor | None,
    *,
    temperature: float = 4.0,
    w: float = 0.5,
) -> torch.Tensor:
    """``(1 - w) * T² * KL(softmax(t/T) || softmax(s/T)) + w * CE(s, y)`` (no CE without y)."""
    kd = F.kl_div(
        F.log_softmax(s_logits / temperature, dim=1),
        F.log_softmax(t_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    value = (1.0 - w) * kd
    if w > 0.0 and y is not None:
        value = value + w * F.cross_entropy(s_logits, y)
    return value


@dataclass
class _BatchOrder:
    """Seeded batch order: rows without replacement within a pass, reshuffled each pass."""

    generator: torch.Generator
    order: torch.Tensor
    position: int = 0

    def take(self, batch_size: int, n: int) -> torch.Tensor:
        """Row indices of the next batch of ``batch_size`` out of ``n`` rows."""
        if self.position + batch_size > n:
            self.order, self.position = torch.randperm(n, generator=self.generator), 0
        idx = self.order[self.position : self.position + batch_size]
        self.position += batch_size
        return idx


def distill(
    student: nn.Module,
    teacher: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    steps: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    temperature: float = 4.0,
    label_weight: float = 0.5,
    optimizer: Literal["adam", "sgd"] = "adam",
    seed: int = 0,
    teacher_logits: torch.Tensor | None = None,
    loss: _Loss | None = None,
    state: RecoveryState | None = None,
) -> nn.Module:
    """Fine-tune ``student`` in place by knowledge distillation from ``teacher``; return it.

    Loss per batch: ``(1 - w) * T² * KL(softmax(t/T) || softmax(s/T)) + w * CE(s, y)`` with
    ``T = temperature`` and ``w = label_weight`` when labels are given, else the KL term
    alone. The student trains in train mode (BN statistics update) and is returned in eval
    mode; the teacher is only run in eval mode and never changed.

    Args:
        student: The compressed model to fine-tune.
        teacher: The base model.
        X: Training images, float32 (N, C, H, W).
        y: Optional labels, int64 (N,).
        steps: Optimizer steps.
        batch_size: Images per step (sampled with a seeded generator, without replacement
            within each pass over X).
        lr: Learning rate.
        temperature: Softening temperature of both logit sets.
        label_weight: Weight of the label cross-entropy, in [0, 1]; ignored without ``y``.
        optimizer: "adam" or "sgd" (momentum 0.9).
        seed: Seeds the batch order.
        teacher_logits: Precomputed ``teacher`` logits on all of ``X`` (N, classes), to skip
            the teacher's forward passes.
        loss: ``loss(student_out, teacher_out, targets)`` instead of the distillation loss
            above (``temperature`` and ``label_weight`` then unused).
        state: Continue from it when it holds steps, and leave the state after these
            ``steps`` in it (see :class:`RecoveryState`).

    Returns:
        ``student``, in eval mode.
    """
    check_xy(X, y, labels=loss is None)
    _check_distill_args(
        X,
        steps=steps,
        batch_size=batch_size,
        temperature=temperature,
        label_weight=label_weight,
        optimizer=optimizer,
        teacher_logits=teacher_logits,
    )
    if steps == 0:
        return student.eval()
    opt = _make_optimizer(student, optimizer, lr)
    w = label_weight if y is not None else 0.0
    batches = _start_order(len(X), seed, state, opt)
    if loss is None:
        loss = functools.partial(distillation_loss, temperature=temperature, w=w)
    _run_steps(
        student,
        teacher,
        opt,
        X,
        y,
        steps=steps,
        batch_size=batch_size,
        batches=batches,
        teacher_logits=teacher_logits,
        loss=loss,
    )
    _keep_state(state, steps, opt, batches)
    return student


def _check_distill_args(
    X: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    temperature: float,
    label_weight: float,
    optimizer: str,
    teacher_logits: torch.Tensor | None,
) -> None:
    """Raise ``ValueError`` for a setting :func:`distill` cannot run with."""
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"label_weight must be in [0, 1], got {label_weight}.")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    if teacher_logits is not None and len(teacher_logits) != len(X):
        raise ValueError(
            f"teacher_logits has {len(teacher_logits)} rows, X has {len(X)}; pass logits "
            "computed on the same X."
        )


def _make_optimizer(student: nn.Module, optimizer: str, lr: float) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9, over the student's trainable parameters."""
    params = [p for p in student.parameters() if p.requires_grad]
    return (
        torch.optim.Adam(params, lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )


def _start_order(
    n: int, seed: int, state: RecoveryState | None, opt: torch.optim.Optimizer
) -> _BatchOrder:
    """A fresh seeded batch order, or the one (and the optimizer) where ``state`` stopped."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    position = 0
    if state is not None and state.steps_done > 0:
        order, position = _resume(state, opt, generator, order)
    return _BatchOrder(generator, order, position)


def _keep_state(
    state: RecoveryState | None, steps: int, opt: torch.optim.Optimizer, batches: _BatchOrder
) -> None:
    """Leave in ``state``, if any, where a distillation of ``steps`` more steps stopped."""
    if state is None:
        return
    state.steps_done += steps
    state.optimizer = opt.state_dict()
    state.generator = batches.generator.get_state()
    state.order, state.position = batches.order, batches.position


def _resume(
    state: RecoveryState, opt: torch.optim.Optimizer, generator: torch.Generator, order: Any
) -> tuple[torch.Tensor, int]:
    """Put a stopped distillation's optimizer and generator back; return its batch position."""
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
    if state.generator is not None:
        generator.set_state(state.generator)
    if state.order is None:
        return order, 0
    return state.order, state.position


def _run_steps(
    student: nn.Module,
    teacher: nn.Module,
    opt: torch.optim.Optimizer,
    X: torch.Tensor,
    y: torch.Tensor | None,
    *,
    steps: int,
    batch_size: int,
    batches: _BatchOrder,
    teacher_logits: torch.Tensor | None,
    loss: _Loss,
) -> None:
    """Take ``steps`` optimizer steps on the student; the teacher's mode is restored after."""
    with distilling(student, teacher):
        for _ in range(steps):
            idx = batches.take(batch_size, len(X))
            xb = X[idx]
            if teacher_logits is not None:
                t_logits = teacher_logits[idx]
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
            s_logits = student(xb)
            optimizer_step(opt, loss(s_logits, t_logits, None if y is None else y[idx]))


# teacher module -> (identity of X it was computed on, logits); dropped with the teacher.
_TEACHER_LOGITS: weakref.WeakKeyDictionary[
    nn.Module, tuple[tuple[int, int, tuple[int, ...]], torch.Tensor]
]
_TEACHER_LOGITS = weakref.WeakKeyDictionary()


def _cached_teacher_logits(teacher: nn.Module, X: torch.Tensor) -> torch.Tensor:
    key = (id(X), X.data_ptr(), tuple(X.shape))
    hit = _TEACHER_LOGITS.get(teacher)
    if hit is not None and hit[0] == key:
        return hit[1]
    logits = predict_logits(teacher, X)
    _TEACHER_LOGITS[teacher] = (key, logits)
    return logits


def recover(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    *,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    state: RecoveryState | None = None,
) -> nn.Module:
    """Recover a compressed model's accuracy: recalibrate BN, then distill from the teacher.

    This is the search's per-trial recovery, with the task's ``loss`` when it has one. For
    ``(X, y)`` tensors the teacher's logits on ``task.train`` are computed once per teacher
    and reused by later calls (the teacher must not change between calls); a Dataset or
    DataLoader is streamed instead (:mod:`nas.tasks._stream`). ``student`` is modified in
    place and returned in eval mode.

    Args:
        student: The compressed model.
        teacher: The base model (usually ``task.model``).
        task: Supplies the training images and labels.
        steps: Distillation steps (0: BN recalibration only).
        seed: Seeds the recalibration sample and the batch order.
        batch_size: Images per distillation step.
        lr: Adam learning rate.
        state: Continue a recovery stopped with this state (no BN recalibration), and
            leave the new state in it. For a Dataset or DataLoader only the weights and the
            step count carry over: BN is re-estimated, the optimizer and the stream restart.
    """
    from nas.tasks._loaders import is_pair

    if not is_pair(task.train):
        from nas.tasks._stream import recover_stream

        loss = task.loss or distillation_loss
        recover_stream(student, teacher, task, loss=loss, steps=steps, seed=seed,
                       batch_size=batch_size, lr=lr)  # fmt: skip
        if state is not None:
            state.steps_done += steps
        return student
    X, y = task.train
    if state is None or state.steps_done == 0:
        recalibrate_bn(student, X, seed=seed)
    if steps == 0:
        return student
    return distill(
        student,
        teacher,
        X,
        y,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        teacher_logits=_cached_teacher_logits(teacher, X),
        loss=task.loss,
        state=state,
    )
