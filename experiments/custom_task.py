"""A task of your own: a complete, runnable example.

hwnas judges compressed models against a *task*: a trained model plus its data and metric.
A task of your own is any function that takes no arguments and returns a ``nas.Task``;
name it on the command line as ``path/to/file.py:function`` or ``package.module:function``:

    hwnas demo --task experiments/custom_task.py:make_task
    python experiments/custom_task.py            # trains, evaluates, prints a summary

What ``make_task`` must return (``nas.Task``; checked when it is built):

- ``model``: a trained ``torch.nn.Module`` (hwnas switches it to eval mode). For compression
  it must be traceable by ``torch.fx`` (no data-dependent Python control flow).
- ``train``: ``(X, y)`` used to recover accuracy after compression (short distillation from
  your model); ``val``: ``(X, y)`` held out, used to report accuracy. ``X`` float32 of shape
  (N, C, H, W), ``y`` int64 of shape (N,).
- ``example_input``: one input of batch size 1, e.g. ``X[:1]``, used for tracing and export.
- ``metric``: ``"top1"`` (accuracy in percent); ``num_classes`` (0 infers it from labels);
  ``description``: one line. Data may also be a ``Dataset`` or ``DataLoader``, with a metric
  and recovery loss of your own: see ``regression_task.py``.

Here the data is scikit-learn's bundled 8x8 digits and the model a small CNN, trained with a
plain PyTorch loop (a couple of seconds on one core). The trained weights are saved next to
the hwnas cache so that the search's workers, which call ``make_task`` again, load them
instead of retraining. Your own function can load a checkpoint in the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from latency_models import home_dir
from nas import Task


class SmallCNN(nn.Module):
    """Two conv+BN+ReLU stages and a linear classifier, for 1x8x8 images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    X = (X - X.mean()) / X.std()
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return (X[train], y[train]), (X[val], y[val])


def _fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 10) -> None:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=generator).split(64):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def make_task() -> Task:
    """Build the example task: train the CNN once, then load the saved weights."""
    train, val = _data()
    torch.manual_seed(0)
    model = SmallCNN()
    weights = home_dir() / "models" / "example-custom-task.pt"
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        _fit(model, *train)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    return Task(
        name="custom-digits-cnn",
        model=model.eval(),
        train=train,
        val=val,
        example_input=val[0][:1],
        metric="top1",
        num_classes=10,
        description="example user task: small CNN on scikit-learn's 8x8 digits",
    )


if __name__ == "__main__":
    from nas.tasks._train import evaluate

    task = make_task()
    top1 = evaluate(task.model, *task.val)
    print(f"{task.name}: top-1 {top1:.2f}% on {len(task.val[1])} validation images")
