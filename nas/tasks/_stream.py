"""Recovery from a Dataset or DataLoader, streamed batch by batch.

The same two steps as for tensors (:func:`nas.tasks._recovery.recover`): re-estimate the
BatchNorm statistics, then fine-tune the student against the teacher's outputs with the
task's loss. Nothing is gathered into memory: the loader is iterated, and restarted when
it runs out before the last step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.tasks._batchnorm import reestimate_bn
from nas.tasks._loaders import batches, loader_of
from nas.tasks._train import distilling, optimizer_step

if TYPE_CHECKING:
    from nas.tasks._task import Task

__all__ = ["recalibrate_bn_stream", "recover_stream"]


def _cycle(loader: Any) -> Iterator[tuple[torch.Tensor, Any]]:
    """Batches of ``loader``, pass after pass (a fresh iterator, so reshuffled, each pass)."""
    while True:
        empty = True
        for batch in batches(loader):
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yielded no batch.")


def recalibrate_bn_stream(model: nn.Module, loader: Any, *, num_samples: int = 1024) -> nn.Module:
    """Re-estimate every BatchNorm's statistics from the first ``num_samples`` inputs."""
    return reestimate_bn(model, _first_inputs(loader, num_samples))


def _first_inputs(loader: Any, n: int) -> Iterator[torch.Tensor]:
    """The inputs of ``loader``'s batches, cut off after ``n`` samples."""
    seen = 0
    for inputs, _ in batches(loader):
        yield inputs[: n - seen]
        seen += min(len(inputs), n - seen)
        if seen >= n:
            return


def recover_stream(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> nn.Module:
    """Recalibrate BN, then take ``steps`` Adam steps of the task's loss; return ``student``.

    A Dataset is batched ``batch_size`` at a time in a seeded shuffled order; a DataLoader
    is used as given. ``loss(student_out, teacher_out, targets)`` is the task's loss, or
    distillation plus cross-entropy when the task has none.
    """
    loader = loader_of(task.train, batch_size=batch_size, shuffle=True, seed=seed)
    with torch.random.fork_rng(devices=[]):  # a DataLoader's own shuffle, seeded alike
        torch.manual_seed(seed)
        recalibrate_bn_stream(student, loader)
        if steps == 0:
            return student
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        stream = _cycle(loader)
        with distilling(student, teacher):
            for _ in range(steps):
                inputs, targets = next(stream)
                with torch.no_grad():
                    t_out = teacher(inputs)
                optimizer_step(opt, loss(student(inputs), t_out, targets))
    return student
