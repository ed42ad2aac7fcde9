"""A task with its own data pipeline, metric and loss: denoising the bundled 8x8 digits.

A dense-prediction head: a small convolutional network maps a noisy digit to the clean one,
pixel for pixel. Its task gives hwnas

- ``train`` / ``val`` as a ``torch.utils.data.Dataset`` of ``(noisy, clean)`` pairs, made
  item by item (the noise is seeded per item, so the data is the same on every call);
- ``metric=mse``, a callable ``mse(model, loader) -> float`` with ``higher_is_better=False``:
  the search minimises it (it keeps it as ``neg_mse``, higher is better) and reports it;
- ``loss=feature_distillation``: the compressed model is fine-tuned towards the base
  model's outputs and the clean targets (MSE), since cross-entropy means nothing here.

Run the whole loop (search, Pareto front, export), a minute or two on one core:

    python experiments/regression_task.py --trials 8 --run runs/denoise

or name the task on the command line: ``hwnas search experiments/regression_task.py:make_task``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latency_models import home_dir
from nas import Task

NOISE = 0.5
"""Standard deviation of the Gaussian noise added to the standardised images."""


class DenoisingDigits(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(noisy, clean)`` 1x8x8 digits; item ``i``'s noise is seeded by ``i`` and the split."""

    def __init__(self, images: torch.Tensor, *, seed: int) -> None:
        self.images = images
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.images[i]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + i)
        return clean + NOISE * torch.randn(clean.shape, generator=generator), clean


class Denoiser(nn.Module):
    """Three conv+BN+ReLU layers and a 1x1 conv back to one channel, at full resolution."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(3):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU()]  # fmt: skip
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        correction: torch.Tensor = self.head(self.body(x))
        return x + correction  # predict the correction


def mse(model: nn.Module, loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean squared error per pixel of ``model``'s output against the clean images."""
    total, count = 0.0, 0
    for noisy, clean in loader:
        total += float(F.mse_loss(model(noisy), clean, reduction="sum"))
        count += clean.numel()
    return total / count


def feature_distillation(
    student_out: torch.Tensor, teacher_out: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Recovery loss: MSE to the base model's output plus MSE to the clean target."""
    return F.mse_loss(student_out, teacher_out) + F.mse_loss(student_out, clean)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.tensor(load_digits().data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    X = (X - X.mean()) / X.std()
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    return X[order[:1400]], X[order[1400:]]


def _fit(model: nn.Module, data: DenoisingDigits, epochs: int = 5) -> None:
    loader = DataLoader(data, batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for noisy, clean in loader:
            loss = F.mse_loss(model(noisy), clean)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def make_task() -> Task:
    """Build the task: train the denoiser once (seconds), then load the saved weights."""
    train_images, val_images = _images()
    train, val = DenoisingDigits(train_images, seed=1), DenoisingDigits(val_images, seed=2)
    torch.manual_seed(0)
    model = Denoiser()
    weights = home_dir() / "models" / "example-denoise-digits.pt"
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        _fit(model, train)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    return Task(
        name="denoise-digits",
        model=model.eval(),
        train=train,
        val=val,
        example_input=val[0][0][None],
        metric=mse,
        higher_is_better=False,
        loss=feature_distillation,
        description="example dense-prediction task: denoise scikit-learn's 8x8 digits",
    )


def main() -> None:
    import nas
    from nas.tasks._evaluate import task_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/denoise-digits", help="run folder")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--device", default="local-cpu")
    parser.add_argument("--out", default=None, help="export folder (default RUN/export)")
    args = parser.parse_args()
    spec = f"{Path(__file__).resolve()}:make_task"
    task = nas.load_task(spec)
    print(f"{task.name}: base model mse {-task_score(task.model, task):.4f} on validation")
    nas.search(spec, device=args.device, objectives=("accuracy", "latency_ms"),
                     budget={"accuracy_drop": 0.05}, n_trials=args.trials, run_dir=args.run,
                     recovery_steps=30, seed=0)  # fmt: skip
    print(nas.pareto_table(args.run))
    out = Path(args.out or Path(args.run) / "export")
    result = nas.export(args.run, out_dir=out, task=spec, force=True, finetune_steps=50)
    print(result.summary())


if __name__ == "__main__":
    main()
