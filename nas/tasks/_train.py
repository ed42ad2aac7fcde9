"""Training, evaluation and accuracy recovery for classification models.

* :func:`train` fits a base model from scratch (SGD, one-cycle schedule, random shifts).
* :func:`evaluate` gives top-1 accuracy in percent.
* :func:`recalibrate_bn` re-estimates BatchNorm statistics after pruning.
* :func:`distill` fine-tunes a compressed student against the base model's logits.
* :func:`recover` is what the search runs once per trial: recalibrate, then distill.
* :class:`RecoveryState` lets a recovery stop and continue later as if it never stopped.

Everything is deterministic for a given seed and thread count: batches and shifts come from
a seeded :class:`torch.Generator`, never from the global RNG.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nas.tasks._batchnorm import reestimate_bn

if TYPE_CHECKING:
    from nas.tasks._task import Task

_logger = logging.getLogger(__name__)

__all__ = [
    "RecoveryState",
    "TrainConfig",
    "distill",
    "distillation_loss",
    "evaluate",
    "num_threads",
    "recalibrate_bn",
    "recover",
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
    _check_xy(X, y)
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


def _check_xy(X: torch.Tensor, y: torch.Tensor | None, *, labels: bool = True) -> None:
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
    _check_xy(X, y)
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
    _check_xy(X, None)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X), generator=generator)[: min(num_samples, len(X))]
    return reestimate_bn(
        model, (X[idx[i : i + batch_size]] for i in range(0, len(idx), batch_size))
    )


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
    loss: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None,
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
    _check_xy(X, y, labels=loss is None)
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
    if steps == 0:
        return student.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )
    w = label_weight if y is not None else 0.0
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(X), generator=generator)
    position = 0
    if state is not None and state.steps_done > 0:
        order, position = _resume(state, opt, generator, order)
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    try:
        for _ in range(steps):
            if position + batch_size > len(X):
                order, position = torch.randperm(len(X), generator=generator), 0
            idx = order[position : position + batch_size]
            position += batch_size
            xb = X[idx]
            if teacher_logits is not None:
                t_logits = teacher_logits[idx]
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
            s_logits = student(xb)
            yb = None if y is None else y[idx]
            if loss is not None:
                value = loss(s_logits, t_logits, yb)
            else:
                value = distillation_loss(s_logits, t_logits, yb, temperature=temperature, w=w)
            opt.zero_grad(set_to_none=True)
            value.backward()  # type: ignore[no-untyped-call]
            opt.step()
    finally:
        teacher.train(teacher_was_training)
        student.eval()
    if state is not None:
        state.steps_done += steps
        state.optimizer = opt.state_dict()
        state.generator = generator.get_state()
        state.order, state.position = order, position
    return student


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
